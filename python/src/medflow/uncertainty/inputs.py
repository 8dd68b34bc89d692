"""Reading and checking one case's files for score-uncertainty (the I/O shell of the method).

Every check names the file(s) at fault and maps onto the exit-code contract: 65 for
disagreeing grids, uncertainty outside [0, 100], unknown labels, an empty mask or bad
probabilities; 66 for a missing file (raised by :func:`medflow.io.read_image`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError, first_of
from medflow.io.images import read_image
from medflow.io.volume import Volume, same_space
from medflow.uncertainty.regions import (Region, channel_names, region_probabilities,
                                         unknown_labels)

Rescale = None | str | tuple[float, float]
#: How far a voxel's class probabilities may sum from 1 (float32 softmax, averaged over TTA
#: draws, written as float32: about 1e-6; a map stored with 8-bit steps: up to ~0.01).
CLASS_SUM_TOLERANCE = 0.02


@dataclass
class CaseFiles:
    """The files of one case. ``uncertainty`` maps region names to files, or holds one 4D
    file under the key ``"*"`` (a channel per region, in region order)."""

    subject: str
    truth: Path
    prediction: Path
    mask: Path
    uncertainty: dict[str, Path] = field(default_factory=dict)
    probabilities: Path | None = None

    def inputs(self) -> dict[str, Path | None]:
        """Role -> path, for sidecars."""
        return {"truth": self.truth, "prediction": self.prediction, "mask": self.mask,
                **{f"uncertainty_{k}": v for k, v in self.uncertainty.items()},
                "probabilities": self.probabilities}


@dataclass
class CaseArrays:
    """Checked arrays of one case: labels, boolean mask, uncertainty per region, probs."""

    truth: np.ndarray
    pred: np.ndarray
    mask: np.ndarray
    uncertainty: dict[str, np.ndarray]
    prob: np.ndarray | None = None


def parse_rescale(text: str | None) -> Rescale:
    """``None`` (no rescaling), ``"auto"`` or ``"LO,HI"`` -> None, "auto" or (lo, hi)."""
    if text is None or text == "auto":
        return text
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected 'auto' or 'LO,HI', got {text!r}") from None
    if not hi > lo:
        raise ValueError(f"expected LO < HI, got {text!r}")
    return lo, hi


def check_uncertainty(u: np.ndarray, rescale: Rescale, path: Path) -> np.ndarray:
    """Return ``u`` within [0, 100], rescaled if asked; InvalidDataError otherwise.

    Note:
        ``rescale="auto"``: a map inside [0, 1] is multiplied by 100, a map inside [0, 100]
        is kept, any other map is stretched from its own [min, max] to [0, 100] (a constant
        one becomes 0). ``(lo, hi)`` maps [lo, hi] linearly onto [0, 100].
    """
    lo, hi = float(u.min()), float(u.max())
    if rescale is None:
        if lo < 0 or hi > 100:
            raise InvalidDataError(f"uncertainty values span [{lo:g}, {hi:g}], outside "
                                   "[0, 100] (use --rescale for maps on another scale)", path)
        return u
    if rescale == "auto":
        if 0 <= lo and hi <= 100 and hi > 1:
            return u
        src = (0.0, 1.0) if 0 <= lo and hi <= 1 else (lo, hi)
    else:
        src = rescale
        if lo < src[0] or hi > src[1]:
            raise InvalidDataError(f"uncertainty values span [{lo:g}, {hi:g}], outside "
                                   f"--rescale {src[0]:g},{src[1]:g}", path)
    if src[1] == src[0]:
        return np.zeros(u.shape)
    return np.clip((u.astype(np.float64) - src[0]) * (100.0 / (src[1] - src[0])), 0, 100)


def _read_same_grid(path: Path, kind: str, ref: Volume | None, ref_path: Path | None,
                    channels: bool = False) -> Volume:
    vol = read_image(path, kind, channels=channels)
    if ref is not None and not same_space(ref, vol):
        raise InvalidDataError(
            f"grid differs from {ref_path} (shape {list(vol.shape3)} vs {list(ref.shape3)}, "
            f"spacing {np.round(vol.spacing, 4).tolist()} vs "
            f"{np.round(ref.spacing, 4).tolist()}, or origin/direction)", path)
    return vol


def _labels(vol: Volume, path: Path, regions: tuple[Region, ...],
            shape: tuple[int, ...] | None = None) -> np.ndarray:
    # A 4D label map is a cine (X, Y, Z, T): every frame is scored, frames pooled.
    if vol.data.ndim not in (3, 4) or (shape is not None and vol.data.shape != shape):
        want = "a 3D label map or a 4D cine" if shape is None else f"shape {list(shape)}"
        raise InvalidDataError(f"expected {want}, got shape {list(vol.data.shape)}", path)
    data = np.asarray(vol.data)
    if data.dtype.kind == "f":
        data = data.astype(np.int32)  # read_image checked the values are whole numbers
    bad = unknown_labels(data, regions)
    if bad:
        known = sorted({0} | {lab for r in regions for lab in r.labels})
        raise InvalidDataError(f"label values {bad} are not in the region definition "
                               f"(known: {known}; BraTS 2023 uses --et-label 3)", path)
    return data


def read_truth_and_mask(files: CaseFiles, regions: tuple[Region, ...]
                        ) -> tuple[Volume, np.ndarray, np.ndarray]:
    """(truth volume, checked truth labels, boolean mask = mask file > 0)."""
    ref = _read_same_grid(files.truth, "label", None, None)
    truth = _labels(ref, files.truth, regions)
    mvol = _read_same_grid(files.mask, "image", ref, files.truth)
    mdata = np.asarray(mvol.data)
    if mdata.ndim == 4 and mdata.shape != truth.shape:
        mdata = mdata[..., 0]  # a 4D image as mask: its first frame
    mask = mdata > 0
    if mask.shape != truth.shape:  # a 3D mask applies to every frame of a cine
        mask = np.broadcast_to(mask[..., None], truth.shape)
    if not mask.any():
        raise InvalidDataError("the brain mask is empty (no voxel > 0)", files.mask)
    return ref, truth, mask


def load_case(files: CaseFiles, regions: tuple[Region, ...], rescale: Rescale = None,
              prob_channels: str = "regions") -> CaseArrays:
    """Read one case and check everything before any scoring.

    Args:
        files: the case's paths.
        regions: the regions to score (their names key ``files.uncertainty``).
        rescale: see :func:`check_uncertainty`.
        prob_channels: what the probability map's channels are (:func:`load_probabilities`).

    Returns:
        :class:`CaseArrays` with the brain mask as ``mask_file > 0`` and the probabilities
        per region (``(*truth.shape, R)``), also for a cine.
    """
    ref, truth, mask = read_truth_and_mask(files, regions)
    pred = _labels(_read_same_grid(files.prediction, "label", ref, files.truth),
                   files.prediction, regions, truth.shape)
    unc: dict[str, np.ndarray] = {}
    if "*" in files.uncertainty:
        path = files.uncertainty["*"]
        if truth.ndim != 3:
            raise InvalidDataError("a cine needs one uncertainty map per region "
                                   "(REGION=FILE), not one 4D file", path)
        data = np.asarray(_read_same_grid(path, "image", ref, files.truth).data)
        if data.ndim != 4 or data.shape[3] != len(regions):
            raise InvalidDataError(f"expected 4D with {len(regions)} channels "
                                   f"({', '.join(r.name for r in regions)}), got shape "
                                   f"{list(data.shape)}", path)
        for i, r in enumerate(regions):
            unc[r.name] = check_uncertainty(data[..., i], rescale, path)
    else:
        for r in regions:
            path = files.uncertainty[r.name]
            data = np.asarray(_read_same_grid(path, "image", ref, files.truth).data)
            if data.shape != truth.shape:
                raise InvalidDataError(f"expected an uncertainty map of shape "
                                       f"{list(truth.shape)}, got {list(data.shape)}", path)
            unc[r.name] = check_uncertainty(data, rescale, path)
    prob = None
    if files.probabilities is not None:
        prob = load_probabilities(files.probabilities, regions, ref, files.truth,
                                  truth.shape, prob_channels)
    return CaseArrays(truth, pred, mask, unc, prob)


def load_probabilities(path: Path, regions: tuple[Region, ...], ref: Volume | None = None,
                       ref_path: Path | None = None, shape: tuple[int, ...] | None = None,
                       channels: str = "regions") -> np.ndarray:
    """Per-region probabilities ``(*shape, R)`` in [0, 1] from a probability map.

    Args:
        path: the map: the truth's shape (``(X, Y, Z)``, or ``(X, Y, Z, T)`` for a cine)
            plus a last axis of ``channels`` (:data:`regions.PROB_CHANNELS`): one channel
            per region, or one per class as ``segment-cascaded predict --probabilities``
            writes (:func:`regions.region_probabilities` sums a region's classes).
        regions: the regions (output channel order).
        ref, ref_path: the truth volume and file: the map must share its grid.
        shape: the truth's shape [default: any 3D grid].
        channels: ``"regions"`` or ``"classes"``.

    Raises:
        InvalidDataError (65) naming the file: another shape or channel count, values
        outside [0, 1], or class channels that do not sum to 1; MissingInputError (66)
        when it does not exist.
    """
    vol = _read_same_grid(path, "image", ref, ref_path, channels=True)
    names = channel_names(regions, channels)
    want = [*(shape or vol.shape3), len(names)]
    data = np.asarray(vol.data)
    if list(data.shape) != want:
        raise InvalidDataError(f"expected {len(want)}D probabilities of shape {want} (a "
                               f"channel per {'class' if channels == 'classes' else 'region'}: "
                               f"{', '.join(names)}), got "
                               f"shape {list(data.shape)}", path)
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 1:
        raise InvalidDataError(f"probabilities span [{lo:g}, {hi:g}], outside [0, 1]", path)
    if channels == "classes":   # one distribution per voxel: a region's sum must stay <= 1
        off = float(np.abs(data.sum(axis=-1, dtype=np.float64) - 1.0).max())
        if off > CLASS_SUM_TOLERANCE:
            raise InvalidDataError(f"class probabilities do not sum to 1 over the channels "
                                   f"(off by up to {off:.3g})", path)
    return region_probabilities(data, regions, channels)


def cases_from_samplesheet(sheet: pd.DataFrame, regions: tuple[Region, ...],
                           with_probabilities: bool = True, calibration_only: bool = False
                           ) -> list[CaseFiles]:
    """CaseFiles for every row: columns seg, pred, mask (or t1), unc_<region> or unc, prob.

    Args:
        sheet: from :func:`medflow.io.samplesheet.load_samplesheet` (absolute paths).
        regions: the regions (``unc_<region>`` column names use their lower-case names).
        with_probabilities: read the ``prob`` column when present.
        calibration_only: only seg, mask (or t1) and prob are needed (temperature fitting).

    Note:
        Without a ``mask`` column the brain mask is ``t1 > 0`` (skull-stripped BraTS data);
        missing columns raise InvalidDataError naming them.
    """
    path = sheet.attrs.get("path")
    cols = set(sheet.columns)
    per_region = {r.name: f"unc_{r.key}" for r in regions}
    needed = ["seg"] + ([] if "mask" in cols else ["t1"])
    if calibration_only:
        needed += ["prob"]
    else:
        needed += ["pred"] + ([] if "unc" in cols else list(per_region.values()))
    missing = [c for c in needed if c not in cols]
    if missing:
        raise InvalidDataError(f"missing column(s) {missing} (needed: seg, pred, mask, "
                               f"unc or {', '.join(per_region.values())}; prob optional)", path)
    if not calibration_only and "unc" in cols:
        needed.append("unc")
    empty = [f"{row['subject']}: {c}" for row in sheet.to_dict("records") for c in needed
             if not row.get(c)]
    if empty:
        raise InvalidDataError(f"{len(empty)} empty cell(s): {first_of(empty)}", path)
    cases = []
    for row in sheet.to_dict("records"):
        if calibration_only:
            unc = {}
        elif row.get("unc"):
            unc = {"*": Path(row["unc"])}
        else:
            unc = {name: Path(row[col]) for name, col in per_region.items()}
        prob = row.get("prob") if with_probabilities else None
        cases.append(CaseFiles(row["subject"], Path(row["seg"]), Path(row.get("pred") or "-"),
                               Path(row.get("mask") or row["t1"]), unc,
                               Path(prob) if prob else None))
    return cases
