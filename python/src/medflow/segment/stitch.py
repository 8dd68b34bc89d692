"""Gaussian-weighted windows stitched region by region and slab by slab, for both stages.

Stage 2 runs on the full-resolution image; stage 1 on the coarse (downsampled) grid, with
windows of the size it was trained on (``cfg.stage1_patch``), computed lazily as stage 2
moves up in z. Either way only one tile of the (X, Y) plane, one patch deep, is ever held:

* a *region* (a tile of the plane) gets every window that meets it, so its output is
  exactly the whole-volume stitch restricted to it; windows that straddle two regions are
  run once for each (the price of splitting, paid only when memory asks for it);
* per z-slice accumulators of the region hold ``weight * values``; a slice is finalised as
  soon as no later window row touches it, and handed on.
"""

from __future__ import annotations

import itertools

import torch

from medflow.segment.cascade import coarse_range, downsample, upsample_region
from medflow.segment.unet import autocast, channels_last
from medflow.segment.windows import Region, covering, gaussian_importance

def stitch_slabs(predict, starts, patch, weight, region: Region, depth: int, n_sum: int,
                 chunk: int = 8, after_row=None):
    """Yield ``(z0, z1, values, spread)`` for the region, finalised, in increasing z.

    Args:
        predict: ``start -> (values (n, *patch), spread (*patch) or None)``; the first
            ``n_sum`` channels of ``values`` sum to one (class probabilities), so the
            weight sum of a voxel is their weighted sum and needs no buffer of its own.
        starts: window starts per axis (the whole volume's windows).
        weight: Gaussian importance map (*patch).
        region: the output tile; depth: Z.
        after_row: called after each row of windows (to drop memory-mapped pages).

    Yields:
        values (n, x1 - x0, y1 - y0, z1 - z0) and spread (x1 - x0, y1 - y0, z1 - z0) or None;
        at most ``chunk`` slices each, covering 0..depth once.
    """
    (x0, x1), (y0, y1) = region
    xs = covering(starts[0], patch[0], x0, x1)
    ys = covering(starts[1], patch[1], y0, y1)
    acc: dict[int, torch.Tensor] = {}    # z -> (n, rx, ry) sum of weight * values
    dis: dict[int, torch.Tensor] = {}    # z -> (rx, ry) sum of weight * spread
    done, zs = 0, starts[2]
    for r, z in enumerate(zs):
        zr = range(max(z, 0), min(z + patch[2], depth))
        for x, y in itertools.product(xs, ys):
            values, spread = predict((x, y, z))
            src = (slice(max(x0 - x, 0), min(x1 - x, patch[0])),
                   slice(max(y0 - y, 0), min(y1 - y, patch[1])))
            dst = (slice(max(x, x0) - x0, min(x + patch[0], x1) - x0),
                   slice(max(y, y0) - y0, min(y + patch[1], y1) - y0))
            w = weight[src]
            wv = values[(slice(None), *src)] * w             # (n, sx, sy, pz)
            del values
            wd = spread[src] * w if spread is not None else None
            for k in zr:
                if k not in acc:
                    acc[k] = torch.zeros(wv.shape[0], x1 - x0, y1 - y0)
                acc[k][(slice(None), *dst)] += wv[..., k - z]
                if wd is not None:
                    if k not in dis:
                        dis[k] = torch.zeros(x1 - x0, y1 - y0)
                    dis[k][dst] += wd[..., k - z]
            del wv, wd
        if after_row is not None:
            after_row()
        end = min(zs[r + 1], depth) if r + 1 < len(zs) else depth
        for z0 in range(done, end, chunk):                   # finalise [done, end)
            ks = range(z0, min(z0 + chunk, end))
            values = torch.stack([acc.pop(k) for k in ks], dim=-1)   # (n, rx, ry, m)
            wsum = values[:n_sum].sum(0)
            values /= wsum
            spread = (torch.stack([dis.pop(k) for k in ks], dim=-1) / wsum if dis else None)
            yield ks.start, ks.stop, values, spread
        done = max(done, end)


