"""A small variational autoencoder over the cohort's images: the latent space in which
suggest-annotation measures similarity (coreset, typical) and carries the segmentation
loss gradient (gradient-guided sampling, Dai et al., MICCAI 2020).

Each annotation unit (a subject's volume, or one slice) is a thumbnail on a fixed grid
(``grid``; a slice is ``(gx, gy, 1)``); the encoder halves the in-plane axes per level, and
the slice axis only while it keeps at least 4 voxels. The embedding of a unit is the
posterior mean ``mu``.

::

    x (B, C, gx, gy, gz) -> enc1..encL (stride 2) -> flatten -> fc_mu, fc_logvar -> z
    z -> fc -> reshape -> dec1..decL (upsample x2, conv) -> head -> x_hat
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VAEConfig:
    """Architecture and training of the VAE (recorded in the sidecar).

    Args:
        in_channels: image channels (4 for BraTS).
        grid: thumbnail size per axis; gz = 1 for slice units.
        channels: feature width per level.
        latent: latent dimensions.
        kl_weight: weight of the KL term against the mean squared reconstruction error.
        steps / batch / lr: optimisation (Adam).
    """

    in_channels: int = 1
    grid: tuple[int, int, int] = (32, 32, 16)
    channels: tuple[int, ...] = (16, 32, 64)
    latent: int = 16
    kl_weight: float = 1e-3
    steps: int = 600
    batch: int = 16
    lr: float = 2e-3

    def to_dict(self) -> dict:
        return asdict(self)


def _strides(grid, levels: int):
    out, size = [], list(grid)
    for _ in range(levels):
        s = tuple(2 if (n >= 4 and n % 2 == 0) else 1 for n in size)
        out.append(s)
        size = [n // k for n, k in zip(size, s)]
    return out, tuple(size)


class VAE(nn.Module):
    """The VAE; ``forward`` returns (reconstruction, mu, logvar).

    Example:
        >>> vae = VAE(VAEConfig(in_channels=2, grid=(8, 8, 1), channels=(4, 8), latent=3))
        >>> x_hat, mu, logvar = vae(torch.zeros(5, 2, 8, 8, 1))
        >>> tuple(x_hat.shape), tuple(mu.shape)
        ((5, 2, 8, 8, 1), (5, 3))
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.strides, self.bottom = _strides(cfg.grid, len(cfg.channels))
        kz = 3 if cfg.grid[2] > 1 else 1
        k, pad = (3, 3, kz), (1, 1, kz // 2)
        widths = (cfg.in_channels, *cfg.channels)
        self.enc = nn.ModuleList([
            nn.Sequential(nn.Conv3d(widths[i], widths[i + 1], k, self.strides[i], pad),
                          nn.GroupNorm(1, widths[i + 1]), nn.LeakyReLU(0.1))
            for i in range(len(cfg.channels))])
        flat = cfg.channels[-1] * math.prod(self.bottom)
        self.fc_mu, self.fc_logvar = nn.Linear(flat, cfg.latent), nn.Linear(flat, cfg.latent)
        self.fc_dec = nn.Linear(cfg.latent, flat)
        self.dec = nn.ModuleList([
            nn.Sequential(nn.Conv3d(widths[i + 1], widths[max(i, 1)], k, 1, pad),
                          nn.GroupNorm(1, widths[max(i, 1)]), nn.LeakyReLU(0.1))
            for i in reversed(range(len(cfg.channels)))])
        self.head = nn.Conv3d(widths[1], cfg.in_channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, *grid) -> (mu, logvar), each (B, latent)."""
        h = x
        for block in self.enc:
            h = block(h)
        h = h.flatten(1)                                   # (B, channels[-1] * bottom)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, C, *grid)."""
        h = self.fc_dec(z).view(z.shape[0], self.cfg.channels[-1], *self.bottom)
        for block, stride in zip(self.dec, reversed(self.strides)):
            h = block(F.interpolate(h, scale_factor=stride, mode="nearest"))
        return self.head(h)

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


def vae_loss(x, x_hat, mu, logvar, kl_weight: float) -> torch.Tensor:
    """Mean squared reconstruction error + ``kl_weight`` x KL(q(z|x) || N(0, I)) per unit."""
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1).mean()
    return F.mse_loss(x_hat, x) + kl_weight * kl


def train_vae(thumbs: torch.Tensor, cfg: VAEConfig, seed: int = 0, device: str = "cpu"
              ) -> tuple[VAE, list[float]]:
    """Train on every unit's thumbnail (unsupervised: labelled and unlabelled alike).

    Args:
        thumbs: (N, C, *grid) float32 normalised thumbnails.
        cfg: the configuration; ``cfg.steps`` mini-batches of ``cfg.batch`` units.
        seed: seeds the initialisation, batches and the reparameterisation noise.

    Returns:
        (the VAE in eval mode, loss per step). Random left-right flips augment the units.
    """
    torch.manual_seed(seed)
    vae = VAE(cfg).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([seed, 31])
    losses = []
    vae.train()
    for step in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, thumbs.shape[0], min(cfg.batch, thumbs.shape[0])))
        x = thumbs[idx].to(device)
        if rng.random() < 0.5:
            x = x.flip(2)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (1 - step / cfg.steps) ** 0.9
        x_hat, mu, logvar = vae(x)
        loss = vae_loss(x, x_hat, mu, logvar, cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return vae.eval(), losses


@torch.no_grad()
def embed(vae: VAE, thumbs: torch.Tensor, device: str = "cpu", chunk: int = 256) -> np.ndarray:
    """Posterior means (N, latent) float32 of the thumbnails, ``chunk`` at a time."""
    out = [vae.encode(thumbs[i:i + chunk].to(device))[0].cpu()
           for i in range(0, thumbs.shape[0], chunk)]
    return torch.cat(out).numpy().astype(np.float32)
