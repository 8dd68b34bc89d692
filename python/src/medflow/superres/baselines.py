"""Baselines: interpolate the stack as acquired, no motion correction.

Labels: ``nearest`` (each point takes the nearest stack pixel), ``linear`` (trilinear
interpolation of the one-hot maps, then the most likely class) and ``sdf`` (signed
distances of each class, computed in-plane per slice, interpolated between slices and
in-plane; the class with the smallest distance wins: shape-based interpolation, Raya &
Udupa 1990). Images: cubic B-spline (SimpleITK).

Every function takes the stack (X, Y, K) with its affine and the output grid (affine,
shape), and returns values on that grid. ``sdf_labels`` and ``bspline_image`` also take
per-slice shifts to undo first (:func:`undo_slice_shifts`): the ``latent`` method's motion
correction, interpolated the same way. Points outside the stack (beyond half a slice
spacing past the first or last slice, or outside the in-plane field of view) are
background (labels) or 0 (images).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates
from scipy.ndimage import shift as shift_array

from medflow.io.images import LPS_TO_RAS
from medflow.superres.geometry import apply_affine, voxel_points

#: Signed distances are clipped here (mm): a class absent from a slice is "this far away".
SDF_CLIP_MM = 20.0


def stack_coordinates(stack_affine: np.ndarray, affine: np.ndarray, shape) -> np.ndarray:
    """Continuous stack voxel coordinates (3, N) of the output grid's voxel centres."""
    inv = np.linalg.inv(stack_affine)
    pts = voxel_points(affine, shape).reshape(-1, 3)
    return apply_affine(inv, pts).T


def _inside(ijk: np.ndarray, stack_shape) -> np.ndarray:
    return np.all((ijk > -0.5) & (ijk < np.array(stack_shape[:3])[:, None] - 0.5), axis=0)


def stack_coverage(stack_shape, stack_affine: np.ndarray, affine: np.ndarray, shape
                   ) -> np.ndarray:
    """(X, Y, Z) bool: the output voxels the stack covers (within half a slice spacing of
    a slice, inside the in-plane field of view), where the baselines write values."""
    ijk = stack_coordinates(stack_affine, affine, shape)
    return _inside(ijk, stack_shape).reshape(tuple(shape))


def _clamped_slices(ijk: np.ndarray, n: int) -> np.ndarray:
    """Points between the outer slice centre and its slab edge take that slice's values."""
    out = ijk.copy()
    out[2] = np.clip(out[2], 0.0, n - 1.0)
    return out


def nearest_labels(stack: np.ndarray, stack_affine: np.ndarray, affine: np.ndarray, shape
                   ) -> np.ndarray:
    """Nearest stack pixel's label at each output voxel."""
    ijk = stack_coordinates(stack_affine, affine, shape)
    out = map_coordinates(np.asarray(stack), ijk, order=0, mode="nearest")
    out[~_inside(ijk, stack.shape)] = 0
    return out.reshape(tuple(shape)).astype(np.uint8)


def _per_class(stack: np.ndarray, values) -> list[np.ndarray]:
    return [(np.asarray(stack) == v).astype(np.float32) for v in values]


def linear_labels(stack: np.ndarray, stack_affine: np.ndarray, affine: np.ndarray, shape,
                  values=(0, 1, 2, 3)) -> np.ndarray:
    """Trilinear interpolation of the one-hot maps; the class of largest value."""
    ijk = stack_coordinates(stack_affine, affine, shape)
    inside = _inside(ijk, stack.shape)
    ijk = _clamped_slices(ijk, stack.shape[2])
    scores = np.stack([map_coordinates(m, ijk, order=1, mode="nearest")
                       for m in _per_class(stack, values)])
    out = np.asarray(values, np.uint8)[scores.argmax(axis=0)]
    out[~inside] = 0
    return out.reshape(tuple(shape))


