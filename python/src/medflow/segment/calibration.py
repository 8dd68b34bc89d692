"""Post-hoc calibration of the cascade's class probabilities.

Two calibrators, both fitted on labelled validation voxels by the negative log-likelihood
and both applied to stage-2 logits ``z`` window by window at prediction time:

- ``temperature``: one temperature for every voxel, ``softmax(z / T)`` (Guo et al. 2017,
  "On calibration of modern neural networks"); the baseline.
- ``local``: a per-voxel temperature ``T(v) > 0`` predicted by a small per-voxel network
  from the voxel's log-probabilities and the spread of its probabilities when the input's
  intensities are perturbed (Ouyang et al. 2022, "Improved post-hoc probability calibration
  for out-of-domain MRI segmentation": voxels whose prediction moves under a perturbation
  are the ones that go wrong under a domain shift or an artefact, so they get a higher
  temperature). The paper's global shape-prior residual is not used.

The network looks at one voxel at a time (1x1x1), so a window's temperatures do not depend
on where the window was cut: stitching calibrated windows is as exact as stitching raw ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("temperature", "local")
#: Fixed intensity perturbations of the z-scored input, (kind, value): gamma on the range
#: -3..3 SD mapped to 0..1, and contrast scaling. Fixed, so prediction needs no random draw.
PERTURBATIONS = (("gamma", 0.6), ("gamma", 1.6), ("contrast", 0.7), ("contrast", 1.3))
#: Smallest temperature the local network can output (keeps z / T finite).
T_MIN = 0.05


def perturb(x: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    """One fixed intensity perturbation of a z-scored input (B, C, X, Y, Z)."""
    if kind == "contrast":
        return x * value
    if kind == "gamma":
        u = ((x + 3.0) / 6.0).clamp(0, 1)
        return u.pow(value) * 6.0 - 3.0
    raise ValueError(f"unknown perturbation {kind!r}")


def local_features(logits: torch.Tensor, perturbed: list[torch.Tensor]) -> torch.Tensor:
    """The local network's input: (B, 2C, ...) = log-probabilities of ``logits`` (B, C, ...)
    and the standard deviation of each class probability over the clean and perturbed
    predictions (0 = the voxel does not move under perturbation)."""
    probs = torch.stack([torch.softmax(z.float(), 1) for z in (logits, *perturbed)])
    return torch.cat([torch.log_softmax(logits.float(), 1), probs.std(0, correction=0)], 1)


class LocalTemperatureNet(nn.Module):
    """Per-voxel temperature from :func:`local_features`: a 2-hidden-layer MLP applied to the
    feature axis (axis 1 of (B, F, ...) or (N, F)), ``T = softplus(out) + T_MIN``.

    Args:
        n_classes: C; the input has 2C features.
        hidden: width of the hidden layers.
        init_temperature: the output at initialisation (a fitted global T: training starts
            from the baseline).
    """

    def __init__(self, n_classes: int, hidden: int = 16, init_temperature: float = 1.0):
        super().__init__()
        self.fc1 = nn.Linear(2 * n_classes, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        t = max(float(init_temperature) - T_MIN, 1e-3)
        nn.init.constant_(self.head.bias, math.log(math.expm1(t)))   # softplus^-1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = features.movedim(1, -1)                       # (..., F)
        h = F.relu(self.fc2(F.relu(self.fc1(h))))
        t = F.softplus(self.head(h)) + T_MIN              # (..., 1)
        return t.movedim(-1, 1)                           # (B, 1, ...) or (N, 1)


@dataclass
class Calibrator:
    """A fitted calibrator: ``method``, the global ``temperature`` (fitted for both methods;
    the local network starts from it) and, for ``local``, the network."""

    method: str
    temperature: float
    net: LocalTemperatureNet | None = None

    def temperatures(self, logits: torch.Tensor, stage2: Callable | None, x=None):
        """The temperature (scalar tensor, or (B, 1, ...) map for ``local``) for ``logits``
        (B, C, ...) of input ``x``; ``stage2(x')`` gives the logits of a perturbed input."""
        if self.method == "temperature":
            return torch.tensor(self.temperature)
        perturbed = [stage2(perturb(x, k, v)).float() for k, v in PERTURBATIONS]
        return self.net(local_features(logits, perturbed))

    def apply(self, logits: torch.Tensor, stage2: Callable | None = None, x=None):
        """Calibrated logits ``z / T`` (B, C, ...) float32."""
        return logits.float() / self.temperatures(logits, stage2, x)


def fit_global_temperature(logits: torch.Tensor, classes: torch.Tensor,
                           bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the mean cross-entropy of ``softmax(logits / T)``.

    Args:
        logits: (N, C) validation voxels' logits. classes: (N,) true class indices.

    Returns:
        T (> 1 softens over-confident probabilities).

    Example:
        >>> g = torch.Generator().manual_seed(0); z = 2 * torch.randn(50_000, 3, generator=g)
        >>> y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
        >>> round(fit_global_temperature(3 * z, y), 1)        # three times over-confident
        3.0
    """
    from scipy import optimize

    if logits.shape[0] == 0:
        raise ValueError("no voxels to fit a temperature on")
    z, y = logits.double(), classes.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    res = optimize.minimize_scalar(nll, bounds=tuple(np.log(bounds)), method="bounded",
                                   options={"xatol": 1e-5})
    return float(math.exp(res.x))


def fit_local(features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor,
              init_temperature: float, *, epochs: int = 30, batch: int = 4096,
              lr: float = 1e-2, seed: int = 0) -> LocalTemperatureNet:
    """Train :class:`LocalTemperatureNet` by the NLL of ``softmax(logits / T(features))``.

    Args:
        features: (N, 2C) from :func:`local_features`. logits: (N, C). classes: (N,).
        init_temperature: the fitted global temperature (the starting point).
        epochs / batch / lr: Adam over shuffled minibatches (seeded: same seed, same net).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = LocalTemperatureNet(logits.shape[1], init_temperature=init_temperature)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = features.shape[0]
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch):
            loss = F.cross_entropy(logits[idx] / net(features[idx]), classes[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def top_label_ece(probs: torch.Tensor, classes: torch.Tensor, n_bins: int = 15):
    """Reliability bins of the top-label confidence against correctness, for (N, C)
    probabilities and (N,) true classes; ``.ece()`` of the result is the usual ECE of a
    segmentation (:func:`medflow.uncertainty.reliability_bins`, equal-width bins)."""
    from medflow.uncertainty import reliability_bins

    conf, pred = probs.max(1)
    return reliability_bins(conf.numpy(), (pred == classes).numpy(), n_bins)
