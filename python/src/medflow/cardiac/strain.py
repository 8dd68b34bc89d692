"""Myocardial strain and wall thickness of the LV wall, one definition for the motion tool's
meshes and the phantom's analytic truth (``shared/CARDIAC.md``).

The wall is sampled as a grid of paired material points: ``endo[t, l, a]`` and
``epi[t, l, a]`` (frames t, levels l from base to apex, angles a around the long axis,
rings closed in a); the mid-wall point is their average. Lagrangian engineering strain of
material line elements relative to end-diastole (ED), in %:

- circumferential Ecc: mid-wall elements between neighbouring angles of a ring;
- radial Err: the endocardium-to-epicardium element of each pair (wall thickening);
- longitudinal Ell: mid-wall elements between neighbouring levels of a meridian.

A segment's strain at frame t is ``100 (sum of element lengths at t / sum at ED - 1)``
over its elements (length-weighted mean of element strains); global is the same over every
element of segments 1-16 (Ecc, Err) or of the six long-axis segments (Ell, the 4-chamber
band as ukbb_cardiac). Peak strain: the most negative value over the cycle for Ecc and
Ell, the largest for Err. Elements are labelled at ED by their midpoints
(:mod:`medflow.cardiac.aha`). ukbb_cardiac measures the same quantities on contours
propagated by image registration; values depend on the method (CARDIAC.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.cardiac.aha import (aha_axes, aha_segments, level_fraction, long_axis_segments,
                                 short_axis_angle)

AHA_REPORTED = tuple(range(1, 17))
LONG_AXIS_REPORTED = tuple(range(1, 7))


@dataclass(frozen=True)
class WallGrid:
    """Paired endocardial/epicardial material points and their segment labels.

    Attributes:
        endo, epi: (T, L, A, 3) positions in mm, frame ``ed_frame`` the reference.
        circ_aha: (L, A) AHA segment of the circumferential element (l, a) -> (l, a + 1).
        radial_aha: (L, A) AHA segment of the radial element of pair (l, a).
        long_la: (L - 1, A) long-axis segment of the element (l, a) -> (l + 1, a).
        node_aha: (L, A) AHA segment of the endocardial point (for wall thickness).
    """

    endo: np.ndarray
    epi: np.ndarray
    circ_aha: np.ndarray
    radial_aha: np.ndarray
    long_la: np.ndarray
    node_aha: np.ndarray
    ed_frame: int = 0


def label_wall(endo: np.ndarray, epi: np.ndarray, apex_to_base, lv_to_sep, base_point,
               apex_point, insertions_deg: tuple[float, float], ed_frame: int = 0
               ) -> WallGrid:
    """Label a wall grid with AHA and long-axis segments at ED.

    Args:
        endo, epi: (T, L, A, 3) paired points, mm.
        apex_to_base, lv_to_sep: long axis and septal direction (:func:`aha_axes`).
        base_point: (3,) a point of the base (mitral) plane on the long axis.
        apex_point: (3,) the endocardial apex.
        insertions_deg: (anterior, inferior) RV insertion angles, degrees.
        ed_frame: the reference frame.

    Returns:
        :class:`WallGrid`.
    """
    endo, epi = np.asarray(endo, np.float64), np.asarray(epi, np.float64)
    if endo.shape != epi.shape or endo.ndim != 4 or endo.shape[-1] != 3:
        raise ValueError(f"endo and epi must both be (T, L, A, 3), got {endo.shape}, "
                         f"{epi.shape}")
    axes = aha_axes(apex_to_base, lv_to_sep)
    base_point = np.asarray(base_point, np.float64)
    centre = base_point
    mid = 0.5 * (endo[ed_frame] + epi[ed_frame])

    def labels(points, fn):
        flat = points.reshape(-1, 3)
        depth = level_fraction(flat, base_point, apex_point, axes)
        angle = short_axis_angle(flat, centre, axes)
        return fn(depth, angle, *insertions_deg).reshape(points.shape[:-1])

    circ_mid = 0.5 * (mid + np.roll(mid, -1, axis=1))
    long_mid = 0.5 * (mid[:-1] + mid[1:])
    return WallGrid(endo, epi, labels(circ_mid, aha_segments), labels(mid, aha_segments),
                    labels(long_mid, long_axis_segments),
                    labels(endo[ed_frame], aha_segments), ed_frame)


def _length_strain(lengths: np.ndarray, labels: np.ndarray, ed: int, reported) -> dict:
    """Per-segment and global strain curves (T,) in % from element lengths (T, ...)."""
    flat = lengths.reshape(lengths.shape[0], -1)
    lab = labels.reshape(-1)
    out = {}
    for s in reported:
        sel = lab == s
        out[s] = (100.0 * (flat[:, sel].sum(1) / flat[ed, sel].sum() - 1.0)
                  if sel.any() else np.full(flat.shape[0], np.nan))
    sel = np.isin(lab, reported)
    out["global"] = 100.0 * (flat[:, sel].sum(1) / flat[ed, sel].sum() - 1.0)
    return out


def strain_curves(wall: WallGrid) -> dict[str, dict]:
    """Ecc, Err (AHA 1-16 + global) and Ell (long-axis 1-6 + global) over the cycle.

    Returns:
        ``{"ecc": {1: (T,), ..., 16: (T,), "global": (T,)}, "err": {...},
        "ell": {1..6, "global"}}`` in %; a segment without elements is NaN.
    """
    mid = 0.5 * (wall.endo + wall.epi)
    circ = np.linalg.norm(np.roll(mid, -1, axis=2) - mid, axis=-1)
    radial = np.linalg.norm(wall.epi - wall.endo, axis=-1)
    longi = np.linalg.norm(mid[:, 1:] - mid[:, :-1], axis=-1)
    ed = wall.ed_frame
    return {"ecc": _length_strain(circ, wall.circ_aha, ed, AHA_REPORTED),
            "err": _length_strain(radial, wall.radial_aha, ed, AHA_REPORTED),
            "ell": _length_strain(longi, wall.long_la, ed, LONG_AXIS_REPORTED)}


def peak_strain(curves: dict[str, dict]) -> dict[str, float]:
    """Peak strain columns: ``ecc_global_pct``, ``ecc_aha01_pct`` ... ``err_*``, ``ell_*``
    (``ell_la1_pct`` ... for the long-axis segments). Ecc and Ell: minimum over the cycle;
    Err: maximum."""
    out = {}
    for kind, per in curves.items():
        pick = np.nanmax if kind == "err" else np.nanmin
        for key, curve in per.items():
            if key == "global":
                name = f"{kind}_global_pct"
            elif kind == "ell":
                name = f"ell_la{key}_pct"
            else:
                name = f"{kind}_aha{key:02d}_pct"
            out[name] = float(pick(curve)) if np.isfinite(curve).any() else float("nan")
    return out


def point_triangle_distance(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Distance from each point (N, 3) to its triangle (N, 3, 3): the Voronoi-region test of
    Ericson, Real-Time Collision Detection (2005), section 5.1.5."""
    p = np.asarray(points, np.float64)
    a, b, c = (np.asarray(triangles, np.float64)[:, i] for i in range(3))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp, cp = p - b, p - c
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v, w = vb / denom, vc / denom                          # inside the face
        q = a + ab * v[:, None] + ac * w[:, None]
        t_ab = np.clip(d1 / (d1 - d3), 0, 1)
        t_ac = np.clip(d2 / (d2 - d6), 0, 1)
        t_bc = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
    cases = [
        ((d1 <= 0) & (d2 <= 0), a),
        ((d3 >= 0) & (d4 <= d3), b),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * np.nan_to_num(t_ab)[:, None]),
        ((d6 >= 0) & (d5 <= d6), c),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * np.nan_to_num(t_ac)[:, None]),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
         b + (c - b) * np.nan_to_num(t_bc)[:, None]),
    ]
    closest = q
    for cond, target in reversed(cases):  # the first matching case wins
        closest = np.where(cond[:, None], target, closest)
    return np.linalg.norm(p - closest, axis=1)


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                     candidates: int = 24) -> np.ndarray:
    """Distance (N,) from points to a triangulated surface: exact point-to-triangle
    distance over the ``candidates`` triangles whose centroids are nearest."""
    from scipy.spatial import cKDTree

    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    k = min(candidates, len(tri))
    _, idx = cKDTree(tri.mean(1)).query(points, k=k)
    idx = idx.reshape(len(points), k)
    dist = point_triangle_distance(np.repeat(points, k, axis=0), tri[idx.reshape(-1)])
    return dist.reshape(len(points), k).min(1)


def wall_thickness(wall: WallGrid, epi_vertices: np.ndarray, epi_faces: np.ndarray) -> dict:
    """Wall thickness at ED (ukbb_cardiac ``eval_wall_thickness.py`` in 3D): for each
    endocardial point, the distance to the nearest point of the epicardial surface.

    Returns:
        ``wt_global_mm`` (mean over segments 1-16), ``wt_max_mm`` and ``wt_aha01_mm`` ...
        ``wt_aha16_mm`` (means per segment; NaN for a segment without points).
    """
    endo = wall.endo[wall.ed_frame].reshape(-1, 3)
    labels = wall.node_aha.reshape(-1)
    keep = np.isin(labels, AHA_REPORTED)
    d = surface_distance(endo[keep], epi_vertices, epi_faces)
    labels = labels[keep]
    out = {"wt_global_mm": float(d.mean()), "wt_max_mm": float(d.max())}
    for s in AHA_REPORTED:
        sel = labels == s
        out[f"wt_aha{s:02d}_mm"] = float(d[sel].mean()) if sel.any() else float("nan")
    return out