def undo_slice_shifts(values: np.ndarray, stack_affine: np.ndarray, shifts_mm: np.ndarray,
                      order: int = 1) -> np.ndarray:
    """Move each slice's content back by its in-plane shift.

    Args:
        values: (X, Y, K) a field on the stack (signed distances, an image).
        stack_affine: the stack's affine (its in-plane pixel spacing converts mm).
        shifts_mm: (K, 2) per-slice shifts along voxel axes i, j in mm, in the
            ``truth.json`` convention (slice k shows at p the anatomy at p - s_k).
        order: spline order of the in-plane resampling (1: linear).

    Returns:
        (X, Y, K) float32: slice k's value at p is the input's at p + s_k (edge values
        extend past the field of view).
    """
    spacing = np.linalg.norm(np.asarray(stack_affine)[:3, :2], axis=0)
    out = np.empty(np.shape(values), np.float32)
    for k, s in enumerate(np.asarray(shifts_mm, np.float64)):
        out[..., k] = shift_array(np.asarray(values[..., k], np.float32), -s / spacing,
                                  order=order, mode="nearest")
    return out


def signed_distance_2d(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed distance (mm) to the boundary of a 2D mask: negative inside, clipped to
    +-SDF_CLIP_MM; an empty mask is +SDF_CLIP_MM everywhere, a full one -SDF_CLIP_MM."""
    if not mask.any():
        return np.full(mask.shape, SDF_CLIP_MM, np.float32)
    if mask.all():
        return np.full(mask.shape, -SDF_CLIP_MM, np.float32)
    outside = distance_transform_edt(~mask, sampling=spacing)
    inside = distance_transform_edt(mask, sampling=spacing)
    # half a pixel each side puts the zero level on the pixel edge, not on a pixel centre
    sdf = np.where(mask, -(inside - 0.5 * min(spacing)), outside - 0.5 * min(spacing))
    return np.clip(sdf, -SDF_CLIP_MM, SDF_CLIP_MM).astype(np.float32)


def sdf_labels(stack: np.ndarray, stack_affine: np.ndarray, affine: np.ndarray, shape,
               values=(0, 1, 2, 3), shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """Shape-based interpolation: per class and slice the in-plane signed distance,
    interpolated (trilinear) to the output points; the class of smallest distance.
    ``shifts_mm`` (K, 2): per-slice shifts undone on the distances first."""
    spacing = np.linalg.norm(np.asarray(stack_affine)[:3, :2], axis=0)
    ijk = stack_coordinates(stack_affine, affine, shape)
    inside = _inside(ijk, stack.shape)
    ijk = _clamped_slices(ijk, stack.shape[2])
    fields = []
    for v in values:
        mask = np.asarray(stack) == v
        sdf = np.stack([signed_distance_2d(mask[..., k], spacing)
                        for k in range(stack.shape[2])], axis=2)
        if shifts_mm is not None:
            sdf = undo_slice_shifts(sdf, stack_affine, shifts_mm)
        fields.append(map_coordinates(sdf, ijk, order=1, mode="nearest"))
    out = np.asarray(values, np.uint8)[np.stack(fields).argmin(axis=0)]
    out[~inside] = 0
    return out.reshape(tuple(shape))


def bspline_image(image: np.ndarray, stack_affine: np.ndarray, affine: np.ndarray, shape,
                  shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """Cubic B-spline interpolation of a stack image (SimpleITK ``sitkBSpline``), float32
    on the output grid; 0 outside the stack. ``shifts_mm`` (K, 2): per-slice shifts
    undone first (cubic in-plane)."""
    import SimpleITK as sitk

    if shifts_mm is not None:
        image = undo_slice_shifts(image, stack_affine, shifts_mm, order=3)

    def geometry(a):
        lps = LPS_TO_RAS @ np.asarray(a, np.float64)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        return lps[:3, 3].tolist(), spacing.tolist(), (lps[:3, :3] / spacing).ravel().tolist()

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(image, np.float32).T))
    origin, spacing, direction = geometry(stack_affine)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in shape])
    out_origin, out_spacing, out_direction = geometry(affine)
    resampler.SetOutputOrigin(out_origin)
    resampler.SetOutputSpacing(out_spacing)
    resampler.SetOutputDirection(out_direction)
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return np.ascontiguousarray(sitk.GetArrayFromImage(resampler.Execute(img)).T)
