"""Segment one image (3D, or every frame of a 4D cine) into output arrays, slab by slab.

Outputs are array-likes the caller provides (:class:`NiftiSink` gives a memory-mapped
``.nii`` or an in-memory array for ``.nii.gz``), so for an uncompressed input and output a
640^3 volume is read and written without ever being held whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medflow.errors import InvalidDataError
from medflow.io.images import write_nifti
from medflow.io.mapped import release_pages
from medflow.io.volume import Volume, same_space
from medflow.segment.cascade import Cascade
from medflow.segment.context import check_cine, frame_sources
from medflow.segment.cooperative import require_refiner
from medflow.segment.data import (needs_resampling, normalise, resampled_shape, resize,
                                  robust_stats)
from medflow.segment.infer import ArraySource, predict_regions
from medflow.segment.memory import Layout, PredictCost, check_limit, plan_layout
from medflow.segment.uncertainty import labels_from_probs, uncertainty_maps

IDENTITY_STATS = (-np.inf, np.inf, 0.0, 1.0)
#: An axis is the slice (through-plane) axis when its spacing is this much above the others.
SLICE_AXIS_RATIO = 1.5


def slice_axis(spacing) -> int | None:
    """The one voxel axis whose spacing exceeds SLICE_AXIS_RATIO x both others, or None."""
    sp = [float(s) for s in spacing]
    axes = [a for a in range(3) if all(sp[a] > SLICE_AXIS_RATIO * sp[b] for b in range(3)
                                       if b != a)]
    return axes[0] if len(axes) == 1 else None


def model_axis_order(spacing, model_spacing) -> tuple[int, int, int] | None:
    """How to reorder an image's stored axes to the model's axis convention.

    The model card's ``config.spacing`` records the convention the model was trained in:
    its largest spacing marks the slice axis (a short-axis cine: (1.8, 1.8, 10) puts the
    10 mm slices third). An image stored with its slice axis elsewhere (reorientation of
    an oblique stack can put it first or second) is seen through ``np.transpose(data,
    order)``, so in-plane and slice axes are never mixed; the in-plane axes keep their
    stored order.

    Returns:
        ``order`` for ``np.transpose`` (output axis i = stored axis ``order[i]``), or None
        when nothing needs to move (same slice axis, or no clear slice axis).

    Example:
        >>> model_axis_order((1.8, 10.0, 1.8), (1.8, 1.8, 10.0))
        (0, 2, 1)
    """
    have, want = slice_axis(spacing), slice_axis(model_spacing)
    if have is None or want is None or have == want:
        return None
    order = [a for a in range(3) if a != have]
    order.insert(want, have)
    return tuple(order)


def _reordered(vol: Volume, order) -> Volume:
    data = np.transpose(vol.data, (*order, *range(3, vol.data.ndim)))
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, list(order)]
    return Volume(data, affine, vol.kind, dict(vol.meta), vol.frame_interval_s)


def _view(arr, order):
    """``arr`` (X, Y, Z, ...) seen in the model's axis order; writes go through."""
    return None if arr is None else np.transpose(arr, (*order, *range(3, arr.ndim)))


class NiftiSink:
    """An output image filled slab by slab: memory-mapped for ``.nii``, in memory for
    ``.nii.gz`` (written on :meth:`close`). Write it to a path from ``atomic_outputs``."""

    def __init__(self, path: str | os.PathLike, shape, affine, dtype, kind: str = "image"):
        self.path, self.affine, self.kind = Path(path), np.asarray(affine), kind
        dtype = np.dtype(dtype)
        if self.path.name.lower().endswith(".nii"):
            hdr = nib.Nifti1Header()
            hdr.set_data_shape(shape)
            hdr.set_data_dtype(dtype)
            hdr.set_qform(self.affine, code=1)
            hdr.set_sform(self.affine, code=1)
            hdr.set_xyzt_units("mm", "sec")
            hdr["vox_offset"] = 352
            with open(self.path, "wb") as fh:
                fh.write(hdr.binaryblock + b"\0" * 4)
                fh.truncate(352 + int(np.prod(shape)) * dtype.itemsize)
            self.array = np.memmap(self.path, dtype=dtype, mode="r+", offset=352,
                                   shape=tuple(shape), order="F")
        else:
            self.array = np.zeros(shape, dtype)

    def close(self) -> None:
        if isinstance(self.array, np.memmap):
            self.array.flush()
            del self.array
        else:
            write_nifti(Volume(self.array, self.affine, self.kind), self.path)


def check_input(model: Cascade, channels: list[Volume], path=None) -> None:
    """Channel count, dimensionality and a shared grid: what the model can take (else 65)."""
    cfg = model.cfg
    if len(channels) != cfg.in_channels:
        raise InvalidDataError(f"the model takes {cfg.in_channels} image channel(s), "
                               f"got {len(channels)}", path)
    for c in channels:
        if c.data.ndim not in (3, 4):
            raise InvalidDataError(f"{c.data.ndim}D image: 3D or 3D+time only", path)
        if not same_space(c, channels[0]) or c.n_frames != channels[0].n_frames:
            raise InvalidDataError("the input channels do not share one voxel grid", path)
    check_cine(cfg.context_frames, channels[0].n_frames, path)


