"""AHA 16-segment model of the LV wall and the six long-axis segments.

Conventions (``shared/CARDIAC.md``; Cerqueira et al., Circulation 2002; ukbb_cardiac
``common/cardiac_utils.py``):

- The short-axis angle of a point is ukbb_cardiac's: ``atan2(d . lv_to_sep,
  d . inf_to_ant)`` in degrees, with ``d`` the point minus the LV centre on the long axis,
  ``lv_to_sep`` the unit direction from the LV centre to the septum and ``inf_to_ant =
  apex_to_base x lv_to_sep``. Anterior is 0 degrees, the septum +90 degrees.
- Levels: the LV cavity from the base (mitral) plane to the endocardial apex split in
  equal thirds along the long axis: basal (segments 1-6), mid-cavity (7-12), apical
  (13-16). Wall beyond the endocardial apex is the apical cap, segment 17 (not reported).
- Basal and mid-cavity: the septum between the anterior and the inferior RV insertion
  points is split in two equal parts (anteroseptal 2/8, inferoseptal 3/9); the free wall
  from the inferior insertion point round to the anterior one in four (inferior 4/10,
  inferolateral 5/11, anterolateral 6/12, anterior 1/7). With insertion points at 30 and
  150 degrees this is ukbb_cardiac's fixed 60-degree sectors exactly.
- Apical: four 90-degree sectors centred on the septal mid-direction (the bisector of the
  insertion points): septal 14, inferior 15, lateral 16, anterior 13.
- Long-axis segments (for longitudinal strain, ukbb_cardiac's six 4-chamber segments):
  the wall within +-30 degrees of the septal mid-direction (septal) and of its opposite
  (lateral), in thirds: 1 basal septal, 2 mid septal, 3 apical septal, 4 apical lateral,
  5 mid lateral, 6 basal lateral; 0 elsewhere.
"""

from __future__ import annotations

import numpy as np

AHA_NAMES = {1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal",
             4: "basal inferior", 5: "basal inferolateral", 6: "basal anterolateral",
             7: "mid anterior", 8: "mid anteroseptal", 9: "mid inferoseptal",
             10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
             13: "apical anterior", 14: "apical septal", 15: "apical inferior",
             16: "apical lateral", 17: "apex"}
LONG_AXIS_NAMES = {1: "basal septal", 2: "mid septal", 3: "apical septal",
                   4: "apical lateral", 5: "mid lateral", 6: "basal lateral"}
LONG_AXIS_HALF_WIDTH_DEG = 30.0


def aha_axes(apex_to_base: np.ndarray, lv_to_sep: np.ndarray) -> dict[str, np.ndarray]:
    """ukbb_cardiac's AHA coordinate system from the long axis and the septal direction.

    Args:
        apex_to_base: (3,) long-axis direction, apex to base (any length).
        lv_to_sep: (3,) direction from the LV centre towards the septum; its component
            along the long axis is removed.

    Returns:
        ``{"apex_to_base", "lv_to_sep", "inf_to_ant"}``: orthonormal (3,) vectors.
    """
    z = np.asarray(apex_to_base, np.float64)
    z = z / np.linalg.norm(z)
    s = np.asarray(lv_to_sep, np.float64)
    s = s - z * (s @ z)
    norm = np.linalg.norm(s)
    if norm < 1e-9:
        raise ValueError("the septal direction is parallel to the long axis")
    s = s / norm
    return {"apex_to_base": z, "lv_to_sep": s, "inf_to_ant": np.cross(z, s)}


def short_axis_angle(points: np.ndarray, centre: np.ndarray, axes: dict) -> np.ndarray:
    """Angle (degrees, in [-180, 180)) of points about the long axis, anterior 0, septum 90.

    Args:
        points: (N, 3) mm; centre: (3,) a point on the long axis; axes: :func:`aha_axes`.
    """
    d = np.asarray(points, np.float64) - np.asarray(centre, np.float64)
    return np.degrees(np.arctan2(d @ axes["lv_to_sep"], d @ axes["inf_to_ant"]))


def level_fraction(points: np.ndarray, base_point: np.ndarray, apex_point: np.ndarray,
                   axes: dict) -> np.ndarray:
    """Depth along the long axis: 0 at the base plane, 1 at the endocardial apex (N,)."""
    z = axes["apex_to_base"]
    length = float((np.asarray(base_point) - np.asarray(apex_point)) @ z)
    if not length > 0:
        raise ValueError("the apex does not lie below the base along the long axis")
    return (np.asarray(base_point) - np.asarray(points, np.float64)) @ z / length


def aha_segments(depth: np.ndarray, angle_deg: np.ndarray, anterior_insertion_deg: float,
                 inferior_insertion_deg: float) -> np.ndarray:
    """AHA segment (1-17) of wall points from their depth and short-axis angle.

    Args:
        depth: (N,) :func:`level_fraction` (0 base plane, 1 endocardial apex).
        angle_deg: (N,) :func:`short_axis_angle`.
        anterior_insertion_deg, inferior_insertion_deg: angles of the RV insertion points
            (anterior < inferior, both within (0, 180): the septum lies between them).

    Returns:
        (N,) int: 1-16, or 17 beyond the endocardial apex (depth > 1).
    """
    a, i = float(anterior_insertion_deg), float(inferior_insertion_deg)
    if not 0.0 < a < i < 180.0:
        raise ValueError(f"insertion angles must satisfy 0 < anterior ({a:.1f}) < inferior "
                         f"({i:.1f}) < 180 degrees")
    depth = np.asarray(depth, np.float64)
    rel = np.mod(np.asarray(angle_deg, np.float64) - a, 360.0)  # 0 at the anterior insertion
    septum, free = i - a, 360.0 - (i - a)
    # Basal/mid order from the anterior insertion: 2, 3 (septum), 4, 5, 6, 1 (free wall).
    in_septum = rel < septum
    sector = np.where(in_septum, np.minimum((rel / (septum / 2)).astype(int), 1),
                      2 + np.minimum(((rel - septum) / (free / 4)).astype(int), 3))
    ring = np.array([2, 3, 4, 5, 6, 1])[sector]
    mid_dir = 0.5 * (a + i)
    apical_rel = np.mod(np.asarray(angle_deg, np.float64) - mid_dir + 45.0, 360.0)
    apical = np.array([14, 15, 16, 13])[np.minimum((apical_rel / 90.0).astype(int), 3)]
    out = np.where(depth < 1.0 / 3.0, ring, np.where(depth < 2.0 / 3.0, ring + 6, apical))
    return np.where(depth > 1.0, 17, out).astype(np.int64)


def long_axis_segments(depth: np.ndarray, angle_deg: np.ndarray,
                       anterior_insertion_deg: float, inferior_insertion_deg: float
                       ) -> np.ndarray:
    """Long-axis segment (1-6, 0 outside the septal and lateral bands) of wall points."""
    depth = np.asarray(depth, np.float64)
    mid_dir = 0.5 * (float(anterior_insertion_deg) + float(inferior_insertion_deg))
    off = np.mod(np.asarray(angle_deg, np.float64) - mid_dir + 180.0, 360.0) - 180.0
    level = np.clip((depth * 3.0).astype(int), 0, 2)    # 0 basal, 1 mid, 2 apical
    septal = np.abs(off) <= LONG_AXIS_HALF_WIDTH_DEG
    lateral = np.abs(off) >= 180.0 - LONG_AXIS_HALF_WIDTH_DEG
    out = np.where(septal, 1 + level, np.where(lateral, 6 - level, 0))
    return np.where((depth < 0) | (depth > 1.0), 0, out).astype(np.int64)
