"""Quality control of cardiac segmentations and phenotypes.

Three kinds of check, each returning the reasons it fails (an empty list passes), so a
table can carry ``qc_pass`` and ``qc_reasons`` (``shared/CARDIAC.md``):

- :func:`short_axis_qc`: the ukbb_cardiac short-axis rules (``common/cardiac_utils.py``,
  ``sa_pass_quality_control``) on one frame's label map.
- :func:`volume_curve_reasons`: a ventricle whose volume over the cycle has no plausible
  systole (flat, ES on the ED frame, several systoles).
- :func:`basal_descent_reasons`: LV blood pool at end systole in the slice that holds the
  base at end diastole, though the base moves towards the apex in systole (issue 16).
- :func:`plausibility_reasons`: broad ranges for healthy adults (Petersen et al., JCMR
  2017), meant as flags for a person to look at, not as diagnoses.
"""

from __future__ import annotations

import math

import numpy as np

from medflow.cardiac.labels import LV_BLOOD, LV_MYO, RV_BLOOD

MIN_VOXELS = 10          # every class, ukbb_cardiac
MIN_LV_SLICES = 6        # slices holding LV blood pool and myocardium, contiguous
MIN_STROKE_FRACTION = 0.10   # a curve changing less than this over the cycle is flat

#: name -> (low, high) of the plausibility flags (``shared/CARDIAC.md``).
RANGES = {"lvef_pct": (40.0, 80.0), "rvef_pct": (40.0, 80.0), "lvedv_ml": (60.0, 300.0),
          "lvm_g": (40.0, 250.0)}
RV_LV_EDV_RATIO = (0.8, 1.5)
MAX_SV_MISMATCH_ML = 20.0


