"""Streaming sliding-window inference of the cascade, bounded by construction.

The memory promise: neither the (classes x volume) probabilities nor the stage-1 output of
a large volume is ever held. Stage 2's windows are visited row by row in increasing z (the
slowest axis of a NIfTI file, so slabs are contiguous on disk) and stitched into per-slice
accumulators at most one patch deep (:mod:`stitch`); stage 1 runs on windows of the size
it was trained on, lazily, just ahead of stage 2. When one (X, Y) plane of that is more
than the memory target, the plane is cut into tiles (:func:`memory.plan_layout`), each
predicted exactly as in the whole volume. Peak memory follows the patch and the tile, not
the volume; the input's and output's memory-mapped pages are dropped row by row.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from medflow.io.mapped import release_pages
from medflow.segment.cascade import Cascade, upsample_region
from medflow.segment.memory import Layout, plan_layout, stage1_grid
from medflow.segment.stitch import Stage1Context, stitch_slabs
from medflow.segment.unet import autocast, channels_last
from medflow.segment.windows import (gaussian_importance, patch_starts,  # noqa: F401 (API)
                                     split_regions, window_starts)

FLIPS = [(), (0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_freed_memory(threshold: int = 4 << 20) -> bool:
    """Ask glibc to serve allocations above ``threshold`` bytes by mmap, so the many
    patch-sized temporaries go back to the OS when freed instead of fragmenting the heap
    (glibc otherwise raises its threshold to 32 MiB after the first large free, and peak
    RSS drifts upwards patch after patch). Costs a few percent of time. Returns False
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


class ArraySource:
    """Normalised, zero-padded boxes of a (possibly memory-mapped) volume.

    Args:
        channels: one 3D array-like per channel (views into a file are fine).
        stats: per channel (low, high, mean, std), see :func:`data.robust_stats`.
    """

    def __init__(self, channels, stats):
        self.channels, self.stats = list(channels), list(stats)
        self.shape = tuple(int(s) for s in self.channels[0].shape)

    def read(self, start, size) -> torch.Tensor:
        """(C, *size) float32; voxels outside the volume are 0 (the normalised mean)."""
        out = np.zeros((len(self.channels), *size), np.float32)
        src = tuple(slice(max(s, 0), min(s + k, n)) for s, k, n in zip(start, size, self.shape))
        dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
        for c, (arr, (lo, hi, mean, std)) in enumerate(zip(self.channels, self.stats)):
            block = np.asarray(arr[src], dtype=np.float32)
            np.clip(block, lo, hi, out=block)
            out[(c, *dst)] = (block - np.float32(mean)) / np.float32(std)
        return torch.from_numpy(out)

    def release(self) -> None:
        """Drop the memory-mapped pages read so far from resident memory."""
        for arr in self.channels:
            release_pages(arr)


def predict_patch(model: Cascade, src: ArraySource, context, start, tta: int = 1, mc: int = 1,
                  device: str = "cpu", calibrator=None, refine: bool = False):
    """Mean class probabilities (C, *patch) of one window over its TTA flips x MC-dropout
    draws, and the fraction of draws whose argmax disagrees with the mean's (*patch; None
    for a single draw). Draws are summed as they come, never stacked.

    Args:
        context: ``start -> (probs_up, feats_up)``, the stage-1 outputs upsampled onto the
            window (:class:`stitch.Stage1Context`); None for a single-stage model.
        calibrator: a :class:`calibration.Calibrator` applied to every draw's logits (None:
            the network's own probabilities).
        refine: pass every draw's probabilities through the model's shape-correcting
            refiner (``--cooperative`` models, :mod:`segment.cooperative`): the mean, the
            disagreement and hence every output are the refined ones.
    """
    patch = model.cfg.patch
    x = src.read(start, patch)[None].to(device)
    probs_up, feats_up = (None, None) if context is None else context(start)
    draws = list(itertools.product(FLIPS[:max(1, tta)], range(max(1, mc))))
    total, votes = None, []
    for flips, _ in draws:
        dims = [d + 2 for d in flips]
        fx = channels_last(x.flip(dims) if dims else x)
        fp = probs_up.flip(dims) if dims and probs_up is not None else probs_up
        ff = feats_up.flip(dims) if dims and feats_up is not None else feats_up
        with autocast(device):
            logits = model.forward_stage2(fx, fp, ff)
            if calibrator is not None:   # z / T; local: T from the perturbed draws too
                logits = calibrator.apply(
                    logits, lambda xp, fp=fp, ff=ff: model.forward_stage2(xp, fp, ff), fx)
        del fx, fp, ff
        logits = logits.flip(dims) if dims else logits
        probs = torch.softmax(logits.float(), dim=1)                   # (1, C, *patch)
        del logits
        if refine:
            with autocast(device):
                probs = torch.softmax(model.refiner(probs).float(), dim=1)
        probs = probs[0].cpu()                                         # (C, *patch)
        total = probs if total is None else total.add_(probs)
        if len(draws) > 1:
            votes.append(probs.argmax(0).to(torch.uint8))
    mean = total.div_(len(draws))
    if len(draws) == 1:
        return mean, None
    top = mean.argmax(0).to(torch.uint8)
    agree = sum((v == top).float() for v in votes) / len(votes)
    return mean, 1.0 - agree