class Stage1Context:
    """Stage-1 probabilities and features, upsampled onto stage-2 windows, for one region.

    Args:
        model: the cascade (eval mode); src: the normalised volume (``ArraySource``).
        region: the stage-2 output tile; starts2: the stage-2 window starts.
        window: stage-1 window (coarse voxels), or None to run stage 1 on the whole coarse
            grid at once, as in training (small inputs).
        starts1: stage-1 window starts on the coarse grid (with ``window``).
        shared: an already computed whole-grid context to reuse (whole mode).

    Note:
        Windowed mode keeps the coarse slices stage 2 still needs, and stage 1's own
        accumulators, for the coarse box under the region only: memory follows the tile.
    """

    def __init__(self, model, src, region: Region, starts2, window=None, starts1=None,
                 device: str = "cpu", chunk: int = 8, shared=None):
        cfg = model.cfg
        self.model, self.src, self.device, self.cfg = model, src, device, cfg
        self.low_shape = tuple(-(-n // f) for n, f in zip(src.shape, cfg.stage1_factor))
        self.windows, self.whole = 0, window is None
        if self.whole:
            self.slabs = shared.slabs if shared is not None else [self._whole(chunk)]
            self.box = ((0, self.low_shape[0]), (0, self.low_shape[1]))
            self._gen = None
            return
        self.window = tuple(window)
        box = []
        for a in range(2):
            got = covering(starts2[a], cfg.patch[a], *region[a])
            box.append(coarse_range(min(got), max(got) + cfg.patch[a] - min(got),
                                    self.low_shape[a], src.shape[a]))
        self.box, self.slabs = tuple(box), []
        self._gen = stitch_slabs(self._predict, starts1, self.window,
                                 gaussian_importance(self.window, cfg.sigma_scale), self.box,
                                 self.low_shape[2], cfg.n_classes, chunk, src.release)

    @torch.no_grad()
    def _whole(self, chunk: int):
        """The whole coarse grid in one stage-1 pass (downsampled slab by slab)."""
        f, (X, Y, Z) = self.cfg.stage1_factor, self.src.shape
        step = f[2] * max(1, 32 // f[2])
        slabs = []
        for z in range(0, Z, step):
            slabs.append(downsample(self.src.read((0, 0, z), (X, Y, min(step, Z - z)))[None], f))
            self.src.release()
        low = torch.cat(slabs, dim=4)
        del slabs
        with autocast(self.device):
            logits, feats = self.model.stage1_on_low(channels_last(low.to(self.device)))
        self.windows = 1
        values = torch.cat([torch.softmax(logits.float(), dim=1), feats.float()], dim=1)
        return 0, self.low_shape[2], values[0].cpu()

    @torch.no_grad()
    def _predict(self, start):
        """One stage-1 window: the full-resolution box read, block-averaged, zero-padded."""
        f, w, n = self.cfg.stage1_factor, self.window, self.low_shape
        lo = [max(0, s) for s in start]
        hi = [min(m, s + k) for s, k, m in zip(start, w, n)]
        full_lo = [a * k for a, k in zip(lo, f)]
        full_hi = [min(b * k, m) for b, k, m in zip(hi, f, self.src.shape)]
        block = self.src.read(full_lo, [b - a for a, b in zip(full_lo, full_hi)])
        x = torch.zeros(1, block.shape[0], *w)
        x[(..., *[slice(a - s, b - s) for a, b, s in zip(lo, hi, start)])] = \
            downsample(block[None], f)
        del block
        with autocast(self.device):
            logits, feats = self.model.stage1(channels_last(x.to(self.device)))
        self.windows += 1
        out = torch.cat([torch.softmax(logits.float(), dim=1), feats.float()], dim=1)
        return out[0].cpu(), None

    def __call__(self, start):
        """(probs_up (1, C, *patch), feats_up (1, F, *patch)) for the window at ``start``."""
        cfg, size = self.cfg, self.cfg.patch
        rng = [coarse_range(s, k, n, m) for s, k, n, m in
               zip(start, size, self.low_shape, self.src.shape)]
        (lz, hz) = rng[2]
        while self._gen is not None and (not self.slabs or self.slabs[-1][1] < hz):
            got = next(self._gen, None)
            if got is None:
                self._gen = None
                break
            self.slabs.append(got[:3])
        if not self.whole:          # forget coarse slices no later window row needs
            self.slabs = [s for s in self.slabs if s[1] > lz]
        (bx, _), (by, _) = self.box
        sub = (slice(None), slice(rng[0][0] - bx, rng[0][1] - bx),
               slice(rng[1][0] - by, rng[1][1] - by))
        block = torch.cat([v[(*sub, slice(max(lz, z0) - z0, min(hz, z1) - z0))]
                           for z0, z1, v in self.slabs if z0 < hz and z1 > lz], dim=-1)
        origin = (rng[0][0], rng[1][0], lz)
        up = upsample_region(block[None], start, size, self.src.shape, origin, self.low_shape)
        c = cfg.n_classes
        return up[:, :c].to(self.device), up[:, c:].to(self.device)