def short_axis_qc(labels: np.ndarray, slice_axis: int = 2) -> list[str]:
    """The ukbb_cardiac short-axis rules on one frame.

    Args:
        labels: (X, Y, Z) label map (1 LV blood pool, 2 LV myocardium, 3 RV blood pool).
        slice_axis: the axis across the short-axis slices.

    Returns:
        Reasons the frame fails (empty: passes): a class with fewer than 10 voxels; fewer
        than 6 slices holding both LV blood pool and myocardium, or a gap between them;
        the mid-cavity slice without LV epicardium (myocardium) or RV.
    """
    lab = np.moveaxis(np.asarray(labels), slice_axis, -1)
    if lab.ndim != 3:
        raise ValueError(f"expected one 3D frame, got {lab.ndim} dimensions")
    reasons = []
    names = {LV_BLOOD: "LV blood pool", LV_MYO: "LV myocardium", RV_BLOOD: "RV blood pool"}
    for value, name in names.items():
        n = int((lab == value).sum())
        if n < MIN_VOXELS:
            reasons.append(f"{name} has {n} voxels (< {MIN_VOXELS})")
    has_lv = (lab == LV_BLOOD).any(axis=(0, 1)) & (lab == LV_MYO).any(axis=(0, 1))
    slices = np.flatnonzero(has_lv)
    if slices.size < MIN_LV_SLICES:
        reasons.append(f"{slices.size} slices hold LV blood pool and myocardium "
                       f"(< {MIN_LV_SLICES})")
    if slices.size and slices[-1] - slices[0] + 1 != slices.size:
        reasons.append("a gap between the slices holding the LV")
    if slices.size:
        mid = lab[..., slices[slices.size // 2]]
        for value, name in ((LV_MYO, "LV epicardium"), (RV_BLOOD, "RV")):
            if not (mid == value).any():
                reasons.append(f"the mid-cavity slice holds no {name}")
    return reasons


def volume_curve_reasons(volume_ml, name: str = "LV", ed_frame: int = 0) -> list[str]:
    """Whether a ventricle's volume over the cycle looks like a heartbeat.

    Args:
        volume_ml: (T,) volume per frame, mL.
        name: the ventricle, for the messages.
        ed_frame: the end-diastolic frame.

    Returns:
        Reasons (empty: plausible): no volume at ED; a flat curve (the volume changes by
        less than 10 % of its ED value); ES (the minimum) on the ED frame; more than one
        systole (two separate dips, each deeper than a quarter of the stroke volume).
    """
    v = np.asarray(volume_ml, dtype=np.float64)
    if v.size < 2:
        return []
    edv = v[ed_frame]
    if not edv > 0:
        return [f"{name} volume is 0 at end-diastole"]
    reasons = []
    stroke = edv - v.min()
    if stroke < MIN_STROKE_FRACTION * edv:
        reasons.append(f"{name} volume curve is flat (changes by {100 * stroke / edv:.1f} % "
                       f"< {100 * MIN_STROKE_FRACTION:.0f} %): no systole")
        return reasons
    if int(np.argmin(v)) == ed_frame:
        reasons.append(f"{name} end-systole is the end-diastolic frame")
    if _dips(v, 0.25 * stroke) > 1:
        reasons.append(f"{name} volume curve has more than one systole")
    return reasons


def basal_descent_reasons(labels: np.ndarray, ed_frame: int, es_frame: int,
                          slice_axis: int = 2) -> list[str]:
    """Whether the LV base moved out of its end-diastolic slice by end systole.

    In systole the mitral annulus moves 10-15 mm towards the apex in adults (mitral annular
    plane systolic excursion, MAPSE, normally above 10 mm), about one UK Biobank slice
    (8 mm + 2 mm gap): the most basal short-axis slice that cuts the LV at end diastole cuts
    the left atrium at end systole. LV blood pool there at ES is either atrium labelled LV
    (a network reading one frame sees the same blood, and a thick ring: the cohort table's
    LVESV then grows by that slice and LVEF drops by 10-20 points, issue 16), a base that
    hardly moves (MAPSE well below a slice, as in heart failure), or a stack that stops
    short of the base. Each deserves a look; none is caught by the ukbb_cardiac rules.

    Args:
        labels: (X, Y, Z, T) UK Biobank short-axis labels.
        ed_frame / es_frame: end-diastolic and end-systolic frames.
        slice_axis: the axis across the short-axis slices.

    Returns:
        Reasons (empty: passes). The basal end is the end of the ED LV's slices with the
        larger LV area (the LV narrows towards the apex).
    """
    lab = np.moveaxis(np.asarray(labels), slice_axis, 2)
    if lab.ndim != 4 or ed_frame == es_frame:
        return []
    area = (lab[..., [ed_frame, es_frame]] == LV_BLOOD).sum(axis=(0, 1))   # (Z, 2)
    slices = np.flatnonzero(area[:, 0] >= MIN_VOXELS)
    if slices.size < 2:
        return []
    base = slices[0] if area[slices[0], 0] >= area[slices[-1], 0] else slices[-1]
    if area[base, 1] < MIN_VOXELS:
        return []
    return [f"LV blood pool at ES in the basal slice {base} ({area[base, 1]} of its "
            f"{area[base, 0]} ED voxels): the base did not leave it (atrium labelled LV, "
            f"little long-axis motion, or a stack that misses the base)"]


def _dips(v: np.ndarray, depth: float) -> int:
    """Separate dips of a periodic curve deeper than ``depth`` below both neighbouring peaks."""
    dips, peak, low, falling = 0, v[0], v[0], False
    for x in np.concatenate([v[1:], v[:1]]):  # periodic: back to the first frame
        if not falling:
            peak = max(peak, x)
            if peak - x > depth:
                falling, low = True, x
        else:
            low = min(low, x)
            if x - low > depth:
                dips, falling, peak = dips + 1, False, x
    return dips + (1 if falling else 0)


def plausibility_reasons(phenotypes: dict) -> list[str]:
    """Broad plausibility flags on a phenotype dict (keys of
    :func:`medflow.cardiac.phenotypes.ventricular_phenotypes`); missing keys are skipped.

    Returns:
        Reasons (empty: plausible), e.g. ``"lvef_pct 31.2 outside 40-80"``.
    """
    reasons = []
    for key, (low, high) in RANGES.items():
        value = phenotypes.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            if not low <= value <= high:
                reasons.append(f"{key} {value:.1f} outside {low:g}-{high:g}")
    lv, rv = phenotypes.get("lvedv_ml"), phenotypes.get("rvedv_ml")
    if lv and rv is not None:
        ratio = rv / lv
        if not RV_LV_EDV_RATIO[0] <= ratio <= RV_LV_EDV_RATIO[1]:
            reasons.append(f"RVEDV/LVEDV {ratio:.2f} outside {RV_LV_EDV_RATIO[0]:g}-"
                           f"{RV_LV_EDV_RATIO[1]:g}")
    lsv, rsv = phenotypes.get("lvsv_ml"), phenotypes.get("rvsv_ml")
    if lsv is not None and rsv is not None and abs(lsv - rsv) > MAX_SV_MISMATCH_ML:
        reasons.append(f"|LVSV - RVSV| {abs(lsv - rsv):.1f} mL > {MAX_SV_MISMATCH_ML:g}")
    if phenotypes.get("es_frame") == 0:
        reasons.append("ES frame is 0")
    return reasons
