"""Ventricular volumes and function, the UK Biobank way (ukbb_cardiac
``short_axis/eval_ventricular_volume.py``; conventions in ``shared/CARDIAC.md``).

One definition serves the pipeline's tables (voxel counting on the short-axis
segmentation), the motion tool (closed-surface volumes of its meshes) and the phantom's
truth: :func:`ventricular_phenotypes` takes per-frame volume curves, however measured.

Conventions:
    - ED: frame 0 (``ed_rule="first"``, UK Biobank cines are triggered at the R wave) or
      the frame of maximum LV volume (``ed_rule="max"``); ES: the frame of minimum LV
      blood-pool volume. The table records which rule it used (``ed_rule``).
    - LVSV = LVEDV - LVESV; LVEF = 100 LVSV / LVEDV; LVCO (L/min) = LVSV x HR / 1000 with
      HR = 60 / (frames x frame interval in s); LVM = LV myocardial volume at ED x 1.05 g/mL.
    - RV: the same with label 3 at the LV's ED and ES frames (one cardiac phase for both
      ventricles, as ukbb_cardiac), no mass.
    - Voxel volume from the image spacing; the slice spacing includes any gap.
"""

from __future__ import annotations

import math

import numpy as np

from medflow.cardiac.labels import LV_BLOOD, LV_MYO, MYOCARDIUM_DENSITY_G_PER_ML, RV_BLOOD

ED_RULES = ("first", "max")


def label_volume_curves(labels: np.ndarray, spacing_mm, values=(LV_BLOOD, LV_MYO, RV_BLOOD)
                        ) -> dict[int, np.ndarray]:
    """Volume of each label in each frame by voxel counting.

    Args:
        labels: (X, Y, Z) or (X, Y, Z, T) integer label map.
        spacing_mm: voxel spacing of the three spatial axes, mm (slice spacing, gap
            included, for a short-axis stack).
        values: the label values to count.

    Returns:
        label value -> (T,) float array of volumes in mL (T = 1 for a 3D map).

    Example:
        >>> lab = np.zeros((4, 4, 2, 1), np.uint8); lab[:2, :2, 0, 0] = 1
        >>> float(label_volume_curves(lab, (2.0, 2.0, 10.0))[1][0])
        0.16
    """
    data = np.asarray(labels)
    frames = data[..., None] if data.ndim == 3 else data
    if frames.ndim != 4:
        raise ValueError(f"expected a 3D or 4D label map, got {data.ndim} dimensions")
    ml_per_voxel = float(np.prod([float(s) for s in spacing_mm[:3]])) / 1000.0
    flat = frames.reshape(-1, frames.shape[3])
    return {int(v): (flat == v).sum(axis=0).astype(np.float64) * ml_per_voxel for v in values}


def ventricular_phenotypes(lv_ml, myo_ml=None, rv_ml=None, frame_interval_s: float | None
                           = None, ed_rule: str = "first") -> dict:
    """LV and RV volumes and function from per-frame volume curves.

    Args:
        lv_ml: (T,) LV blood-pool volume per frame, mL (T >= 2).
        myo_ml: (T,) LV myocardial volume per frame, mL, or None (no mass).
        rv_ml: (T,) RV blood-pool volume per frame, mL, or None (no RV columns).
        frame_interval_s: time between frames, s (UK Biobank: the TriggerTime step,
            pixdim[4]); None leaves the heart rate and cardiac output out.
        ed_rule: ``"first"`` (ED = frame 0) or ``"max"`` (ED = largest LV volume).

    Returns:
        dict with ``ed_frame``, ``es_frame``, ``ed_rule``, ``lvedv_ml``, ``lvesv_ml``,
        ``lvsv_ml``, ``lvef_pct`` and, when their inputs are given, ``lvm_g``,
        ``hr_bpm``, ``lvco_l_min``, ``rvedv_ml``, ``rvesv_ml``, ``rvsv_ml``, ``rvef_pct``.
        An EF whose ED volume is 0 is NaN.

    Raises:
        ValueError: fewer than 2 frames, curves of different lengths, an unknown rule,
            or a non-positive frame interval.
    """
    lv = np.asarray(lv_ml, dtype=np.float64)
    if lv.ndim != 1 or lv.size < 2:
        raise ValueError(f"need a volume curve of at least 2 frames, got shape {lv.shape}")
    if ed_rule not in ED_RULES:
        raise ValueError(f"ed_rule must be one of {ED_RULES}, got {ed_rule!r}")
    curves = {"myo": myo_ml, "rv": rv_ml}
    for name, curve in curves.items():
        if curve is not None and np.asarray(curve).shape != lv.shape:
            raise ValueError(f"the {name} curve has {np.asarray(curve).shape} frames, "
                             f"the LV curve {lv.shape}")
    ed = 0 if ed_rule == "first" else int(np.argmax(lv))
    es = int(np.argmin(lv))
    out: dict = {"ed_frame": ed, "es_frame": es, "ed_rule": ed_rule}
    out.update(_function("lv", lv[ed], lv[es]))
    if myo_ml is not None:
        out["lvm_g"] = float(np.asarray(myo_ml, dtype=np.float64)[ed]) * MYOCARDIUM_DENSITY_G_PER_ML
    if frame_interval_s is not None:
        if not frame_interval_s > 0:
            raise ValueError(f"frame interval must be positive, got {frame_interval_s}")
        hr = 60.0 / (lv.size * float(frame_interval_s))
        out["hr_bpm"] = hr
        out["lvco_l_min"] = out["lvsv_ml"] * hr / 1000.0
    if rv_ml is not None:
        rv = np.asarray(rv_ml, dtype=np.float64)
        out.update(_function("rv", rv[ed], rv[es]))
    return out


def _function(prefix: str, edv: float, esv: float) -> dict:
    edv, esv = float(edv), float(esv)
    return {f"{prefix}edv_ml": edv, f"{prefix}esv_ml": esv, f"{prefix}sv_ml": edv - esv,
            f"{prefix}ef_pct": 100.0 * (edv - esv) / edv if edv > 0 else math.nan}


def voxel_phenotypes(labels: np.ndarray, spacing_mm, frame_interval_s: float | None = None,
                     ed_rule: str = "first") -> dict:
    """:func:`ventricular_phenotypes` of a short-axis cine segmentation by voxel counting.

    Args:
        labels: (X, Y, Z, T) label map, UK Biobank labels (1 LV, 2 myocardium, 3 RV).
        spacing_mm: spatial voxel spacing, mm.
        frame_interval_s: time between frames, s, or None.
        ed_rule: see :func:`ventricular_phenotypes`.

    Returns:
        The phenotype dict, plus ``lv_ml_per_frame``, ``myo_ml_per_frame`` and
        ``rv_ml_per_frame`` (lists, mL) for curve checks and plots.
    """
    curves = label_volume_curves(labels, spacing_mm)
    out = ventricular_phenotypes(curves[LV_BLOOD], curves[LV_MYO], curves[RV_BLOOD],
                                 frame_interval_s, ed_rule)
    out.update({"lv_ml_per_frame": curves[LV_BLOOD].tolist(),
                "myo_ml_per_frame": curves[LV_MYO].tolist(),
                "rv_ml_per_frame": curves[RV_BLOOD].tolist()})
    return out
