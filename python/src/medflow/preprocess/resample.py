"""Resampling onto a new voxel spacing or onto another image's grid, with SimpleITK.

Convention (kept everywhere in medflow): the physical field of view is kept. Along each
voxel axis the new size is ``round(old size * old spacing / new spacing)`` (halves round
up; at least 1),
and the outer corner of the field of view stays put, so the centre of the first voxel
moves by ``(new spacing - old spacing) / 2`` along that axis. The direction is unchanged.

Images interpolate linearly (or with cubic B-splines); label maps by nearest neighbour
only, so no new label values appear. 4D volumes are resampled frame by frame into one
preallocated output array, so memory stays at about the size of the output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from medflow.io.images import LPS_TO_RAS
from medflow.io.volume import Volume

INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline,
                 "nearest": sitk.sitkNearestNeighbor}
_PIXEL_IDS = {"f4": sitk.sitkFloat32, "f8": sitk.sitkFloat64, "u1": sitk.sitkUInt8,
              "i1": sitk.sitkInt8, "u2": sitk.sitkUInt16, "i2": sitk.sitkInt16,
              "u4": sitk.sitkUInt32, "i4": sitk.sitkInt32, "u8": sitk.sitkUInt64,
              "i8": sitk.sitkInt64}
#: Two grids closer than this (mm, in every affine entry) are the same grid: no resampling.
GRID_ATOL = 1e-5


def output_grid(shape3: Sequence[int], affine: np.ndarray,
                spacing: Sequence[float | None]) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid a volume is resampled onto for a new spacing (the medflow convention).

    Args:
        shape3: current (X, Y, Z) size in voxels.
        affine: current 4x4 RAS affine.
        spacing: new spacing in mm along each voxel axis; ``None`` keeps that axis as is.

    Returns:
        ``(shape3, affine)`` of the new grid: the same direction, size
        ``max(1, round(n * s / s_new))`` and the outer corner of the field of view kept,
        i.e. the first voxel centre moved by ``(s_new - s) / 2`` along each axis.

    Example:
        >>> shape, aff = output_grid((10, 10, 4), np.diag([2.0, 2.0, 5.0, 1.0]), (1.0, None, 2.5))
        >>> shape, float(aff[0, 3]), float(aff[2, 3])
        ((20, 10, 8), -0.5, -1.25)
    """
    affine = np.asarray(affine, dtype=np.float64)
    old = np.linalg.norm(affine[:3, :3], axis=0)
    new = np.array([o if s is None else float(s) for o, s in zip(old, spacing)])
    if np.any(new <= 0) or not np.all(np.isfinite(new)):
        raise ValueError(f"spacing must be positive, got {list(spacing)}")
    n_old = np.asarray(shape3, dtype=np.float64)
    n_new = np.maximum(1, np.floor(n_old * old / new + 0.5)).astype(int)  # round half up
    direction = affine[:3, :3] / old
    out = np.eye(4)
    out[:3, :3] = direction * new
    out[:3, 3] = affine[:3, 3] + direction @ ((new - old) / 2)
    return tuple(int(n) for n in n_new), out


def sitk_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in ITK's LPS convention for a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def same_grid(shape_a, affine_a, shape_b, affine_b, atol: float = GRID_ATOL) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=atol, rtol=0)


def grids_overlap(shape_a, affine_a, shape_b, affine_b) -> bool:
    """Whether two fields of view share any world point (bounding boxes of their corners)."""
    def box(shape, affine):
        corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in shape], indexing="ij"))
        pts = affine[:3, :3] @ corners.reshape(3, -1) + affine[:3, 3:4]
        return pts.min(axis=1), pts.max(axis=1)

    lo_a, hi_a = box(shape_a, affine_a)
    lo_b, hi_b = box(shape_b, affine_b)
    return bool(np.all(lo_a < hi_b) and np.all(lo_b < hi_a))


