"""Acquisition geometry of the synthetic cine: short-axis stack, long-axis planes, GT grid.

All grids are built in the heart frame of a :class:`HeartModel` (so they are oblique in the
scanner) and returned as a NIfTI affine (RAS mm) plus a shape. The short-axis voxel axes are
(+x to the RV, -y, base-to-apex): slice 0 is the most basal.
"""

from __future__ import annotations

import numpy as np

from medflow.io.volume import make_affine
from medflow.phantom.heart import HeartModel

SA_PIXEL_MM = 1.8
SA_SLICE_SPACING_MM = 10.0
SA_SLICE_THICKNESS_MM = 8.0
SA_SHAPE_XY = (184, 160)
LA_PIXEL_MM = 1.8
LA_SLICE_THICKNESS_MM = 6.0
LA_SHAPE_XY = (176, 176)
GT_VOXEL_MM = 1.25
#: Largest breath-hold displacement of a short-axis slice, per in-plane axis (mm).
MAX_SHIFT_MM = 5.0


def _grid_affine(heart: HeartModel, axes_heart: np.ndarray, spacing, centre_heart,
                 shape) -> np.ndarray:
    """Affine of a grid whose voxel axes are ``axes_heart`` (columns, heart frame),
    centred (in-plane) on ``centre_heart``; the third axis starts at the centre."""
    direction = heart.rot @ axes_heart
    spacing = np.asarray(spacing, np.float64)
    half = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, 0.0])
    corner = np.asarray(centre_heart, np.float64) - axes_heart @ (half * spacing)
    return make_affine(spacing, direction, heart.to_world(corner[None])[0])


def sa_geometry(heart: HeartModel) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Short-axis stack: 10-12 slices 10 mm apart from the base to beyond the apex.

    Returns:
        (affine, (X, Y, Z)); in-plane 1.8 mm, centred 15 mm towards the RV. Slice 0 is
        centred 5 mm below the ED base plane, so the ED ventricles fill whole 10 mm slabs
        (unbiased slice-summation volumes at ED); one slice lies beyond the apex.
    """
    height = -heart.apex_z
    n = int(np.clip(np.ceil(height / SA_SLICE_SPACING_MM) + 1, 10, 12))
    axes = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]).T
    shape = (*SA_SHAPE_XY, n)
    spacing = (SA_PIXEL_MM, SA_PIXEL_MM, SA_SLICE_SPACING_MM)
    return _grid_affine(heart, axes, spacing, (15.0, 0.0, -0.5 * SA_SLICE_SPACING_MM),
                        shape), shape


def la_geometry(heart: HeartModel, view: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Long-axis plane through the LV axis: ``"4ch"`` (LV and RV) or ``"2ch"`` (LV only).

    Returns:
        (affine, (X, Y, 1)); the 4-chamber plane is spanned by the long axis and the
        LV-to-RV direction, the 2-chamber plane is perpendicular to it.
    """
    if view == "4ch":
        axes, centre = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]).T, (15.0, 0.0, -25.0)
    elif view == "2ch":
        axes, centre = np.array([[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]]).T, (0.0, 0.0, -25.0)
    else:
        raise ValueError(f"unknown long-axis view {view!r}; choose '2ch' or '4ch'")
    shape = (*LA_SHAPE_XY, 1)
    spacing = (LA_PIXEL_MM, LA_PIXEL_MM, LA_SLICE_THICKNESS_MM)
    return _grid_affine(heart, axes, spacing, centre, shape), shape


def gt_geometry(heart: HeartModel) -> tuple[np.ndarray, tuple[int, int, int]]:
    """1.25 mm isotropic grid, axes as the short-axis stack, around the ED ventricles + 4 mm."""
    lo, hi = heart.extent_heart()
    lo, hi = lo - 4.0, hi + 4.0
    # Put the ED base plane (z = 0) half-way between voxel centres, so it is counted exactly.
    hi[2] = 3.5 * GT_VOXEL_MM
    shape = tuple(int(np.ceil(s / GT_VOXEL_MM)) + 1 for s in hi - lo)
    # Voxel (0, 0, 0) at heart (xmin, ymax, zmax): axes are +x, -y, -z.
    corner = np.array([lo[0], hi[1], hi[2]])
    axes = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]).T
    affine = make_affine((GT_VOXEL_MM,) * 3, heart.rot @ axes, heart.to_world(corner[None])[0])
    return affine, shape


def grid_points(affine: np.ndarray, shape, shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """World points (X, Y, Z, 3) of voxel centres, optionally seen through slice shifts.

    Args:
        affine: 4x4 voxel-to-world.
        shape: (X, Y, Z).
        shifts_mm: (Z, 2) in-plane displacement of each slice's content along voxel axes
            i and j (mm). Slice k shows the world displaced by +shift, so its voxel at
            position p samples the world at p - shift.

    Returns:
        float64 array (X, Y, Z, 3).
    """
    ijk = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape),
                               indexing="ij"), axis=-1)
    pts = np.einsum("...i,ji->...j", ijk, affine[:3, :3]) + affine[:3, 3]
    if shifts_mm is not None:
        units = affine[:3, :2] / np.linalg.norm(affine[:3, :2], axis=0)
        pts -= (np.asarray(shifts_mm, np.float64) @ units.T)[None, None, :, :]
    return pts


def draw_slice_shifts(rng: np.random.Generator, n_slices: int) -> np.ndarray:
    """Breath-hold mismatch: each slice its own in-plane shift (mm), ~N(0, 2) clipped +-5."""
    return np.clip(rng.normal(0.0, 2.0, size=(n_slices, 2)), -MAX_SHIFT_MM, MAX_SHIFT_MM)