@torch.no_grad()
def predict_regions(model: Cascade, src: ArraySource, on_box, layout: Layout | None = None,
                    tta: int = 1, mc: int = 1, device: str = "cpu", progress=None,
                    chunk: int = 8, calibrator=None, refine: bool = False) -> dict:
    """Predict ``src`` tile by tile, calling ``on_box(box, probs, disagreement)`` for each
    finalised z-slab of each tile (``box`` = (x slice, y slice, z slice) of the volume;
    probs (C, *box sizes) float32, disagreement (*box sizes) or None).

    Args:
        model: the cascade in eval mode (MC dropout switches its dropout layers on).
        layout: overlaps, stage-1 window and tiles (default: :func:`memory.plan_layout`).
        tta / mc: flips / dropout draws per window (1 = off).
        progress: optional callable advanced by one per stage-2 window.
        calibrator / refine: see :func:`predict_patch`.

    Returns:
        facts for the sidecar: windows run per stage, tiles, overlaps.
    """
    cfg = model.cfg
    layout = layout or plan_layout(cfg, src.shape)[0]
    model.to(memory_format=torch.channels_last_3d)
    starts = window_starts(src.shape, cfg.patch, layout.overlap)
    weight = gaussian_importance(cfg.patch, cfg.sigma_scale)
    window1 = layout.stage1_window
    starts1 = (window_starts(stage1_grid(cfg, src.shape), window1, layout.overlap1)
               if window1 else None)
    regions = split_regions(src.shape, layout.tiles)
    counts = {"windows": 0, "stage1_windows": 0}
    shared = None
    for region in regions:
        ctx = None
        if model.stage1 is not None:
            ctx = Stage1Context(model, src, region, starts, window1, starts1, device, chunk,
                                shared)
            counts["stage1_windows"] += ctx.windows if shared is None else 0
            shared = ctx if window1 is None else None

        def one(start, ctx=ctx):
            counts["windows"] += 1
            if progress:
                progress(1)
            return predict_patch(model, src, ctx, start, tta, mc, device, calibrator, refine)

        for z0, z1, probs, dis in stitch_slabs(one, starts, cfg.patch, weight, region,
                                               src.shape[2], cfg.n_classes, chunk,
                                               src.release):
            on_box((slice(*region[0]), slice(*region[1]), slice(z0, z1)), probs, dis)
        if ctx is not None and window1 is not None:
            counts["stage1_windows"] += ctx.windows
    src.release()
    return {**counts, "tiles": len(regions), "overlap": layout.overlap,
            "stage1_overlap": layout.overlap1 if window1 else None,
            "stage1_window": list(window1) if window1 else None}


def stream_predict(model: Cascade, src: ArraySource, on_slab, tta: int = 1, mc: int = 1,
                   device: str = "cpu", progress=None, chunk: int = 8,
                   layout: Layout | None = None, refine: bool = False) -> dict:
    """:func:`predict_regions` on whole (X, Y) planes: ``on_slab(z0, z1, probs, disagreement)``
    receives probs (C, X, Y, z1 - z0) for finalised z-ranges, in order, covering 0..Z once.
    """
    layout = layout or plan_layout(model.cfg, src.shape, target=2**62)[0]
    if layout.tiles != (1, 1):
        raise ValueError("stream_predict hands on whole planes: use predict_regions for tiles")
    return predict_regions(model, src, lambda box, p, d: on_slab(box[2].start, box[2].stop,
                                                                 p, d),
                           layout, tta, mc, device, progress, chunk, refine=refine)


@torch.no_grad()
def stage1_outputs(model: Cascade, src: ArraySource, device: str = "cpu",
                   layout: Layout | None = None):
    """Stage-1 probabilities and features on the whole coarse grid (1, C + F, x, y, z), as
    streaming inference computes them (whole, or windowed for large inputs); None for a
    single-stage model. For references and the MONAI comparison: it holds the whole grid."""
    if model.stage1 is None:
        return None
    layout = layout or plan_layout(model.cfg, src.shape, target=2**62)[0]
    window1 = layout.stage1_window
    low = stage1_grid(model.cfg, src.shape)
    starts1 = window_starts(low, window1, layout.overlap1) if window1 else None
    starts2 = window_starts(src.shape, model.cfg.patch, layout.overlap)
    full = ((0, src.shape[0]), (0, src.shape[1]))
    ctx = Stage1Context(model, src, full, starts2, window1, starts1, device)
    if ctx.whole:
        return ctx.slabs[0][2][None]
    return torch.cat([values for _, _, values, _ in ctx._gen], dim=-1)[None]


@torch.no_grad()
def stitch_in_memory(model: Cascade, src: ArraySource, tta: int = 1, mc: int = 1,
                     device: str = "cpu", layout: Layout | None = None) -> torch.Tensor:
    """Reference: the same windows accumulated into a whole-volume (C, X, Y, Z) array."""
    cfg = model.cfg
    layout = layout or plan_layout(cfg, src.shape, target=2**62)[0]
    model.to(memory_format=torch.channels_last_3d)
    patch = cfg.patch
    pad = [max(0, p - n) for n, p in zip(src.shape, patch)]
    lo = [d // 2 for d in pad]
    padded = [n + d for n, d in zip(src.shape, pad)]
    acc = torch.zeros(cfg.n_classes, *padded)
    wsum = torch.zeros(padded)
    weight = gaussian_importance(patch, cfg.sigma_scale)
    coarse = stage1_outputs(model, src, device, layout)

    def context(start):
        up = upsample_region(coarse, start, patch, src.shape).to(device)
        return up[:, :cfg.n_classes], up[:, cfg.n_classes:]

    for start in itertools.product(*window_starts(src.shape, patch, layout.overlap)):
        probs, _ = predict_patch(model, src, None if coarse is None else context, start, tta,
                                 mc, device)
        box = tuple(slice(s + o, s + o + p) for s, o, p in zip(start, lo, patch))
        acc[(slice(None), *box)] += probs * weight
        wsum[box] += weight
    crop = tuple(slice(o, o + n) for o, n in zip(lo, src.shape))
    return acc[(slice(None), *crop)] / wsum[crop]