def plan_prediction(model: Cascade, channels: list[Volume], *, draws: int = 1,
                    outputs_in_memory: int = 0, overlap: float | None = None,
                    max_memory: int | None = None, path=None
                    ) -> tuple[Layout, PredictCost, tuple[int, int, int]]:
    """Layout (overlaps, stage-1 window, tiles) for these channels, the estimated peak, and
    the grid predicted on (the model's spacing); refuses before any work when the estimate
    exceeds ``max_memory`` bytes (:func:`memory.check_limit`: exit 2 or 65).

    Args:
        draws: TTA flips x MC-dropout draws per window.
        outputs_in_memory: bytes of outputs held whole (``.nii.gz`` sinks).
        overlap: explicit window overlap (None: the model's, lowered for large volumes).
    """
    cfg, first = model.cfg, channels[0]
    in_memory = outputs_in_memory + sum(int(c.data.nbytes) for c in channels
                                        if not isinstance(c.data, np.memmap))
    grid, itemsize = first.shape3, first.data.dtype.itemsize
    if needs_resampling(first.spacing, cfg.spacing):
        grid, itemsize = resampled_shape(first.shape3, first.spacing, cfg.spacing), 4
        full, small, c = int(np.prod(first.shape3)), int(np.prod(grid)), cfg.n_classes
        # normalised frame, resized copy, probabilities + disagreement on the model grid,
        # their resize back and the normalised result (see segment())
        in_memory += 4 * (cfg.in_channels * (full + small) + 2 * (c + 1) * small
                          + (2 * c + 2) * full)
    layout, cost = plan_layout(cfg, grid, in_itemsize=itemsize, draws=draws,
                               in_memory=in_memory, overlap=overlap, target=max_memory)
    check_limit(cost, max_memory, path)
    return layout, cost, grid


def label_dtype(labels) -> np.dtype:
    return np.dtype(np.uint8 if 0 <= min(labels) and max(labels) < 256 else np.int16)


def ventricle_labels(cfg, spacing) -> tuple[int, int, int] | None:
    """The label values of LV blood pool, LV myocardium and RV blood pool when the model
    segments short-axis ventricles (label names ``LV``, ``myocardium``, ``RV``) and the
    image's slice axis is its third (coarsest spacing); else None."""
    names = dict(zip(cfg.label_names, cfg.labels))
    if not {"LV", "myocardium", "RV"} <= set(names) or len(spacing) < 3:
        return None
    if not spacing[2] > max(spacing[0], spacing[1]):
        return None
    return names["LV"], names["myocardium"], names["RV"]


def apply_ventricle_anatomy(labels: np.ndarray, values: tuple[int, int, int],
                            background: int = 0, pixel_mm: tuple[float, float] = (1.0, 1.0)):
    """:func:`medflow.cardiac.anatomy.enforce_ventricle_anatomy` on a slab (X, Y, Z) of
    labels with any label values (``values``: LV, myocardium, RV) and in-plane spacing
    ``pixel_mm``; relabelled voxels get ``background``. Returns (labels, relabelled voxel
    counts)."""
    from medflow.cardiac.anatomy import enforce_ventricle_anatomy

    ukbb = np.zeros_like(labels, dtype=np.uint8)
    for value, code in zip(values, (1, 2, 3)):
        ukbb[labels == value] = code
    fixed, removed = enforce_ventricle_anatomy(ukbb, slice_axis=2, pixel_mm=pixel_mm)
    out = labels.copy()
    out[(ukbb > 0) & (fixed == 0)] = background
    return out, removed


