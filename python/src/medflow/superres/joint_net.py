"""The ``joint`` method's network: image and label super-resolution together.

After Gemini-GAN (Savioli et al., the second seed in ``shared/seeds/``): one network,
supervised by high-resolution 3D images and segmentations, super-resolves a thick-slice
image and its labels at once. Here a small 3D U-net encoder/decoder is shared and two
heads read it: the image head adds a residual to the interpolated input image, the label
head gives class logits. (The seed's adversarial term and its domain-adaptation
autoencoder are left out: trained on paired phantoms, the supervised losses are enough.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class JointConfig:
    """Architecture of a :class:`JointNet` (saved in the model card).

    Attributes:
        labels: label values, index = class (0 background).
        channels: U-net widths at full, 1/2 and 1/4 resolution.
        spacing_mm: the isotropic grid the network works on.
        patch: training patch (voxels).
    """

    labels: tuple = (0, 1, 2, 3)
    channels: tuple = (8, 16, 32)
    spacing_mm: float = 1.25
    patch: tuple = (32, 32, 32)

    def __post_init__(self) -> None:
        self.labels = tuple(int(v) for v in self.labels)
        self.channels = tuple(int(v) for v in self.channels)
        self.patch = tuple(int(v) for v in self.patch)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return 1 + self.n_classes - 1  # the image and one fraction map per foreground class

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "JointConfig":
        return cls(**d)


def _block(cin: int, cout: int) -> nn.Sequential:
    # no normalisation layer: statistics of a training patch and of a whole volume differ
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv3d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))


class JointNet(nn.Module):
    """Shared U-net trunk, an image head and a label head.

    Input (B, 1 + C - 1, X, Y, Z): the interpolated image (normalised) and the interpolated
    fraction of each foreground class; sizes divisible by 4.

    Example:
        >>> net = JointNet(JointConfig())
        >>> image, logits = net(torch.zeros(1, 4, 16, 16, 16))
        >>> image.shape, logits.shape
        (torch.Size([1, 1, 16, 16, 16]), torch.Size([1, 4, 16, 16, 16]))
    """

    def __init__(self, cfg: JointConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.enc1 = _block(cfg.in_channels, c1)
        self.enc2 = _block(c1, c2)
        self.enc3 = _block(c2, c3)
        self.up3 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = _block(2 * c2, c2)
        self.up2 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = _block(2 * c1, c1)
        self.image_head = nn.Sequential(nn.Conv3d(c1, c1, 3, padding=1), nn.LeakyReLU(0.1),
                                        nn.Conv3d(c1, 1, 1))
        self.label_head = nn.Sequential(nn.Conv3d(c1, c1, 3, padding=1), nn.LeakyReLU(0.1),
                                        nn.Conv3d(c1, cfg.n_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (image (B, 1, ...), label logits (B, C, ...))."""
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool3d(e1, 2))
        e3 = self.enc3(nn.functional.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([self.up3(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up2(d2), e1], dim=1))
        image = x[:, :1] + self.image_head(d1)
        return image, self.label_head(d1)