def _sitk_ready(frame: np.ndarray) -> np.ndarray:
    """One frame as a C-ordered (k, j, i) array SimpleITK can take: native byte order, and
    float32 for types it lacks (float16, bool)."""
    dtype = frame.dtype.newbyteorder("=")
    if dtype.kind not in "iuf" or dtype.itemsize < 4 and dtype.kind == "f":
        dtype = np.dtype(np.float32)
    return np.ascontiguousarray(frame.T, dtype=dtype)


def resample_to_grid(vol: Volume, shape3: Sequence[int], affine: np.ndarray,
                     interpolation: str = "linear", fill: float = 0.0) -> Volume:
    """Resample a volume onto a given grid, frame by frame, into one preallocated array.

    Args:
        vol: 3D or 4D volume; for label maps ``interpolation`` is ignored (nearest).
        shape3: output size (X, Y, Z) in voxels.
        affine: output 4x4 RAS affine.
        interpolation: ``linear`` or ``bspline`` for images.
        fill: value of output voxels outside the input's field of view.

    Returns:
        A new Volume on the grid: float32 for images, the input's integer type for labels.
        Returns ``vol`` itself when the grid is already its own (exact identity).

    Note:
        The output array is Fortran-ordered like nibabel's, so each frame is one
        contiguous block that SimpleITK's result is copied into without transposition.
    """
    shape3 = tuple(int(s) for s in shape3)
    affine = np.asarray(affine, dtype=np.float64)
    if same_grid(vol.shape3, vol.affine, shape3, affine):
        return vol
    is_label = vol.kind == "label"
    method = "nearest" if is_label else interpolation
    if method not in INTERPOLATORS:
        raise ValueError(f"unknown interpolation {interpolation!r}; "
                         f"expected one of {sorted(INTERPOLATORS)}")
    dtype = np.dtype(vol.data.dtype if is_label else np.float32).newbyteorder("=")
    if is_label and dtype.kind not in "iu":
        dtype = np.dtype(np.float32)  # whole-valued float labels
    origin, spacing, direction = sitk_geometry(vol.affine)
    out_origin, out_spacing, out_direction = sitk_geometry(affine)
    out = np.empty(shape3 + vol.data.shape[3:], dtype=dtype, order="F")
    frames = out.reshape(shape3 + (-1,), order="F")
    source = vol.data if vol.data.ndim == 4 else vol.data[..., None]
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(shape3)
    resampler.SetOutputOrigin(out_origin)
    resampler.SetOutputSpacing(out_spacing)
    resampler.SetOutputDirection(out_direction)
    resampler.SetInterpolator(INTERPOLATORS[method])
    resampler.SetDefaultPixelValue(float(fill))
    resampler.SetTransform(sitk.Transform(3, sitk.sitkIdentity))
    # interpolation runs in double inside ITK; the input's own type is read directly
    resampler.SetOutputPixelType(_PIXEL_IDS[dtype.str[1:]])
    for t in range(source.shape[3]):
        img = sitk.GetImageFromArray(_sitk_ready(source[..., t]))
        img.SetOrigin(origin)
        img.SetSpacing(spacing)
        img.SetDirection(direction)
        result = resampler.Execute(img)
        frames[..., t] = sitk.GetArrayViewFromImage(result).T
    return vol.with_data(out, affine)


def resample(vol: Volume, spacing: Sequence[float | None], interpolation: str = "linear",
             fill: float = 0.0) -> Volume:
    """Resample to a new voxel spacing, keeping the field of view (see module docstring).

    Args:
        vol: 3D or 4D volume (time untouched; each frame resampled the same way).
        spacing: new spacing in mm along each voxel axis, ``None`` to keep an axis.
        interpolation: ``linear`` or ``bspline`` (images); labels always use nearest.
        fill: value for output voxels whose centre falls outside the input.

    Returns:
        The resampled Volume (``vol`` itself when nothing changes).

    Example:
        >>> v = Volume(np.ones((4, 4, 2), np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
        >>> resample(v, (1.0, 1.0, None)).shape3
        (8, 8, 2)
    """
    shape3, affine = output_grid(vol.shape3, vol.affine, spacing)
    return resample_to_grid(vol, shape3, affine, interpolation, fill)
