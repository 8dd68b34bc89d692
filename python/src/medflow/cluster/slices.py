"""From a volume to the small 2D slices the encoder sees.

A series (3D stack or 3D+time cine) is cut across its slice axis: the voxel axis with the
largest spacing (thick-slice stacks), ties going to the axis with the fewest voxels, then
the last one. Slices come from the central part of the stack (the ends of a stack show
little: apex caps, skull tops), frames are spread over the cycle. Each slice is scaled by
its own 1st-99th percentiles to [0, 1], zero-padded to a square and resized to 2 SIZE x
2 SIZE: intensity scale, matrix size and pixel spacing are thereby removed, and nothing from
the header is kept (the spacing only chooses the slice axis).

The encoder sees two scales of each slice as two channels of SIZE x SIZE
(:func:`two_scale`): the whole field of view at half resolution, and its central half at
full resolution. Scanners centre the field of view on the organ, and what tells views
apart (the heart's chambers: a few centimetres in a 40 cm chest) is only a few pixels wide
in a whole-field-of-view thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Side of the encoder's input (pixels); slices are stored at twice this.
SIZE = 64
#: Fraction of the stack (from its centre) slices are drawn from.
CENTRAL = 0.7


@dataclass(frozen=True)
class SliceIndex:
    """Where a slice lies in its series: position along the slice axis and frame."""

    position: int  # index in the voxel array along the slice axis
    frame: int     # cine frame (0 for 3D)
    rank: int      # order of this position among the positions drawn (0, 1, ...)


def slice_axis(shape: tuple[int, ...], spacing: tuple[float, ...]) -> int:
    """The voxel axis (0-2) to cut across: largest spacing, then fewest voxels, then last.

    Example:
        >>> slice_axis((184, 160, 11), (1.8, 1.8, 10.0))
        2
    """
    spacing = tuple(round(float(s), 3) for s in spacing[:3])
    return max(range(3), key=lambda a: (spacing[a], -shape[a], a))


def sample_indices(n_positions: int, n_frames: int, positions: int, frames: int
                   ) -> list[SliceIndex]:
    """Evenly spread (position, frame) pairs: up to ``positions`` x ``frames`` of them.

    Args:
        n_positions: slices along the slice axis.
        n_frames: cine frames (1 for 3D).
        positions: how many positions to draw at most (from the central CENTRAL part).
        frames: how many frames per position at most (spread over the cycle); a cine with
            fewer positions than ``positions`` gets more frames, up to the same total
            (a single-slice long-axis cine gives ``positions x frames`` frames).

    Returns:
        The slices, position-major, deterministic (no randomness: the same series gives
        the same slices in train and assign).
    """
    lo = int(np.floor(n_positions * (1 - CENTRAL) / 2))
    hi = max(lo + 1, n_positions - lo)
    k = min(positions, hi - lo)
    pos = np.unique(np.round(np.linspace(lo, hi - 1, k)).astype(int)) if k > 1 else \
        np.array([(lo + hi - 1) // 2])
    nf = min(max(frames, (positions * frames) // len(pos)), n_frames)
    frm = np.unique(np.round(np.linspace(0, n_frames - 1, nf)).astype(int)) if nf > 1 else \
        np.array([0])
    return [SliceIndex(int(p), int(f), r) for r, p in enumerate(pos) for f in frm]


def normalise_slice(plane: np.ndarray) -> np.ndarray:
    """Scale a 2D slice by its 1st and 99th percentiles to [0, 1] (float32, clipped).

    Note:
        A constant slice becomes all zeros. Percentiles come from at most ~4096 evenly
        strided pixels, so a 512 x 512 CT slice costs no more than a 64 x 64 one.
    """
    plane = np.asarray(plane, np.float32)
    step = max(1, int(np.sqrt(plane.size / 4096)))
    lo, hi = np.percentile(plane[::step, ::step], (1, 99))
    if not hi > lo:
        return np.zeros_like(plane)
    return np.clip((plane - lo) / (hi - lo), 0.0, 1.0)


def square_resize(plane: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Zero-pad a 2D array to a square (centred) and resize it to ``size`` x ``size``.

    Uses area averaging when shrinking (no aliasing of fine structure such as microCT
    vessels) and bilinear interpolation when enlarging.
    """
    import torch
    import torch.nn.functional as F

    h, w = plane.shape
    n = max(h, w)
    square = np.zeros((n, n), np.float32)
    square[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = plane
    t = torch.from_numpy(square)[None, None]
    mode = "area" if n >= size else "bilinear"
    out = F.interpolate(t, size=(size, size), mode=mode,
                        **({} if mode == "area" else {"align_corners": False}))
    return out[0, 0].numpy()


def series_slices(data: np.ndarray, spacing: tuple[float, ...], positions: int = 8,
                  frames: int = 2, size: int = 2 * SIZE
                  ) -> tuple[np.ndarray, list[SliceIndex]]:
    """The encoder's slices of one series.

    Args:
        data: (X, Y), (X, Y, Z) or (X, Y, Z, T) voxels (a memory map is fine: only the chosen
            slices are read).
        spacing: voxel spacing in mm (chooses the slice axis only).
        positions, frames: at most this many positions and frames per position.
        size: output side in pixels (twice the encoder's input: see :func:`two_scale`).

    Returns:
        (slices (n, size, size) float32 in [0, 1], their :class:`SliceIndex` list).
    """
    if data.ndim == 2:  # a single 2D image: one slice
        data = data[..., None]
    axis = slice_axis(data.shape[:3], spacing)
    n_frames = data.shape[3] if data.ndim == 4 else 1
    index = sample_indices(data.shape[axis], n_frames, positions, frames)
    out = np.empty((len(index), size, size), np.float32)
    for i, s in enumerate(index):
        plane = np.take(data, s.position, axis=axis)
        plane = plane[..., s.frame] if data.ndim == 4 else plane
        out[i] = square_resize(normalise_slice(plane), size)
    return out, index


def two_scale(x):
    """(B, 1, 2S, 2S) stored slices -> (B, 2, S, S) encoder input: the whole slice at half
    resolution (channel 0) and its central half at full resolution (channel 1)."""
    import torch
    import torch.nn.functional as F

    s = x.shape[-1] // 2
    whole = F.avg_pool2d(x, 2)                                   # (B, 1, S, S)
    centre = x[..., s // 2:s // 2 + s, s // 2:s // 2 + s]        # (B, 1, S, S)
    return torch.cat([whole, centre], dim=1)
