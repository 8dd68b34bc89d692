"""The shape prior of the ``latent`` method: a 3D variational autoencoder over one-hot
high-resolution cardiac label maps in the heart-centred canonical frame.

Wang et al. (MICCAI 2021), "Joint motion correction and super resolution for cardiac
segmentation via latent optimisation" (the seed in ``shared/seeds/``): a generative model
learnt from high-resolution segmentations; super-resolution is an optimisation over its
latent space, which keeps the result anatomically plausible.

The decoder is the part optimised through at prediction, hundreds of times per frame, so
it is kept cheap: 3x3x3 convolutions only at 1/8, 1/4 and 1/2 resolution, and a 2x2x2
transposed convolution (each coarse voxel emits its 2x2x2 block) to the full canonical
grid. Logits are then interpolated trilinearly to any point, so the shape is continuous.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

#: Probability of each foreground class outside the canonical box.
OUTSIDE_FOREGROUND = 1e-3


@dataclass
class PriorConfig:
    """Architecture and canonical grid of a shape prior (saved in the model card).

    Attributes:
        labels: label values, index = network class (0 must be background).
        latent: latent dimensions.
        shape: canonical grid (X, Y, Z) voxels, each divisible by 8.
        spacing_mm: canonical voxel size.
        origin_mm: canonical coordinates of voxel (0, 0, 0) (mm, heart frame: x towards
            the RV, z apex to base).
        channels: convolution widths at 1/2, 1/4 and 1/8 resolution.
        head_channels: width of the full-resolution layer before the class logits.
    """

    labels: tuple = (0, 1, 2, 3)
    latent: int = 32
    shape: tuple = (56, 40, 40)
    spacing_mm: float = 3.0
    origin_mm: tuple = (-52.0, -60.0, -75.0)
    channels: tuple = (8, 16, 32)
    head_channels: int = 8

    def __post_init__(self) -> None:
        self.labels = tuple(int(v) for v in self.labels)
        self.shape = tuple(int(v) for v in self.shape)
        self.origin_mm = tuple(float(v) for v in self.origin_mm)
        self.channels = tuple(int(v) for v in self.channels)
        if self.labels[0] != 0 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must start with background 0 and be unique: {self.labels}")
        if any(s % 8 for s in self.shape):
            raise ValueError(f"canonical shape {self.shape} must be divisible by 8")

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def coarse(self) -> tuple[int, int, int]:
        return tuple(s // 8 for s in self.shape)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        return cls(**d)

    def world_to_grid(self) -> np.ndarray:
        """4x4 canonical mm -> canonical voxel index."""
        m = np.eye(4)
        m[:3, :3] /= self.spacing_mm
        m[:3, 3] = -np.asarray(self.origin_mm) / self.spacing_mm
        return m


def _conv(cin: int, cout: int) -> nn.Sequential:
    # instance normalisation keeps the signal alive through the unnormalised stack of
    # transposed convolutions (training was several times slower without it); the decoder
    # always sees a whole canonical volume, so its statistics are those of training
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.1))


class ShapeVAE(nn.Module):
    """Encoder (one-hot map -> mean, log-variance) and decoder (latent -> class logits).

    Example:
        >>> net = ShapeVAE(PriorConfig(shape=(16, 16, 16), latent=4))
        >>> net.decode(torch.zeros(1, 4)).shape
        torch.Size([1, 4, 16, 16, 16])
    """

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        n, flat = cfg.n_classes, c3 * int(np.prod(cfg.coarse))
        self.enc1 = nn.Sequential(nn.Conv3d(n, c1, 2, stride=2), nn.LeakyReLU(0.1), _conv(c1, c1))
        self.enc2 = nn.Sequential(nn.Conv3d(c1, c2, 2, stride=2), nn.LeakyReLU(0.1), _conv(c2, c2))
        self.enc3 = nn.Sequential(nn.Conv3d(c2, c3, 2, stride=2), nn.LeakyReLU(0.1), _conv(c3, c3))
        self.to_latent = nn.Linear(flat, 2 * cfg.latent)
        with torch.no_grad():  # start with little sampling noise: the decoder learns faster
            self.to_latent.bias[cfg.latent:] = -6.0
            self.to_latent.weight[cfg.latent:] *= 0.01
        self.from_latent = nn.Linear(cfg.latent, flat)
        self.dec3 = nn.Sequential(_conv(c3, c3), nn.ConvTranspose3d(c3, c2, 2, stride=2),
                                  nn.LeakyReLU(0.1))
        self.dec2 = nn.Sequential(_conv(c2, c2), nn.ConvTranspose3d(c2, c1, 2, stride=2),
                                  nn.LeakyReLU(0.1))
        self.dec1 = nn.Sequential(_conv(c1, c1), nn.ConvTranspose3d(c1, cfg.head_channels, 2,
                                                                    stride=2), nn.LeakyReLU(0.1))
        self.head = nn.Conv3d(cfg.head_channels, n, 1)

    def encode(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, X, Y, Z) class fractions -> (mean, log-variance), each (B, latent)."""
        h = self.enc3(self.enc2(self.enc1(onehot)))
        mean, logvar = self.to_latent(h.flatten(1)).chunk(2, dim=1)
        return mean, logvar.clamp(-12.0, 6.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> class logits (B, C, X, Y, Z) on the canonical grid."""
        c3 = self.cfg.channels[2]
        h = torch.nn.functional.leaky_relu(self.from_latent(z), 0.1)
        h = h.view(z.shape[0], c3, *self.cfg.coarse)  # (B, c3, X/8, Y/8, Z/8)
        h = self.dec1(self.dec2(self.dec3(h)))
        return self.head(h)


def grid_coords(points: torch.Tensor, world_to_grid: torch.Tensor,
                shape: tuple[int, int, int]) -> torch.Tensor:
    """Points (N, 3) in a volume's world frame -> grid_sample coordinates (N, 3).

    ``grid_sample`` on a (B, C, X, Y, Z) tensor reads its last grid dimension as
    (z-index, y-index, x-index) normalised to [-1, 1] (align_corners=True).
    """
    idx = points @ world_to_grid[:3, :3].T + world_to_grid[:3, 3]
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape], dtype=idx.dtype,
                         device=idx.device)
    return (idx * scale - 1.0).flip(-1)


def sample(volume: torch.Tensor, points: torch.Tensor, world_to_grid: torch.Tensor,
           mode: str = "bilinear") -> torch.Tensor:
    """Trilinear values of a (C, X, Y, Z) volume at points (N, 3); zeros outside.

    Differentiable with respect to the volume and the points.
    """
    shape = tuple(volume.shape[1:])
    g = grid_coords(points, world_to_grid, shape).view(1, -1, 1, 1, 3)
    out = torch.nn.functional.grid_sample(volume[None], g.to(volume.dtype), mode=mode,
                                          padding_mode="zeros", align_corners=True)
    return out.view(volume.shape[0], -1).T  # (N, C)


def log_probs_at(logits: torch.Tensor, points: torch.Tensor, world_to_grid: torch.Tensor
                 ) -> torch.Tensor:
    """Class log-probabilities at canonical points from logits on the canonical grid.

    Logits are interpolated trilinearly (a continuous surface, sub-voxel precise), then
    soft-maxed; outside the canonical box everything is background (class 0).

    Args:
        logits: (C, X, Y, Z), or (B, C, X, Y, Z) for a batch.
        points: (N, 3) canonical mm, or (B, N, 3).
        world_to_grid: 4x4 canonical mm -> voxel index.

    Returns:
        (N, C), or (B, N, C).
    """
    single = logits.dim() == 4
    if single:
        logits, points = logits[None], points[None]
    b, c = logits.shape[:2]
    g = grid_coords(points, world_to_grid, tuple(logits.shape[2:]))  # (B, N, 3)
    inside = (g.abs() <= 1.0).all(dim=-1, keepdim=True)
    values = torch.nn.functional.grid_sample(
        logits, g.view(b, -1, 1, 1, 3).to(logits.dtype), mode="bilinear",
        padding_mode="border", align_corners=True).view(b, c, -1).transpose(1, 2)
    logp = torch.log_softmax(values, dim=-1)
    # outside the box: background, all but certainly (bounded, so that a labelled pixel the
    # box cannot reach pulls on the fit without swamping it)
    outside = torch.full((c,), float(np.log(OUTSIDE_FOREGROUND)), dtype=logp.dtype,
                         device=logp.device)
    outside[0] = float(np.log1p(-(c - 1) * OUTSIDE_FOREGROUND))
    out = torch.where(inside, logp, outside)
    return out[0] if single else out


def inside_box(points: torch.Tensor, world_to_grid: torch.Tensor, shape) -> torch.Tensor:
    """Whether canonical points (..., 3) lie inside the canonical grid."""
    return (grid_coords(points, world_to_grid, tuple(shape)).abs() <= 1.0).all(dim=-1)
