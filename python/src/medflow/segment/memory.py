"""Memory of the cascade, estimated before it is spent: one training step (the planner fits
it to ``--memory-budget``) and one prediction (the tile layout fits it to ``--max-memory``).

Both count float32 tensors level by level (``sum over U-net levels of width x voxels``)
times how many such tensors are alive at the peak. The factors were measured on CPU (peak
RSS minus the interpreter; see benchmarks/segment/README.md); a GPU in bf16 needs less, so
the training estimate errs on the safe side there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import click

from medflow.segment.config import CascadeConfig, divisor_of
from medflow.segment.windows import (auto_overlap, covering, region_windows, split_regions,
                                     window_starts)

MiB, GiB = 2**20, 2**30
#: Python, NumPy, PyTorch and medflow loaded, before any tensor (measured 276-295 MB) ...
BASE_BYTES = 300 * MiB
#: ... and what the first convolutions add on CPU: oneDNN kernels, scratch, thread pools
#: (measured 90-130 MB, whatever the window).
RUNTIME_BYTES = 100 * MiB
#: float32 tensors alive per (width x voxels) of a U-net level: one training step
#: (decoder activations kept for backward, encoder blocks recomputed) ...
TRAIN_TENSORS = 14.0
#: ... and one inference window (in-place norms; skips held until their decoder level).
INFER_TENSORS = 4.0
#: Prediction memory the tile layout aims at when no --max-memory is given.
DEFAULT_TARGET = 2 * GiB
#: Stage-1 window (coarse voxels) for models planned before stage1_patch was recorded.
STAGE1_VOXELS = 96**3


def level_activations(channels, pools, voxels: float) -> float:
    """Sum over U-net levels of width x voxels at that level (floats)."""
    total, v = 0.0, float(voxels)
    for level, c in enumerate(channels):
        total += c * v
        if level < len(pools):
            v /= math.prod(pools[level])
    return total


def n_parameters(cfg: CascadeConfig) -> int:
    """Weights of the cascade, counted without allocating them (meta device)."""
    import torch

    from medflow.segment.cascade import Cascade

    with torch.device("meta"):
        return sum(p.numel() for p in Cascade(cfg).parameters())


def stage1_grid(cfg: CascadeConfig, shape) -> tuple[int, int, int]:
    """Stage-1 (coarse) grid of a full-resolution ``shape``."""
    return tuple(-(-int(n) // f) for n, f in zip(shape, cfg.stage1_factor))


def training_bytes(cfg: CascadeConfig, image_shape, patches: int = 2, copies: int = 1) -> int:
    """Peak memory (bytes) of one training step on an image of ``image_shape`` voxels:
    stage 2 on ``patches x copies`` patches (``copies`` = 2 for gin-ipa), stage 1 on the
    whole downsampled image, the image and its one-hot target (whole, on the device), and
    weights with gradients and two Adam moments."""
    c, f1 = cfg.n_classes, (cfg.channels1[0] if cfg.stages == 2 else 0)
    v2 = math.prod(cfg.patch)
    floats = patches * copies * (TRAIN_TENSORS * level_activations(cfg.channels2, cfg.pools2, v2)
                                 + (cfg.in_channels + 3 * c + 2 * f1) * v2)
    if cfg.stages == 2:
        low = [-(-n // d) * d for n, d in zip(stage1_grid(cfg, image_shape),
                                              divisor_of(cfg.pools1))]
        v1 = math.prod(low)
        floats += copies * (TRAIN_TENSORS * level_activations(cfg.channels1, cfg.pools1, v1)
                            + (cfg.in_channels + 2 * c) * v1)
    floats += 4 * n_parameters(cfg)
    return int(4 * floats) + image_bytes(cfg, image_shape, copies)


def image_bytes(cfg: CascadeConfig, image_shape, copies: int = 1) -> int:
    """A whole training image and its one-hot target on the device (no plan changes it)."""
    return int(4 * copies * (cfg.in_channels + cfg.n_classes) * math.prod(image_shape))


def stage1_window(cfg: CascadeConfig, low_shape) -> tuple[int, int, int] | None:
    """Stage-1 window for a coarse grid of ``low_shape``, or None when the grid fits in
    one (stage 1 then runs on it whole, exactly as in training)."""
    if cfg.stages != 2:
        return None
    div = divisor_of(cfg.pools1)
    if cfg.stage1_patch is not None:
        w = tuple(int(k) for k in cfg.stage1_patch)
    else:                                   # older models: a cube (in mm) of STAGE1_VOXELS
        sp = [s * f for s, f in zip(cfg.spacing, cfg.stage1_factor)]
        edge = (STAGE1_VOXELS * math.prod(sp)) ** (1 / 3)
        w = tuple(max(d, int(edge / s) // d * d) for s, d in zip(sp, div))
    w = tuple(min(k, -(-n // d) * d) for k, n, d in zip(w, low_shape, div))
    return None if all(n <= k for n, k in zip(low_shape, w)) else w


@dataclass(frozen=True)
class Layout:
    """How prediction covers one volume: window overlap of stage 2 and of stage 1, the
    stage-1 window (None: whole grid) and the tiles the (X, Y) plane is cut into."""

    overlap: float
    overlap1: float
    stage1_window: tuple[int, int, int] | None = None
    tiles: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class PredictCost:
    """Estimated peak of one prediction, bytes: ``fixed`` (interpreter, weights, one window
    of each stage), ``streaming`` (accumulators and stage-1 buffer of one tile, input
    pages of one row), ``in_memory`` (whole-volume arrays: .nii.gz outputs, resampling)."""

    fixed: int
    streaming: int
    in_memory: int = 0

    @property
    def total(self) -> int:
        return self.fixed + self.streaming + self.in_memory


def fixed_bytes(cfg: CascadeConfig, window1, low_shape, draws: int = 1) -> int:
    """Interpreter, weights, and the larger of one stage-2 and one stage-1 window."""
    c, f1 = cfg.n_classes, (cfg.channels1[0] if cfg.stages == 2 else 0)
    v2 = math.prod(cfg.patch)
    w2 = (INFER_TENSORS * level_activations(cfg.channels2, cfg.pools2, v2)
          + (2 * cfg.in_channels + 3 * (c + f1) + 4 * c) * v2) * 4 + (v2 * draws if draws > 1
                                                                       else 0)
    w1 = 0.0
    if cfg.stages == 2:
        v1 = math.prod(window1 or [-(-n // d) * d for n, d in zip(low_shape,
                                                                   divisor_of(cfg.pools1))])
        w1 = 4 * (INFER_TENSORS * level_activations(cfg.channels1, cfg.pools1, v1)
                  + (cfg.in_channels * (1 + math.prod(cfg.stage1_factor)) + 3 * (c + f1)) * v1)
        if window1 is None:                 # the whole coarse grid stays for every window
            w1 += 4 * (c + f1) * math.prod(low_shape)
    return int(BASE_BYTES + RUNTIME_BYTES + 4 * n_parameters(cfg) + max(w2, w1))


def streaming_bytes(cfg: CascadeConfig, region, shape, starts, window1, in_itemsize: int,
                    draws: int = 1, chunk: int = 8) -> int:
    """One region's per-slice accumulators (one patch deep plus finalised chunks), its
    stage-1 accumulators and coarse slices, and the input pages one window row touches."""
    c, f1 = cfg.n_classes, (cfg.channels1[0] if cfg.stages == 2 else 0)
    (x0, x1), (y0, y1) = region
    px, py, pz = cfg.patch
    area = (x1 - x0) * (y1 - y0)
    floats = area * ((pz + 2 * chunk) * c + ((pz + chunk) if draws > 1 else 0))
    ext = []                                # full-res extent the region's windows read
    for a, (lo, hi) in enumerate(region):
        got = covering(starts[a], cfg.patch[a], lo, hi)
        ext.append(min(shape[a], max(got) + cfg.patch[a]) - max(0, min(got)))
    if window1 is not None:
        f = cfg.stage1_factor
        cx, cy = (-(-e // k) + 4 for e, k in zip(ext, f))
        floats += (c + f1) * cx * cy * (window1[2] + -(-pz // f[2]) + 4 + 2 * chunk)
        depth = pz + window1[2] * f[2]
    else:
        depth = pz
    pages = in_itemsize * cfg.in_channels * ext[0] * ext[1] * min(shape[2], depth)
    return int(4 * floats + pages)


def plan_layout(cfg: CascadeConfig, shape, *, in_itemsize: int = 4, draws: int = 1,
                in_memory: int = 0, overlap: float | None = None,
                target: int | None = None) -> tuple[Layout, PredictCost]:
    """Overlaps and the fewest tiles whose estimated peak fits ``target`` (bytes).

    Args:
        shape: one frame's (X, Y, Z) on the model's grid.
        in_itemsize: bytes per input voxel (memory-mapped pages one row touches).
        draws: TTA flips x MC draws per window.
        in_memory: bytes of whole-volume arrays the caller holds (outputs, resampling).
        overlap: an explicit overlap for both stages; None chooses by
            :func:`windows.auto_overlap`.
        target: the memory to fit; None aims at ``DEFAULT_TARGET``.

    Returns:
        (layout, cost); the cost may exceed ``target`` when even one-window tiles do not
        fit (the caller decides whether to refuse: :func:`check_limit`).
    """
    low = stage1_grid(cfg, shape)
    window1 = stage1_window(cfg, low)
    o2 = overlap if overlap is not None else auto_overlap(shape, cfg.patch, cfg.overlap)
    o1 = (overlap if overlap is not None else
          auto_overlap(low, window1, cfg.overlap) if window1 else cfg.overlap)
    starts = window_starts(shape, cfg.patch, o2)
    fixed = fixed_bytes(cfg, window1, low, draws)
    target = DEFAULT_TARGET if target is None else target
    tiles, best = (1, 1), None
    while True:
        stream = max(streaming_bytes(cfg, r, shape, starts, window1, in_itemsize, draws)
                     for r in split_regions(shape, tiles))
        best = (Layout(o2, o1, window1, tiles), PredictCost(fixed, stream, in_memory))
        extent = [-(-n // t) for n, t in zip(shape, tiles)]
        if best[1].total <= target or all(e <= p for e, p in zip(extent, cfg.patch)):
            return best
        a = 0 if extent[0] / cfg.patch[0] >= extent[1] / cfg.patch[1] else 1
        tiles = (tiles[0] + (a == 0), tiles[1] + (a == 1))


def windows_run(cfg: CascadeConfig, shape, layout: Layout) -> int:
    """Stage-2 windows one frame runs under ``layout`` (straddling windows once per tile)."""
    starts = window_starts(shape, cfg.patch, layout.overlap)
    return sum(region_windows(starts, cfg.patch, r) for r in split_regions(shape, layout.tiles))


def check_limit(cost: PredictCost, limit: int | None, path=None) -> None:
    """Refuse a prediction whose estimate exceeds ``--max-memory`` before it starts: exit 2
    when the model and options alone do not fit (even one-window tiles), 65 when the input
    needs whole-volume arrays (.nii.gz outputs, resampling) that do not."""
    from medflow.errors import InvalidDataError

    if limit is None or cost.total <= limit:
        return
    need = f"about {gib(cost.total)} (model and one window {gib(cost.fixed)}, " \
           f"streaming {gib(cost.streaming)}, whole-volume arrays {gib(cost.in_memory)})"
    if cost.fixed + cost.streaming > limit:
        raise click.BadParameter(f"{gib(limit)} is less than this model needs: {need}",
                                 param_hint="--max-memory")
    raise InvalidDataError(f"needs {need}, more than --max-memory {gib(limit)}; write .nii "
                           "outputs (memory-mapped) or resample the input to the model's "
                           "spacing first", path)


def gib(n: float) -> str:
    """Bytes for people: ``1.85 GiB``, ``300 MiB``."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"
