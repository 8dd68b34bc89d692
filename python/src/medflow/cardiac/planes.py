"""Whether a long-axis segmentation can be used with a short-axis stack: the one rule
``super-resolve`` and ``estimate-motion-mesh`` both apply to their long-axis views.

A long-axis plane (2- or 4-chamber) is useful only where it cuts the short-axis stack: it
must not be parallel to the short-axis slices (a short-axis slice put in a long-axis
column), and some of its heart labels must lie inside the stack's field of view (a plane
from another subject or session, or with a wrong origin, does not).
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine

from medflow.cardiac.labels import LV_BLOOD, LV_MYO, RV_BLOOD

#: Planes whose normals are closer than this (|cos|, about 26 degrees) are parallel. Long-
#: axis planes stand near perpendicular to the short-axis slices (|cos| about 0).
PARALLEL_COS = 0.9
#: The labels a long-axis plane must show inside the stack (atria, 4-5, lie above it).
HEART_LABELS = (LV_BLOOD, LV_MYO, RV_BLOOD)


def long_axis_problem(la_labels: np.ndarray, la_affine: np.ndarray, sa_shape,
                      sa_affine: np.ndarray) -> str | None:
    """Why a long-axis label map cannot be used with a short-axis stack, or None.

    Args:
        la_labels: (X, Y, Z) or (X, Y, Z, T) labels of the long-axis view, its plane
            normal along the third voxel axis (Z = 1 for one plane).
        la_affine: its (4, 4) voxel -> world (mm) affine.
        sa_shape: (X, Y, K[, T]) shape of the short-axis stack, slices along the third axis.
        sa_affine: the stack's (4, 4) affine.

    Returns:
        None when the plane crosses the stack; otherwise the reason, one phrase that names
        what is wrong ("is parallel to the short-axis slices ...", "does not cross the
        short-axis stack ...").

    Note:
        Labels of any frame count: the stack's field of view is fixed over the cycle.

    Example:
        >>> sa = np.diag([2.0, 2.0, 10.0, 1.0])
        >>> la = np.array([[2.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 2.0, 0, 10], [0, 0, 0, 1]])
        >>> long_axis_problem(np.ones((8, 8, 1), np.uint8), la, (8, 8, 4), sa) is None
        True
    """
    la_n = np.asarray(la_affine, np.float64)[:3, 2]
    sa_n = np.asarray(sa_affine, np.float64)[:3, 2]
    cos = abs(float(la_n @ sa_n)) / (np.linalg.norm(la_n) * np.linalg.norm(sa_n))
    if cos > PARALLEL_COS:
        return ("is parallel to the short-axis slices (a short-axis slice?): it does not "
                "cross the short-axis stack")
    data = np.asarray(la_labels)
    heart = np.isin(data, HEART_LABELS)
    if heart.ndim == 4:
        heart = heart.any(axis=3)
    ijk = np.argwhere(heart).astype(np.float64)
    if not len(ijk):
        return "holds no heart labels (1-3): it does not cross the short-axis stack"
    world = apply_affine(np.asarray(la_affine, np.float64), ijk)
    sa_ijk = apply_affine(np.linalg.inv(np.asarray(sa_affine, np.float64)), world)
    shape = np.asarray(tuple(sa_shape)[:3], np.float64)
    if not np.all((sa_ijk > -0.5) & (sa_ijk < shape - 0.5), axis=1).any():
        return ("does not cross the short-axis stack (none of its heart labels lies inside "
                "the stack's field of view)")
    return None
