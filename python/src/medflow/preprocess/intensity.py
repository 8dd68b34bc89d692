"""Intensity normalisation over all voxels (all frames of a 4D volume), in place on a
float32 copy when needed, with statistics accumulated frame by frame so no full-size
temporary is made (except for the percentile sort)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medflow.io.volume import Volume

METHODS = ("zscore", "percentile", "none")


def _blocks(data: np.ndarray, voxels: int = 1 << 22):
    """Views of about ``voxels`` voxels (whole frames, then slabs along the last axis)."""
    if data.ndim == 4:
        for t in range(data.shape[3]):
            yield from _blocks(data[..., t], voxels)
        return
    if data.ndim != 3:
        yield data
        return
    step = max(1, voxels // max(1, data.shape[0] * data.shape[1]))
    for k in range(0, data.shape[2], step):
        yield data[:, :, k:k + step]


def zscore(data: np.ndarray) -> dict:
    """Subtract the mean and divide by the standard deviation of all voxels, in place.

    Args:
        data: float array (3D or 4D; statistics are over every voxel of every frame).

    Returns:
        ``{"mean": m, "std": s}`` as used; a constant image gets ``std`` 0 and becomes 0.

    Example:
        >>> a = np.array([1.0, 2.0, 3.0], np.float32)
        >>> zscore(a)["std"] > 0, a.tolist()[1]
        (True, 0.0)
    """
    if data.dtype.kind != "f":
        raise TypeError("zscore works in place on a float array")
    n = data.size
    mean = sum(float(np.sum(f, dtype=np.float64)) for f in _blocks(data)) / n
    sq = 0.0
    for f in _blocks(data):
        d = f.astype(np.float64) - mean
        sq += float(np.dot(d.ravel(), d.ravel()))
    std = float(np.sqrt(sq / n))
    data -= data.dtype.type(mean)
    if std > 0:
        data /= data.dtype.type(std)
    return {"mean": mean, "std": std}


def percentile_scale(data: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> dict:
    """Clip to the ``lo``/``hi`` percentiles of all voxels and scale to [0, 1], in place.

    Args:
        data: float array (3D or 4D).
        lo, hi: percentiles in [0, 100], ``lo < hi``.

    Returns:
        ``{"low": value at lo, "high": value at hi}``; when they are equal the result is 0.

    Note:
        The exact percentiles need one sorted copy of the voxels (numpy's partition).

    Example:
        >>> a = np.arange(101, dtype=np.float32)
        >>> percentile_scale(a, 10, 90), float(a[50])
        ({'low': 10.0, 'high': 90.0}, 0.5)
    """
    if data.dtype.kind != "f":
        raise TypeError("percentile_scale works in place on a float array")
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
    low, high = (float(v) for v in np.percentile(data, [lo, hi]))
    np.clip(data, low, high, out=data)
    data -= data.dtype.type(low)
    if high > low:
        data /= data.dtype.type(high - low)
    return {"low": low, "high": high}


def normalise(vol: Volume, method: str = "zscore", percentiles: Sequence[float] = (1.0, 99.0),
              inplace: bool = False) -> tuple[Volume, dict]:
    """Normalise an image's intensities; labels are never normalised.

    Args:
        vol: an image Volume (3D or 4D).
        method: ``zscore``, ``percentile`` or ``none``.
        percentiles: ``(low, high)`` for ``percentile``.
        inplace: change ``vol.data`` itself when it is a writeable float32 array (saves a
            copy of the volume); otherwise a float32 copy is normalised.

    Returns:
        ``(volume, statistics)`` with the statistics used (mean/std or low/high).

    Example:
        >>> v = Volume(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
        >>> out, stats = normalise(v, "percentile", (0, 100))
        >>> out.data.dtype, float(out.data.max()), stats
        (dtype('float32'), 1.0, {'low': 0.0, 'high': 7.0})
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {METHODS}")
    if method == "none":
        return vol, {}
    if vol.kind == "label":
        raise ValueError("label maps are never normalised")
    data = vol.data
    if not (inplace and data.dtype == np.float32 and data.dtype.isnative
            and data.flags.writeable):
        data = np.array(data, dtype=np.float32, order="F")
    stats = zscore(data) if method == "zscore" else percentile_scale(data, *percentiles)
    return vol.with_data(data), stats
