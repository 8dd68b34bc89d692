"""The acquisition model: a high-resolution shape seen as thick slices with per-slice
in-plane shifts (the forward operator of the ``latent`` method and of the tests).

A slice pixel at world position p, in slice k with shift s[k], shows the anatomy at
``p - s[k]_i e_i - s[k]_j e_j`` (see :mod:`medflow.superres.geometry`), averaged over the
slice profile: ``planes`` points evenly spread across ``thickness_mm`` along the normal
(a box profile; thickness 0 is the centre plane, which is what a per-slice 2D
segmentation labels).
"""

from __future__ import annotations

import numpy as np
import torch


def plane_offsets(thickness_mm: float, planes: int = 3) -> np.ndarray:
    """Offsets (mm) along the normal of the points averaged for one pixel: the centres of
    ``planes`` equal parts of the slab, or [0] for thickness 0."""
    if thickness_mm <= 0 or planes <= 1:
        return np.zeros(1)
    return (np.arange(planes) + 0.5) / planes * thickness_mm - 0.5 * thickness_mm


def observed_points(points: torch.Tensor, slice_index: torch.Tensor, shifts: torch.Tensor,
                    units: torch.Tensor) -> torch.Tensor:
    """Where the anatomy shown at stack pixels (N, 3) comes from: ``p - s[k] @ units.T``.

    Args:
        points: (N, 3) world positions of the pixels (any origin), mm.
        slice_index: (N,) the slice of each pixel.
        shifts: (K, 2) per-slice shifts along the stack's voxel axes i, j, mm.
        units: (3, 2) unit vectors of the stack's voxel axes i and j.
    """
    return points - shifts[slice_index] @ units.T


def degrade(prob_at, points: torch.Tensor, slice_index: torch.Tensor, shifts: torch.Tensor,
            units: torch.Tensor, normal: torch.Tensor, thickness_mm: float = 0.0,
            planes: int = 3) -> torch.Tensor:
    """Class probabilities a stack would show, from a continuous shape.

    Args:
        prob_at: function world points (M, 3) -> class probabilities (M, C).
        points, slice_index, shifts, units: see :func:`observed_points`.
        normal: (3,) unit slice normal.
        thickness_mm, planes: the slice profile (:func:`plane_offsets`).

    Returns:
        (N, C) probabilities, the mean over the profile's planes.
    """
    source = observed_points(points, slice_index, shifts, units)
    out = None
    offsets = plane_offsets(thickness_mm, planes)
    for d in offsets:
        p = prob_at(source + float(d) * normal)
        out = p if out is None else out + p
    return out / len(offsets)
