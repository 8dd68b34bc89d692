"""The two-stage cascade: a global meU-net on the downsampled volume, a local U-net on
full-resolution patches, joined by post-concatenation.

::

    image ──block-average /f──> stage1 ──> logits1 (coarse classes), feats1
      │                                        │ softmax        │
      │                         upsample to the patch (linear, per axis)
      └── patch ──cat(probs1↑)──> stage2 encoder/decoder ──> feats2
                                           cat(feats2, feats1↑) ──> head ──> logits2

The upsampling of stage-1 outputs is evaluated for one patch at a time
(:func:`upsample_region`), so the full-resolution stage-1 output is never materialised.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medflow.segment.config import CascadeConfig, divisor_of
from medflow.segment.cooperative import ShapeRefiner
from medflow.segment.unet import MeUNet


class Cascade(nn.Module):
    """Stage 1 (global, ``stage1``) and stage 2 (local, ``stage2``) of the cascade.

    Args:
        cfg: the config; ``cfg.stages == 1`` builds stage 2 alone (the single-stage
            baseline: image patches in, no stage-1 inputs or features).

    Example:
        >>> cfg = CascadeConfig(channels1=(4, 8), channels2=(4, 8), pools1=((2, 2, 1),),
        ...     pools2=((2, 2, 1),), kernels1=((3, 3, 3),) * 2, kernels2=((3, 3, 3),) * 2,
        ...     patch=(8, 8, 4))
        >>> model = Cascade(cfg).eval()
        >>> x = torch.zeros(1, 1, 16, 16, 4)
        >>> logits1, feats1 = model.forward_stage1(x)
        >>> probs_up, feats_up = model.stage1_context(logits1, feats1, (0, 0, 0), (8, 8, 4),
        ...                                           x.shape[2:])
        >>> tuple(model.forward_stage2(x[..., :8, :8, :], probs_up, feats_up).shape)
        (1, 4, 8, 8, 4)
    """

    def __init__(self, cfg: CascadeConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.n_classes
        if cfg.stages == 2:
            self.stage1 = MeUNet(cfg.net_channels, c, cfg.channels1, cfg.pools1, cfg.kernels1,
                                 cfg.dropout, cfg.checkpoint)
            in2, extra = cfg.net_channels + c, cfg.channels1[0]
        else:
            self.stage1 = None
            in2, extra = cfg.net_channels, 0
        self.stage2 = MeUNet(in2, c, cfg.channels2, cfg.pools2, cfg.kernels2, cfg.dropout,
                             cfg.checkpoint, extra_channels=extra)
        # the shape-correcting network of --cooperative (None: a model trained without it)
        self.refiner = (ShapeRefiner(c, cfg.refiner_channels, cfg.pools2, cfg.kernels2)
                        if cfg.refiner_channels else None)

    def forward_stage1(self, image: torch.Tensor):
        """Whole full-resolution image (B, in, X, Y, Z) -> stage-1 (logits, features) on the
        downsampled grid (B, ., ceil(X/fx), ceil(Y/fy), ceil(Z/fz))."""
        return self.stage1_on_low(downsample(image, self.cfg.stage1_factor))

    def stage1_on_low(self, low: torch.Tensor):
        """Stage 1 on an already downsampled image: pad to the pool product, run, crop."""
        shape = low.shape[2:]
        div = divisor_of(self.cfg.pools1)
        pad = [(-n) % d for n, d in zip(shape, div)]
        padded = F.pad(low, [p for a in reversed(pad) for p in (0, a)])
        logits, feats = self.stage1(padded)
        crop = (..., slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
        return logits[crop], feats[crop]

    def stage1_context(self, logits1, feats1, start, size, full_shape):
        """Stage-1 probabilities and features upsampled onto one full-resolution patch."""
        probs1 = torch.softmax(logits1.float(), dim=1)
        joined = torch.cat([probs1, feats1.float()], dim=1)
        up = upsample_region(joined, start, size, full_shape)
        c = self.cfg.n_classes
        return up[:, :c], up[:, c:]

    def stage2_inputs(self, patch: torch.Tensor, probs_up=None, feats_up=None):
        """Stage 2's network input (patch and stage-1 probabilities) and post-concatenated
        features (None for a single-stage model)."""
        if self.stage1 is None:
            return patch, None
        return torch.cat([patch, probs_up.to(patch.dtype)], dim=1), feats_up.to(patch.dtype)

    def forward_stage2(self, patch: torch.Tensor, probs_up=None, feats_up=None):
        """Patch (B, in, *patch) plus upsampled stage-1 outputs -> stage-2 logits."""
        x, extra = self.stage2_inputs(patch, probs_up, feats_up)
        return self.stage2(x, extra=extra)[0]

    def forward_patches(self, images: torch.Tensor, starts, keep_latent: bool = False):
        """Training forward: stage 1 on whole images (K, in, X, Y, Z), stage 2 on the
        patches at ``starts`` (a ``cfg.patch`` box each, zero-padded outside).

        Returns:
            (stage-1 logits (K, n, coarse grid) or None, stage-2 logits (len(starts) x K,
            n, *patch), start-major: all K copies of the first patch, then the next); with
            ``keep_latent`` also stage 2's :class:`Latent` (its encoder outputs, for
            :meth:`decode_latent`).
        """
        x = torch.cat([crop(images, s, self.cfg.patch) for s in starts])
        logits1 = probs_up = feats_up = None
        if self.stage1 is not None:
            logits1, feats1 = self.forward_stage1(images)
            ctx = [self.stage1_context(logits1.detach(), feats1, s, self.cfg.patch,
                                       images.shape[2:]) for s in starts]
            probs_up, feats_up = torch.cat([c[0] for c in ctx]), torch.cat([c[1] for c in ctx])
        x, extra = self.stage2_inputs(x, probs_up, feats_up)
        levels = self.stage2.encode(x)
        logits2 = self.stage2.decode(list(levels), extra)[0]
        if keep_latent:
            return logits1, logits2, Latent(levels, extra)
        return logits1, logits2

    def decode_latent(self, latent: "Latent", bottleneck: torch.Tensor) -> torch.Tensor:
        """Stage-2 logits from kept encoder outputs with the bottleneck replaced (a masked
        one: the cooperative training's hard examples); shapes as ``latent.levels[-1]``."""
        return self.stage2.decode([*latent.levels[:-1], bottleneck], latent.extra)[0]


class Latent(NamedTuple):
    """Stage 2's encoder outputs of one forward (finest first, the bottleneck last) and
    the stage-1 features post-concatenated before its head (None for one stage)."""

    levels: list
    extra: torch.Tensor | None


def crop(t: torch.Tensor, start, size) -> torch.Tensor:
    """Box of (..., X, Y, Z) with zero padding outside (same as inference windows)."""
    shape = t.shape[-3:]
    pads, src = [], []
    for s, k, n in zip(start, size, shape):
        a, b = max(s, 0), min(s + k, n)
        src.append(slice(a, b))
        pads.append((a - s, s + k - b))
    box = t[(..., *src)]
    return F.pad(box, [p for lo_hi in reversed(pads) for p in lo_hi])


def downsample(image: torch.Tensor, factors) -> torch.Tensor:
    """Block average by integer ``factors`` (edge blocks average only their voxels).

    Slabs of whole blocks give exactly the same result as the whole volume, which lets
    streaming inference downsample a memory-mapped volume slab by slab.
    """
    f = tuple(int(x) for x in factors)
    if f == (1, 1, 1):
        return image
    return F.avg_pool3d(image, f, stride=f, ceil_mode=True, count_include_pad=False)


def _axis_weights(n_low: int, n_full: int, start: int, size: int, device):
    # The same mapping as F.interpolate(mode="trilinear", align_corners=False, size=n_full).
    i = torch.arange(start, start + size, dtype=torch.float64, device=device)
    src = ((i + 0.5) * (n_low / n_full) - 0.5).clamp(0, n_low - 1)
    i0 = src.floor().long().clamp(max=n_low - 1)
    i1 = (i0 + 1).clamp(max=n_low - 1)
    return i0, i1, (src - i0).float()


def coarse_range(start: int, size: int, n_low: int, n_full: int) -> tuple[int, int]:
    """Coarse indices ``[lo, hi)`` that linear upsampling of an axis of ``n_low`` voxels to
    ``n_full`` reads for the full-resolution range ``start .. start + size``."""
    lo = max(0, int((start + 0.5) * n_low / n_full - 0.5) - 1)
    hi = min(n_low, int((start + size + 0.5) * n_low / n_full - 0.5) + 3)
    return lo, max(hi, lo + 1)


def upsample_region(low: torch.Tensor, start, size, full_shape, origin=(0, 0, 0),
                    low_shape=None) -> torch.Tensor:
    """Linear upsampling of ``low`` (B, C, x, y, z) to ``full_shape``, evaluated only on the
    box ``start .. start + size`` (may extend past the volume: edge values repeat).

    Args:
        origin / low_shape: ``low`` may be a block of a larger coarse grid of shape
            ``low_shape`` starting at ``origin``; it must hold the :func:`coarse_range` of
            the box (streaming inference passes only that).

    Note:
        Equals ``F.interpolate(low, full_shape, mode="trilinear")[box]`` up to rounding,
        but costs memory only for the box.
    """
    low_shape = tuple(low.shape[2:]) if low_shape is None else tuple(low_shape)
    # Only the coarse voxels the box interpolates from (keeps temporaries patch-sized).
    rng = [coarse_range(int(s), int(k), n, int(f)) for s, k, n, f in
           zip(start, size, low_shape, full_shape)]
    out = low[(..., *[slice(a - o, b - o) for (a, b), o in zip(rng, origin)])]
    # The last (contiguous) axis first, while the block is smallest: a gather along it is
    # element by element, along the others whole rows are copied (2.6 x faster per 96^3
    # window than X first).
    for axis in (2, 1, 0):
        (lo, hi), n_low = rng[axis], low_shape[axis]
        i0, i1, w = _axis_weights(n_low, int(full_shape[axis]), int(start[axis]),
                                  int(size[axis]), low.device)
        i0, i1 = (i0 - lo).clamp(0, hi - lo - 1), (i1 - lo).clamp(0, hi - lo - 1)
        dim = 2 + axis
        shape = [1] * out.dim()
        shape[dim] = -1
        a = out.index_select(dim, i0)                     # (B, C, ..., size[axis], ...)
        out = out.index_select(dim, i1).sub_(a).mul_(w.view(shape)).add_(a)  # in place
        del a
    return out
