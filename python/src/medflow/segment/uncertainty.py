"""Voxel-wise uncertainty from (slabs of) class probabilities, scaled 0-100.

- ``entropy``: predictive entropy of the (TTA/MC-averaged) class probabilities divided by
  log(C): 0 = certain, 100 = uniform.
- ``disagreement``: fraction of TTA/MC samples whose argmax differs from the argmax of the
  mean, divided by its maximum ``1 - 1/min(S, C)``.
- Region tasks (BraTS WT/TC/ET): one map per region, the binary entropy of the region's
  probability (the sum over its labels) divided by log 2, as QU-BraTS scores them.
"""

from __future__ import annotations

import math

import torch

KINDS = ("entropy", "disagreement")
EPS = 1e-12


def labels_from_probs(probs: torch.Tensor, labels) -> torch.Tensor:
    """(C, ...) probabilities -> label values (...) of the most probable class."""
    lut = torch.as_tensor(labels, dtype=torch.int64)
    return lut[probs.argmax(0)]


def entropy_percent(probs: torch.Tensor) -> torch.Tensor:
    """Normalised predictive entropy (...) in 0-100 from (C, ...) probabilities."""
    c = probs.shape[0]
    h = -(probs * torch.log(probs.clamp_min(EPS))).sum(0)
    return (100.0 * h / math.log(c)).clamp(0, 100) + 0.0  # + 0.0: no -0.0


def region_probs(probs: torch.Tensor, labels, regions: dict) -> dict[str, torch.Tensor]:
    """Probability of each region: the sum over the classes whose label is in it."""
    index = {int(v): i for i, v in enumerate(labels)}
    return {name: probs[[index[v] for v in values if v in index]].sum(0).clamp(0, 1)
            for name, values in regions.items()}


def binary_entropy_percent(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy of p (...) divided by log 2, in 0-100."""
    q = 1 - p
    h = -(p * torch.log(p.clamp_min(EPS)) + q * torch.log(q.clamp_min(EPS)))
    return (100.0 * h / math.log(2)).clamp(0, 100) + 0.0


def disagreement_percent(fraction: torch.Tensor, n_samples: int, n_classes: int):
    """Disagreement fraction (...) -> 0-100 (0 everywhere with one sample)."""
    top = 1.0 - 1.0 / min(max(n_samples, 1), n_classes)
    if top <= 0:
        return torch.zeros_like(fraction)
    return (100.0 * fraction / top).clamp(0, 100)


def uncertainty_maps(probs: torch.Tensor, disagreement, kind: str, labels, regions: dict,
                     n_samples: int) -> dict[str, torch.Tensor]:
    """The uncertainty map(s) for one slab: ``{"": map}`` or ``{region: map}`` for regions.

    Example:
        >>> p = torch.tensor([[0.5, 1.0], [0.5, 0.0]])
        >>> uncertainty_maps(p, None, "entropy", (0, 1), {}, 1)[""].round()
        tensor([100.,   0.])
    """
    if kind not in KINDS:
        raise ValueError(f"unknown uncertainty kind {kind!r}; expected one of {KINDS}")
    if regions:
        return {name: binary_entropy_percent(p)
                for name, p in region_probs(probs, labels, regions).items()}
    if kind == "disagreement" and disagreement is not None:
        return {"": disagreement_percent(disagreement, n_samples, probs.shape[0])}
    return {"": entropy_percent(probs)}
