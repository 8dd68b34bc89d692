"""The classical peer: slice-wise 2D B-spline registration of the short-axis cine with
SimpleITK, propagating the ED mesh's points, as ukbb_cardiac propagates its ED contours
with MIRTK (free-form deformation, sum of squared differences, per slice; no through-
plane motion: a slice-wise method cannot see it).

Given the same ED mesh as ours (our fit's frame 0), each vertex is moved in-plane by the
registration of its nearest short-axis slice from ED to frame t.
"""

from __future__ import annotations

import numpy as np


CONTROL_SPACING_MM = 20.0
MARGIN_MM = 20.0


def register_slice(fixed: np.ndarray, moving: np.ndarray, spacing):
    """B-spline transform (SimpleITK) mapping fixed (ED) physical points to moving (t).

    Args:
        fixed, moving: (X, Y) images of one slice (cropped to the heart); spacing: mm.
    The control points lie 20 mm apart (ukbb_cardiac's MIRTK refines to 8 mm with
    bending-energy regularisation; without it, 10 mm here over-fits the uniform
    myocardium: 3.0 vs 2.2 mm in-plane error on a mid slice of sub-000).
    """
    import SimpleITK as sitk

    def img(a):
        im = sitk.GetImageFromArray(np.ascontiguousarray(a.T, np.float32))
        im.SetSpacing(tuple(float(s) for s in spacing))
        return im

    f, m = img(fixed), img(moving)
    mesh = [max(2, int(round(n * sp / CONTROL_SPACING_MM)))
            for n, sp in zip(fixed.shape, spacing)]
    tx = sitk.BSplineTransformInitializer(f, mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=100)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return tx


def propagate(sa_image: np.ndarray, affine: np.ndarray, ed_vertices: np.ndarray,
              frame: int, ed_frame: int = 0) -> np.ndarray:
    """ED vertices (V, 3, world mm) moved to ``frame`` by slice-wise registration.

    Args:
        sa_image: (X, Y, Z, T) short-axis cine intensities; affine: its 4x4 voxel->world.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    inv = np.linalg.inv(affine)
    ijk = ed_vertices @ inv[:3, :3].T + inv[:3, 3]
    nz = sa_image.shape[2]
    k_near = np.clip(np.rint(ijk[:, 2]).astype(int), 0, nz - 1)
    margin = np.ceil(MARGIN_MM / spacing[:2]).astype(int)
    lo = np.maximum(np.floor(ijk[:, :2].min(0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(ijk[:, :2].max(0)).astype(int) + margin + 1, sa_image.shape[:2])
    crop = sa_image[lo[0]:hi[0], lo[1]:hi[1]]
    out = ed_vertices.copy()
    for k in np.unique(k_near):
        sel = k_near == k
        tx = register_slice(crop[:, :, k, ed_frame], crop[:, :, k, frame], spacing[:2])
        for i in np.flatnonzero(sel):
            p = ((ijk[i, 0] - lo[0]) * spacing[0], (ijk[i, 1] - lo[1]) * spacing[1])
            q = tx.TransformPoint(p)
            d_ij = (np.asarray(q) - np.asarray(p)) / spacing[:2]
            out[i] = ed_vertices[i] + affine[:3, :2] @ d_ij
    return out
