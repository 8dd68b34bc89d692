"""Cropping: to a fixed size around the centre (padding where smaller), or to the bounding
box of a mask grown by a margin in millimetres. Both move the affine's origin so every
kept voxel stays at its world position."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from medflow.io.volume import Volume
from medflow.preprocess.resample import resample_to_grid, same_grid


def _shifted(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return out


def _window(vol: Volume, start: Sequence[int], size: Sequence[int], fill: float) -> Volume:
    """Voxels [start, start + size) of each axis; outside the volume becomes ``fill``."""
    n = vol.shape3
    lo = [max(0, s) for s in start]
    hi = [min(ni, s + m) for ni, s, m in zip(n, start, size)]
    src = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine = _shifted(vol.affine, start)
    if all(s >= 0 for s in start) and all(s + m <= ni for ni, s, m in zip(n, start, size)):
        return vol.with_data(vol.data[src], affine)  # a view: no copy
    out = np.full(tuple(size) + vol.data.shape[3:], fill, dtype=vol.data.dtype, order="F")
    dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    if all(b > a for a, b in zip(lo, hi)):
        out[dst] = vol.data[src]
    return vol.with_data(out, affine)


def crop_or_pad(vol: Volume, size: Sequence[int | None], fill: float = 0.0) -> Volume:
    """Crop (or pad) to ``size`` voxels around the centre of the volume.

    Args:
        vol: 3D or 4D volume (time untouched).
        size: output size per voxel axis; ``None`` keeps that axis.
        fill: value of padded voxels where the volume is smaller than ``size``.

    Returns:
        The cropped/padded Volume (a view of the input when nothing is padded).

    Note:
        The window starts at ``floor((n - size) / 2)``, so with an odd difference the
        extra voxel is cut from (or padded at) the end of the axis.

    Example:
        >>> v = Volume(np.ones((10, 10, 3)), np.eye(4))
        >>> crop_or_pad(v, (6, 14, None)).shape3, crop_or_pad(v, (6, 14, None)).origin.tolist()
        ((6, 14, 3), [2.0, -2.0, 0.0])
    """
    size = [n if m is None else int(m) for n, m in zip(vol.shape3, size)]
    if any(m < 1 for m in size):
        raise ValueError(f"crop size must be at least 1 voxel, got {size}")
    start = [(n - m) // 2 for n, m in zip(vol.shape3, size)]
    return _window(vol, start, size, fill)


def mask_bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Per axis ``(first, last + 1)`` of the voxels > 0 of a 3D mask, or None if empty."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask > 0, axis=others))
        if hit.size == 0:
            return None
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def crop_to_mask(vol: Volume, mask: Volume, margin_mm: float = 0.0) -> Volume:
    """Crop to the bounding box of ``mask > 0`` grown by ``margin_mm`` on every side.

    Args:
        vol: 3D or 4D volume.
        mask: 3D volume; resampled by nearest neighbour onto ``vol``'s grid first when it
            is not on it.
        margin_mm: margin in millimetres; per axis ``ceil(margin / spacing)`` voxels.

    Returns:
        The cropped Volume (a view of the input), never larger than the input.

    Note:
        Raises ValueError when the mask has no voxel > 0 inside the volume's field of view.

    Example:
        >>> v = Volume(np.zeros((10, 10, 10)), np.eye(4))
        >>> m = v.with_data(np.pad(np.ones((2, 2, 2)), 4), kind="label")
        >>> crop_to_mask(v, m, margin_mm=1).shape3
        (4, 4, 4)
    """
    if margin_mm < 0:
        raise ValueError(f"margin must be >= 0 mm, got {margin_mm}")
    if mask.data.ndim != 3:
        raise ValueError(f"the crop mask must be 3D, got shape {list(mask.data.shape)}")
    if not same_grid(mask.shape3, mask.affine, vol.shape3, vol.affine):
        mask = resample_to_grid(mask.with_data(mask.data, kind="label"), vol.shape3, vol.affine)
    box = mask_bounding_box(mask.data)
    if box is None:
        raise ValueError("the crop mask has no voxel > 0 inside the image's field of view")
    grow = [math.ceil(margin_mm / s - 1e-6) for s in vol.spacing]  # float32 headers
    start = [max(0, a - g) for (a, _), g in zip(box, grow)]
    stop = [min(n, b + g) for (_, b), g, n in zip(box, grow, vol.shape3)]
    return _window(vol, start, [b - a for a, b in zip(start, stop)], 0.0)
