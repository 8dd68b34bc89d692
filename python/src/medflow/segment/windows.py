"""Where sliding windows go: starts per axis, Gaussian weights, overlap, tiles of the plane.

Windows and weights match MONAI's ``sliding_window_inference`` (``mode="gaussian"``): same
scan interval, same symmetric zero padding for axes shorter than the patch, same clamped
Gaussian importance map, so streaming inference can be compared with it voxel for voxel.
"""

from __future__ import annotations

import math

import torch

#: Windows per volume (per frame and stage) above which the default overlap is lowered
#: (0.5 -> 0.25 -> 0.125): 8^3 windows of a 96^3 patch already cover a 640^3 volume 1.7x.
MAX_WINDOWS = 512
OVERLAP_STEPS = (0.25, 0.125)


def gaussian_importance(patch, sigma_scale: float = 0.125) -> torch.Tensor:
    """The importance map MONAI's ``compute_importance_map(mode="gaussian")`` builds."""
    out = None
    for n in patch:
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float)
        g = torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2))
        out = g if out is None else out.unsqueeze(-1) * g
    return out.clamp(min=max(out.min().item(), 1e-3))


def patch_starts(n: int, p: int, overlap: float) -> list[int]:
    """Window starts along one axis (MONAI's dense_patch_slices on the padded axis)."""
    if n <= p:
        return [-((p - n) // 2)]
    step = max(1, int(p * (1 - overlap)))
    count = next(d for d in range(math.ceil(n / step)) if d * step + p >= n) + 1
    return [min(i * step, n - p) for i in range(count)]


def window_starts(shape, patch, overlap: float) -> list[list[int]]:
    """:func:`patch_starts` for each of the three axes."""
    return [patch_starts(int(n), int(p), overlap) for n, p in zip(shape, patch)]


def n_windows(shape, patch, overlap: float) -> int:
    return math.prod(len(s) for s in window_starts(shape, patch, overlap))


def auto_overlap(shape, patch, overlap: float, max_windows: int = MAX_WINDOWS) -> float:
    """The model's ``overlap``, lowered to 0.25, then 0.125, while a volume of ``shape``
    would need more than ``max_windows`` windows (large volumes: the window count, and so
    the time, stays near the volume's own size instead of 8x it at 0.5).

    Example:
        >>> auto_overlap((640, 640, 640), (96, 96, 96), 0.5)
        0.125
        >>> auto_overlap((184, 160, 11), (96, 96, 16), 0.5)
        0.5
    """
    for o in (overlap, *[x for x in OVERLAP_STEPS if x < overlap]):
        if n_windows(shape, patch, o) <= max_windows:
            return o
    return min(overlap, OVERLAP_STEPS[-1])


Region = tuple[tuple[int, int], tuple[int, int]]   # ((x0, x1), (y0, y1)), full z


def covering(starts, p: int, lo: int, hi: int) -> list[int]:
    """Window starts along one axis whose window ``[s, s + p)`` meets ``[lo, hi)``."""
    return [s for s in starts if s < hi and s + p > lo]


def split_regions(shape, tiles) -> list[Region]:
    """The (X, Y) plane cut into ``tiles[0] x tiles[1]`` near-equal regions."""
    def cuts(n: int, k: int):
        edges = sorted({round(i * n / k) for i in range(k + 1)})
        return list(zip(edges[:-1], edges[1:]))
    return [(xr, yr) for xr in cuts(shape[0], tiles[0]) for yr in cuts(shape[1], tiles[1])]


def region_windows(starts, patch, region: Region) -> int:
    """Windows one region runs: those meeting it, in every z row."""
    return (len(covering(starts[0], patch[0], *region[0]))
            * len(covering(starts[1], patch[1], *region[1])) * len(starts[2]))
