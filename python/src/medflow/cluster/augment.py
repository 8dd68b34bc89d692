"""Augmentations for greyscale scans, sampled then applied (TorchIO's RandomX / X pattern).

:func:`draw` draws every random number of a batch's augmentation from a seeded generator
into an :class:`AugmentParams`; :func:`apply` applies them deterministically. What varies
is what does not change what a scan shows: field of view (crop, scale, in-plane rotation,
flips: the storage orientation of a view differs between scanners and converters), the
intensity curve (gamma), a smooth multiplicative coil bias field, blur (resolution) and
noise. There is no colour jitter: the images have one channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentParams:
    """Per-image parameters of one batch (B images)."""

    theta: torch.Tensor   # (B, 2, 3) affine sampling grid: crop, scale, rotation, flip
    bias: torch.Tensor    # (B, 6) log bias field coefficients: 1, x, y, x^2, y^2, xy
    gamma: torch.Tensor   # (B,) intensity curve exponent
    blur: torch.Tensor    # (B,) Gaussian sigma in pixels (0: none)
    noise: torch.Tensor   # (B,) Gaussian noise sigma, in units of the [0, 1] intensity range


def draw(n: int, gen: torch.Generator, strength: float = 1.0) -> AugmentParams:
    """Draw the augmentation of ``n`` images.

    Args:
        n: batch size.
        gen: the seeded generator (CPU).
        strength: scales every range (0 gives the identity).

    Returns:
        :class:`AugmentParams`: crops keep 50-100 % of the area (aspect 3:4 to 4:3), any
        quarter turn and flip plus up to 15 degrees, gamma in [0.67, 1.5], bias field up
        to about +-30 %, blur sigma up to 2 px (of the stored 128-pixel slice) on half the
        images, noise up to 0.05.
    """
    def u(lo, hi, size=(n,)):
        return lo + (hi - lo) * torch.rand(size, generator=gen)

    s = strength
    area = 1 - s * u(0.0, 0.5)
    aspect = torch.exp(s * u(math.log(3 / 4), math.log(4 / 3)))
    sx, sy = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    quarter = torch.randint(0, 4, (n,), generator=gen) * (1 if s > 0 else 0)
    angle = quarter * (math.pi / 2) + s * u(-1.0, 1.0) * math.radians(15)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5 * min(s, 1.0), -1.0, 1.0)
    tx, ty = (1 - sx) * u(-1.0, 1.0), (1 - sy) * u(-1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * sx * flip, -sin * sy, tx], 1),
                         torch.stack([sin * sx * flip, cos * sy, ty], 1)], 1)
    bias = s * 0.15 * torch.randn((n, 6), generator=gen)
    bias[:, 0] = 0.0  # the mean level is the intensity curve's business
    gamma = torch.exp(s * u(math.log(1 / 1.5), math.log(1.5)))
    blur = torch.where(torch.rand(n, generator=gen) < 0.5, s * u(0.5, 2.0), torch.zeros(n))
    noise = s * u(0.0, 0.05)
    return AugmentParams(theta, bias, gamma, blur, noise)


def apply(x: torch.Tensor, p: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Apply drawn augmentations to a batch of slices.

    Args:
        x: (B, 1, H, W) float32 slices in [0, 1].
        p: parameters from :func:`draw` for B images.
        gen: generator for the noise pixels.

    Returns:
        (B, 1, H, W) float32 augmented slices.
    """
    b, _, h, w = x.shape
    grid = F.affine_grid(p.theta, (b, 1, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = x * torch.exp(_poly(p.bias, h, w))
    x = x.clamp_min(0).pow(p.gamma.view(b, 1, 1, 1))
    x = _gaussian_blur(x, p.blur)
    noise = torch.randn(x.shape, generator=gen) * p.noise.view(b, 1, 1, 1)
    return x + noise


def _poly(coef: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # (B, 1, H, W) log bias: a quadratic over the image in [-1, 1] coordinates
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    terms = torch.stack([torch.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy])  # (6, H, W)
    return torch.einsum("bk,khw->bhw", coef, terms)[:, None]


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 5) -> torch.Tensor:
    # One separable kernel per image (grouped convolution); sigma 0 is the identity.
    b = x.shape[0]
    r = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (r.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)                       # (B, 2r+1)
    xb = x.transpose(0, 1)                                # (1, B, H, W): images as channels
    xb = F.pad(xb, (radius, radius, radius, radius), mode="replicate")
    xb = F.conv2d(xb, k.view(b, 1, 1, -1), groups=b)
    xb = F.conv2d(xb, k.view(b, 1, -1, 1), groups=b)
    return xb.transpose(0, 1)


def augment(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Draw and apply in one call (training)."""
    return apply(x, draw(x.shape[0], gen, strength), gen)
