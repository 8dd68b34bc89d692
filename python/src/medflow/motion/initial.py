"""A first guess of the heart frame and the template's shape parameters from the
end-diastolic label maps: long axis, base and apex, the RV direction, cavity radii.

Only moments and extents of labelled pixels: the template fit refines everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.cardiac.labels import LV_BLOOD, LV_MYO, RV_BLOOD
from medflow.motion.targets import View


@dataclass
class HeartFrame:
    """Heart frame in world coordinates and the template's starting shape.

    Attributes:
        rotation: (3, 3) columns = heart x (to the RV), y (anterior), z (apex to base).
        origin: (3,) world mm of the base-plane centre on the long axis.
        shape: (7,) template shape parameters (``template.SHAPE_NAMES``).
    """

    rotation: np.ndarray
    origin: np.ndarray
    shape: np.ndarray


def _points(view: View, values, frame: int = 0) -> np.ndarray:
    lab = np.asarray(view.labels[..., frame])
    ijk = np.argwhere(np.isin(lab, values)).astype(np.float64)
    return ijk @ view.affine[:3, :3].T + view.affine[:3, 3]


def _principal_axis(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[0]


def _fit_profile(depths: np.ndarray, areas: np.ndarray, length: float) -> float:
    """Least-squares r^2 of cross-section areas A = pi r^2 (1 - d^2 / length^2) at depths
    d below the base (a truncated ellipsoid's profile)."""
    g = np.clip(1.0 - (depths / length) ** 2, 0.0, None)
    keep = (depths >= 0) & (depths < length)
    g, areas = g[keep], areas[keep]
    return float((g * areas).sum() / (np.pi * (g * g).sum())) if (g > 0).any() else 0.0


def initial_frame(sa: View, long_axis: list[View]) -> HeartFrame:
    """Estimate the heart frame and shape from frame 0 (ED) of the views.

    Args:
        sa: the short-axis stack (label maps, UK Biobank labels).
        long_axis: the long-axis views (2- and/or 4-chamber), may be empty.

    Returns:
        :class:`HeartFrame`.
    """
    normal = sa.affine[:3, 2] / np.linalg.norm(sa.affine[:3, 2])
    lv_sa = _points(sa, (LV_BLOOD,))
    centre = lv_sa.mean(0)
    la_lv = [_points(v, (LV_BLOOD, LV_MYO)) for v in long_axis]
    la_lv = [p for p in la_lv if len(p) > 20]
    axis = normal
    if la_lv:
        dirs = [_principal_axis(p) for p in la_lv]
        axis = sum(d * np.sign(d @ normal) for d in dirs)
        axis = axis / np.linalg.norm(axis)
    # The base is the end the LV blood pool's centroid lies closer to (the cavity is
    # widest at the base).
    blood = np.concatenate([_points(v, (LV_BLOOD,)) for v in long_axis] or [lv_sa])
    s = (blood - centre) @ axis
    if s.max() - s.mean() > s.mean() - s.min():
        axis = -axis
        s = -s
    pixel = min(sa.spacing[:2]) if not long_axis else min(long_axis[0].spacing[:2])
    s_base, s_apex = s.max() + 0.5 * pixel, s.min() - 0.5 * pixel
    myo = np.concatenate([_points(v, (LV_MYO,)) for v in long_axis] or [_points(sa, (LV_MYO,))])
    s_apex_epi = min(((myo - centre) @ axis).min() - 0.5 * pixel, s_apex - 3.0)
    origin = centre + axis * s_base
    c, c_epi = s_base - s_apex, s_base - s_apex_epi
    # RV direction and per-slice areas on the short axis.
    lab = np.asarray(sa.labels[..., 0])
    px_area = float(np.prod(sa.spacing[:2]))
    depths, a_lv, a_epi, a_rv, rv_dirs, angles = [], [], [], [], [], []
    for k in range(lab.shape[2]):
        sl = lab[:, :, k]
        o = sa.affine[:3, :3] @ np.array([0, 0, k]) + sa.affine[:3, 3]
        depths.append(float((origin - o) @ axis))
        a_lv.append((sl == LV_BLOOD).sum() * px_area)
        a_epi.append(np.isin(sl, (LV_BLOOD, LV_MYO)).sum() * px_area)
        a_rv.append((sl == RV_BLOOD).sum() * px_area)
        if (sl == LV_BLOOD).any() and (sl == RV_BLOOD).any():
            ij = lambda v: np.argwhere(sl == v) @ sa.affine[:3, :2].T + o  # noqa: E731
            lv_c, rv_pts = ij(LV_BLOOD).mean(0), ij(RV_BLOOD)
            d = rv_pts.mean(0) - lv_c
            rv_dirs.append((d - axis * (d @ axis)) * a_rv[-1])
            angles.append((rv_pts - lv_c, lv_c))
    depths, a_lv, a_epi, a_rv = map(np.asarray, (depths, a_lv, a_epi, a_rv))
    if rv_dirs:
        x = np.sum(rv_dirs, axis=0)
    else:                       # no RV on the short axis: any direction across the axis
        x = np.cross(axis, [1.0, 0, 0] if abs(axis[0]) < 0.9 else [0, 1.0, 0])
    x = x / np.linalg.norm(x)
    y = np.cross(axis, x)
    a2 = _fit_profile(depths, a_lv, c)
    e2 = _fit_profile(depths, a_epi, c_epi)
    a = np.sqrt(max(a2, 25.0))
    w_r = max(np.sqrt(max(e2, a2 + 1.0)) - a, 3.0)
    half = []
    for rel, _ in angles:
        th = np.degrees(np.arctan2(rel @ y, rel @ x))
        half.append(np.percentile(np.abs(th), 97))
    beta = np.radians(np.clip(np.median(half), 40, 85)) if half else np.radians(65)
    rv_depth = depths[a_rv > 0].max() + 0.5 * sa.spacing[2] if (a_rv > 0).any() else 0.8 * c
    rv_c = float(np.clip(rv_depth, 0.5 * c, 1.1 * c_epi))
    g = np.clip(1 - (depths / rv_c) ** 2, 0, None)
    sel = (depths >= 0) & (g > 0)
    q = 2.0 * (g[sel] * a_rv[sel]).sum() / (beta * (g[sel] ** 2).sum()) if sel.any() else 1e3
    rotation = np.stack([x, y, axis], axis=1)
    shape = np.array([a, c, w_r, max(c_epi - c, 3.0), max(q, 200.0), beta, rv_c])
    return HeartFrame(rotation, origin, shape)
