"""The preprocessing steps in their fixed order: reorient, resample, crop, normalise.

:func:`preprocess` works on Volumes only (no files); every step it runs is recorded with
its parameters and the geometry before and after, for the sidecar.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from medflow.errors import MAX_BYTES_ANY_MACHINE, size_text
from medflow.io.volume import Volume
from medflow.preprocess.crop import crop_or_pad, crop_to_mask
from medflow.preprocess.intensity import METHODS, normalise
from medflow.preprocess.orient import (axis_permutation, orientation_of, parse_orientation,
                                      reorient, to_reoriented_axes)
from medflow.preprocess.resample import grids_overlap, output_grid, resample_to_grid


class PreprocessError(ValueError):
    """A step cannot run on these inputs; ``source`` names the input at fault
    (``"input"``, ``"reference"`` or ``"crop_mask"``) so the caller can name its file."""

    def __init__(self, message: str, source: str = "input") -> None:
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class PreprocessConfig:
    """Every preprocessing parameter, checked when the config is made.

    Args:
        orientation: target axis code (``RAS``, ``LPS`` ...); ignored with a reference grid.
        spacing: new spacing (mm) per voxel axis of the *input as stored* (so ``1.25, 1.25,
            None`` keeps the slice thickness of a short-axis stack whatever the reorientation
            does with its axes); ``None`` entries keep an axis; ``None`` keeps all.
            Exclusive with a reference grid.
        interpolation: ``linear`` or ``bspline`` for images (labels: nearest).
        crop_to: output size in voxels around the centre, per voxel axis of the input as
            stored (``None`` entries keep an axis).
        margin_mm: margin around a crop mask's bounding box, in mm.
        normalise: ``zscore``, ``percentile`` or ``none`` (images only).
        percentiles: ``(low, high)`` for ``percentile``.
    """

    orientation: str = "RAS"
    spacing: tuple[float | None, float | None, float | None] | None = None
    interpolation: str = "linear"
    crop_to: tuple[int | None, int | None, int | None] | None = None
    margin_mm: float = 0.0
    normalise: str = "none"
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "orientation", parse_orientation(self.orientation))
        if self.spacing is not None:
            if len(self.spacing) != 3 or any(s is not None and not s > 0 for s in self.spacing):
                raise ValueError(f"spacing must be 3 positive values or None, got {self.spacing}")
            if all(s is None for s in self.spacing):
                object.__setattr__(self, "spacing", None)
        if self.interpolation not in ("linear", "bspline"):
            raise ValueError(f"interpolation must be linear or bspline, got {self.interpolation!r}")
        if self.crop_to is not None and (len(self.crop_to) != 3 or any(
                c is not None and (int(c) != c or c < 1) for c in self.crop_to)):
            raise ValueError(f"crop size must be 3 whole numbers >= 1, got {self.crop_to}")
        if not self.margin_mm >= 0:
            raise ValueError(f"margin must be >= 0 mm, got {self.margin_mm}")
        if self.normalise not in METHODS:
            raise ValueError(f"normalise must be one of {METHODS}, got {self.normalise!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")

    def as_dict(self) -> dict:
        return asdict(self)


def _check_size(shape3, vol: Volume, option: str) -> None:
    """A grid no machine can hold is bad input (65), not an out-of-memory retry (75)."""
    voxels = int(np.prod([int(n) for n in shape3], dtype=object)) * vol.n_frames
    nbytes = voxels * max(4, vol.data.dtype.itemsize)
    if nbytes > MAX_BYTES_ANY_MACHINE:
        raise PreprocessError(f"the output grid {list(shape3)} x {vol.n_frames} frame(s) "
                              f"would take {size_text(nbytes)}, more than any machine holds; "
                              f"check {option}")


def _geometry(vol: Volume) -> dict:
    return {**vol.geometry(), "orientation": orientation_of(vol.affine),
            "dtype": str(vol.data.dtype)}


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def __call__(self, name: str, before: Volume, after: Volume, t0: float, **params) -> Volume:
        self.steps.append({"step": name, "parameters": params, "input": _geometry(before),
                           "output": _geometry(after),
                           "seconds": round(time.perf_counter() - t0, 4)})
        return after

    def skip(self, name: str, reason: str) -> None:
        self.steps.append({"step": name, "skipped": reason})


def preprocess(vol: Volume, config: PreprocessConfig,
               reference: tuple[Sequence[int], np.ndarray] | None = None,
               mask: Volume | None = None) -> tuple[Volume, list[dict]]:
    """Run the steps in order: reorient, resample, crop, normalise.

    Args:
        vol: 3D or 4D image or label map (``vol.kind`` decides interpolation and whether
            normalisation is allowed).
        config: the parameters.
        reference: ``(shape3, affine)`` of a grid to resample onto instead of a spacing
            (maps results back to another image's native space).
        mask: a 3D volume whose ``> 0`` bounding box (grown by ``config.margin_mm``) is the
            crop; resampled by nearest onto the current grid when it is not on it.

    Returns:
        ``(volume, steps)``: the result (its data may be a view of ``vol.data`` when no step
        needed a copy) and one record per step with parameters and input/output geometry.

    Note:
        Raises :class:`PreprocessError` (a ValueError) naming which input is at fault.

    Example:
        >>> v = Volume(np.ones((8, 8, 4), np.float32), np.diag([-2.0, 2.0, 5.0, 1.0]))
        >>> out, steps = preprocess(v, PreprocessConfig(spacing=(1.0, 1.0, None)))
        >>> out.shape3, [s["step"] for s in steps]
        ((16, 16, 4), ['reorient', 'resample', 'crop', 'normalise'])
    """
    if reference is not None and config.spacing is not None:
        raise PreprocessError("give a spacing or a reference grid, not both")
    if mask is not None and config.crop_to is not None:
        raise PreprocessError("give a crop size or a crop mask, not both")
    if vol.kind == "label" and config.normalise != "none":
        raise PreprocessError("label maps are never normalised")
    record = _Recorder()
    original = vol.data

    t0 = time.perf_counter()
    spacing, crop_to = config.spacing, config.crop_to
    if reference is None:
        # per-axis parameters are given along the stored axes: follow them through
        perm = axis_permutation(vol.affine, config.orientation)
        spacing = spacing and to_reoriented_axes(spacing, perm)
        crop_to = crop_to and to_reoriented_axes(crop_to, perm)
        vol = record("reorient", vol, reorient(vol, config.orientation), t0,
                     orientation=config.orientation, axis_permutation=list(perm))
    else:
        record.skip("reorient", "the output takes the reference grid")

    t0 = time.perf_counter()
    method = "nearest" if vol.kind == "label" else config.interpolation
    if reference is not None:
        shape3, affine = tuple(int(s) for s in reference[0]), np.asarray(reference[1], float)
        if not grids_overlap(vol.shape3, vol.affine, shape3, affine):
            raise PreprocessError("the reference grid does not overlap the input image "
                                  "anywhere in world space", "reference")
        vol = record("resample", vol, resample_to_grid(vol, shape3, affine, method), t0,
                     target="reference grid", interpolation=method)
    elif spacing is not None:
        shape3, affine = output_grid(vol.shape3, vol.affine, spacing)
        _check_size(shape3, vol, "--spacing")
        vol = record("resample", vol, resample_to_grid(vol, shape3, affine, method), t0,
                     spacing_mm=list(spacing), interpolation=method,
                     convention="field of view kept: n' = round(n s / s'), outer corner fixed")
    else:
        record.skip("resample", "no spacing or reference given")

    t0 = time.perf_counter()
    if mask is not None:
        try:
            cropped = crop_to_mask(vol, mask, config.margin_mm)
        except ValueError as exc:
            raise PreprocessError(str(exc), "crop_mask") from None
        vol = record("crop", vol, cropped, t0, mask=True, margin_mm=config.margin_mm)
    elif crop_to is not None:
        size = [None if c is None else int(c) for c in crop_to]
        _check_size([n if c is None else c for n, c in zip(vol.shape3, size)], vol, "--crop-to")
        vol = record("crop", vol, crop_or_pad(vol, size), t0, size=size, fill=0)
    else:
        record.skip("crop", "no crop size or mask given")

    t0 = time.perf_counter()
    if config.normalise != "none":
        inplace = not np.may_share_memory(vol.data, original)
        normalised, stats = normalise(vol, config.normalise, config.percentiles, inplace=inplace)
        params = {"method": config.normalise, **stats}
        if config.normalise == "percentile":
            params["percentiles"] = list(config.percentiles)
        vol = record("normalise", vol, normalised, t0, **params)
    else:
        record.skip("normalise", "labels are never normalised" if vol.kind == "label"
                    else "normalise none")
    return vol, record.steps