def segment(model: Cascade, channels: list[Volume], label_out, prob_out=None, unc_out=None,
            tta: int = 1, mc: int = 1, uncertainty: str = "entropy", device: str = "cpu",
            seed: int = 0, progress=None, layout: Layout | None = None,
            ventricle_anatomy: bool = True, calibrator=None, refine: bool = False) -> dict:
    """Segment every frame of ``channels`` into the output arrays.

    Args:
        channels: the image channels (same grid), 3D or 4D (time last).
        label_out: (X, Y, Z[, T]) integer array-like receiving label values.
        prob_out: optional (X, Y, Z[, T], C) float32 array-like (class probabilities).
        unc_out: optional {name: (X, Y, Z[, T]) array-like} ("" or the region names).
        tta / mc: test-time flips / MC-dropout draws per window.
        uncertainty: ``entropy`` or ``disagreement`` (needs tta or mc > 1).
        seed: seeds the MC-dropout draws (same seed, same bytes).
        layout: from :func:`plan_prediction` (default: planned here, no memory limit).
        ventricle_anatomy: for a short-axis cardiac model (:func:`ventricle_labels`), relabel
            blood pool outside the ventricles as background in the label map (LV not ringed
            by myocardium: the atrium at the base at end systole; :mod:`medflow.cardiac.
            anatomy`). Probabilities and uncertainty stay the network's.
        calibrator: a :class:`calibration.Calibrator` applied to the stage-2 logits of
            every window (probabilities, uncertainty and labels then follow it).
        refine: every window's probabilities (each TTA/MC draw) go through the model's
            shape-correcting refiner (:mod:`segment.cooperative`) before averaging, so
            labels, probabilities and both uncertainty kinds are the refined ones.

    Returns:
        facts for the sidecar (frames, resampled or not, windows and tiles, threads).
    """
    cfg = model.cfg
    check_input(model, channels)
    if refine:
        require_refiner(model)
    order = model_axis_order(channels[0].spacing, cfg.spacing)
    if order is not None:  # the network sees the model's axis convention; outputs go back
        channels = [_reordered(c, order) for c in channels]
        label_out, prob_out = _view(label_out, order), _view(prob_out, order)
        unc_out = {k: _view(a, order) for k, a in (unc_out or {}).items()}
    model.eval()
    if mc > 1:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout3d):
                m.train()
    torch.manual_seed(seed)
    first = channels[0]
    stats = [robust_stats(c.data) for c in channels]
    resample = needs_resampling(first.spacing, cfg.spacing)
    n_samples = max(1, tta) * max(1, mc)
    if layout is None:
        layout = plan_prediction(model, channels, draws=n_samples)[0]
    for c in channels:
        release_pages(c.data)   # robust_stats read a strided sample of every plane
    counts = {"windows": 0, "stage1_windows": 0}
    rule = ventricle_labels(cfg, first.spacing) if ventricle_anatomy else None
    removed = {"lv_voxels": 0, "myo_voxels": 0, "rv_voxels": 0}

    def frame(c: Volume, t: int):
        return c.data if c.data.ndim == 3 else c.data[..., t]

    for t in range(first.n_frames):
        tix = () if first.data.ndim == 3 else (t,)
        # the frame's channels, then those of its context frames (model.json context_frames)
        ks = frame_sources(cfg.context_frames, t, first.n_frames)

        def write(box, probs, dis, tix=tix):
            box = (*box, *tix)
            label_out[box] = labels_from_probs(probs, cfg.labels).numpy()
            if prob_out is not None:
                prob_out[box] = probs.permute(1, 2, 3, 0).numpy()
            if unc_out:
                maps = uncertainty_maps(probs, dis, uncertainty, cfg.labels, cfg.regions,
                                        n_samples)
                for name, arr in unc_out.items():
                    arr[box] = np.rint(maps[name].numpy()).astype(arr.dtype)
            for arr in (label_out, prob_out, *(unc_out or {}).values()):
                if arr is not None:
                    release_pages(arr)   # written slabs go to the file, not stay resident

        def run(src, on_box):
            facts = predict_regions(model, src, on_box, layout, tta, mc, device, progress,
                                    calibrator=calibrator, refine=refine)
            for k in counts:
                counts[k] += facts[k]
            return facts

        if not resample:
            facts = run(ArraySource([frame(c, k) for k in ks for c in channels],
                                    stats * len(ks)), write)
        else:
            # Off-spacing input: predict on the model's grid in memory, interpolate back.
            image = torch.from_numpy(np.stack([normalise(frame(c, k), s) for k in ks
                                               for c, s in zip(channels, stats)]))[None]
            size = resampled_shape(first.shape3, first.spacing, cfg.spacing)
            small = resize(image, size)[0]
            probs = torch.zeros(cfg.n_classes, *size)
            dis = torch.zeros(size)

            def keep(box, p, d):
                probs[(slice(None), *box)] = p
                if d is not None:
                    dis[box] = d

            facts = run(ArraySource(list(small.numpy()), [IDENTITY_STATS] * small.shape[0]),
                        keep)
            back = resize(torch.cat([probs, dis[None]])[None], first.shape3)[0]
            write((slice(None),) * 3, back[:-1] / back[:-1].sum(0, keepdim=True), back[-1])
        if rule is not None:  # after the frame: the rule needs whole slices, not tiles
            box = (slice(None),) * 3 + tix
            labels, found = apply_ventricle_anatomy(np.asarray(label_out[box]), rule,
                                                    cfg.labels[0], tuple(first.spacing[:2]))
            label_out[box] = labels
            for k, n in found.items():
                removed[k] += n
    return {"frames": first.n_frames, "resampled_to_model_spacing": bool(resample),
            "axes_reordered_for_model": list(order) if order is not None else None,
            "model_spacing_mm": list(cfg.spacing), "tta": tta, "mc_samples": mc,
            "uncertainty": uncertainty, **counts, "tiles": facts["tiles"],
            "overlap": facts["overlap"], "stage1_overlap": facts["stage1_overlap"],
            "stage1_window": facts["stage1_window"], "threads": torch.get_num_threads(),
            "ventricle_anatomy": {"applied": rule is not None, "relabelled_background": removed},
            "refined": bool(refine),
            "calibration": None if calibrator is None else {
                "method": calibrator.method, "temperature": calibrator.temperature}}
