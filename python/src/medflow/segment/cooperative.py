"""Cooperative training with latent-space augmentation (``segment-cascaded train
--cooperative``).

After Chen et al., "Cooperative training and latent space data augmentation for robust
medical image segmentation" (MICCAI 2021; abstract in the project's seeds): beside the
segmenter (the cascade, the "fast-thinking" network) a small shape-correcting network (the
"slow-thinking" one, :class:`ShapeRefiner`: a U-net from class probabilities to corrected
class logits) learns a shape prior from the labels, and the two are trained together.
Hard examples come from masking the segmenter's latent features, here stage 2's bottleneck
(the deepest encoder output), four ways (:data:`MASK_KINDS`):

- ``channel`` / ``spatial``: random channel-wise / voxel-wise dropout of a fraction of the
  bottleneck (the same number of channels or voxels zeroed in every patch of the batch);
- ``targeted-channel`` / ``targeted-spatial``: the channels / voxels with the largest
  gradient magnitude of the segmentation loss (mean |dL/dh| over voxels per channel, sum
  over channels per voxel) are zeroed: the features the current prediction leans on most
  (the "representation self-challenging" rule the paper follows).

The segmenter is trained on the decoded hard examples (with the same labels) as well as
the clean ones; the refiner learns to map to the true labels the segmenter's clean and
hard-example probabilities and corrupted one-hot labels (:func:`corrupt_labels`: random
boxes relabelled, mixed with noise), one of the three per patch. Our own implementation
(no code of the authors').

Departures from the paper, for a cascade that predicts window by window: no image
reconstruction branch (the segmenter's latent space is not split into image and shape
codes); the refiner works on one stage-2 window of probabilities at a time, so
``predict --refine`` keeps the streaming memory bound; the refiner's loss does not reach
the segmenter (its inputs are detached).

Every random choice is drawn first (:func:`sample_mask`, :func:`sample_corruption`, from
the training step's generator) and applied by deterministic functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medflow.segment.unet import MeUNet

MASK_KINDS = ("channel", "spatial", "targeted-channel", "targeted-spatial")
#: Fraction of bottleneck channels or voxels zeroed, drawn uniformly per step.
MASK_RATE = (0.2, 0.5)
#: Label corruption: boxes per patch, their in-plane size as a fraction of the patch, and
#: the most weight the noise may take in the mix.
CORRUPT_BOXES, CORRUPT_SIZE, CORRUPT_NOISE = (1, 4), (0.1, 0.35), 0.5
#: What the refiner learns to correct; each training patch gives it one, drawn uniformly.
REFINER_INPUTS = ("segmenter probabilities (clean)", "segmenter probabilities (masked "
                  "latent)", "corrupted one-hot labels")
#: Refiner widths per level, relative to the width of stage 2's first level.
REFINER_WIDTHS = (1, 2, 4)


@dataclass(frozen=True)
class MaskParams:
    """One step's latent mask: its kind (:data:`MASK_KINDS`), the fraction zeroed and the
    seed of the random choice (unused by the targeted kinds)."""

    kind: str
    rate: float
    seed: int


def sample_mask(rng: np.random.Generator) -> MaskParams:
    """Draw a mask kind (uniformly), rate (:data:`MASK_RATE`) and seed."""
    return MaskParams(str(rng.choice(MASK_KINDS)), float(rng.uniform(*MASK_RATE)),
                      int(rng.integers(2**31)))


def latent_mask(params: MaskParams, features: torch.Tensor,
                grad: torch.Tensor | None = None) -> torch.Tensor:
    """The 0/1 mask for bottleneck ``features`` (B, C, X, Y, Z).

    Args:
        params: from :func:`sample_mask`.
        grad: dL/d``features`` (same shape); needed by the targeted kinds.

    Returns:
        (B, C, 1, 1, 1) for the channel kinds, (B, 1, X, Y, Z) for the spatial kinds, in
        ``features``' dtype and device; per patch ``max(1, round(rate x n))`` of its ``n``
        channels or voxels are 0, the rest 1.

    Raises:
        ValueError: an unknown kind, or a targeted kind without ``grad``.

    Example:
        >>> h = torch.ones(1, 4, 2, 2, 1)
        >>> g = torch.zeros_like(h); g[:, 2] = 5.0
        >>> latent_mask(MaskParams("targeted-channel", 0.25, 0), h, g).flatten().tolist()
        [1.0, 1.0, 0.0, 1.0]
    """
    if params.kind not in MASK_KINDS:
        raise ValueError(f"unknown latent mask kind {params.kind!r}; expected one of "
                         f"{MASK_KINDS}")
    b, c = features.shape[:2]
    spatial = params.kind.endswith("spatial")
    if params.kind.startswith("targeted"):
        if grad is None:
            raise ValueError(f"a {params.kind} mask needs the loss gradient")
        g = grad.detach().abs().float()
        score = g.sum(1).flatten(1) if spatial else g.flatten(2).mean(2)    # (B, V) / (B, C)
    else:
        gen = torch.Generator().manual_seed(params.seed)
        n = features[0, 0].numel() if spatial else c
        score = torch.rand((b, n), generator=gen).to(features.device)
    n = score.shape[1]
    k = min(n, max(1, int(round(params.rate * n))))
    keep = torch.ones_like(score)
    keep.scatter_(1, score.topk(k, dim=1).indices, 0.0)
    shape = (b, 1, *features.shape[2:]) if spatial else (b, c, 1, 1, 1)
    return keep.view(shape).to(features.dtype)


@dataclass(frozen=True)
class Corruption:
    """Label corruption of one batch: per patch a list of boxes ``(start, size, class)``,
    the noise weight and the noise seed."""

    boxes: tuple[tuple[tuple[tuple[int, int, int], tuple[int, int, int], int], ...], ...]
    noise: float
    seed: int


def sample_corruption(rng: np.random.Generator, batch: int, patch, n_classes: int,
                      slice_axis: int | None = 2) -> Corruption:
    """Draw :data:`CORRUPT_BOXES` boxes per patch (in-plane sides :data:`CORRUPT_SIZE` of
    the patch, 1 to half the slices along ``slice_axis``), each with a random class, and
    the noise weight (0 .. :data:`CORRUPT_NOISE`)."""
    boxes = []
    for _ in range(batch):
        one = []
        for _ in range(int(rng.integers(CORRUPT_BOXES[0], CORRUPT_BOXES[1] + 1))):
            size = tuple(int(rng.integers(1, max(2, n // 2 + 1))) if a == slice_axis else
                         max(1, int(round(rng.uniform(*CORRUPT_SIZE) * n)))
                         for a, n in enumerate(patch))
            start = tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(patch, size))
            one.append((start, size, int(rng.integers(n_classes))))
        boxes.append(tuple(one))
    return Corruption(tuple(boxes), float(rng.uniform(0, CORRUPT_NOISE)),
                      int(rng.integers(2**31)))


def corrupt_labels(params: Corruption, onehot: torch.Tensor) -> torch.Tensor:
    """Corrupted class probabilities from one-hot labels (B, C, X, Y, Z): each box of
    ``params`` relabelled to its class, then mixed ``(1 - w) p + w q`` with ``q`` the
    softmax of standard normal noise (sums stay 1)."""
    out = onehot.detach().clone()
    for b, boxes in enumerate(params.boxes):
        for start, size, cls in boxes:
            box = (b, slice(None), *(slice(s, s + k) for s, k in zip(start, size)))
            out[box] = 0.0
            out[(b, cls, *box[2:])] = 1.0
    gen = torch.Generator().manual_seed(params.seed)
    noise = torch.softmax(torch.randn(out.shape, generator=gen), dim=1).to(out)
    return (1 - params.noise) * out + params.noise * noise


class ShapeRefiner(nn.Module):
    """The shape-correcting network: class probabilities (B, C, X, Y, Z) of one stage-2
    window -> corrected class logits of the same shape (a small U-net, no dropout).

    Args:
        n_classes: C.
        channels: width per level (levels = len(channels)).
        pools / kernels: stage 2's; the first ``levels - 1`` pools and ``levels`` kernels
            are used, so every stage-2 window size fits.

    Example:
        >>> net = ShapeRefiner(4, (4, 8), ((2, 2, 1),), ((3, 3, 3),) * 2).eval()
        >>> tuple(net(torch.full((1, 4, 8, 8, 4), 0.25)).shape)
        (1, 4, 8, 8, 4)
    """

    def __init__(self, n_classes: int, channels, pools, kernels):
        super().__init__()
        n = min(len(channels), len(pools) + 1)
        self.net = MeUNet(n_classes, n_classes, tuple(channels)[:n], tuple(pools)[:n - 1],
                          tuple(kernels)[:n], dropout=0.0, checkpoint=False)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(probs)[0]


def require_refiner(model, model_dir=None) -> None:
    """Refuse ``--refine`` for a model trained without ``--cooperative``.

    Raises:
        InvalidDataError: the model has no refiner (65, naming ``model_dir`` when given).
    """
    from medflow.errors import InvalidDataError

    if model.refiner is None:
        raise InvalidDataError("the model has no refiner for --refine (train it with "
                               "--cooperative)", model_dir)


def refiner_channels(channels2) -> tuple[int, ...]:
    """The refiner's widths for a stage 2 of widths ``channels2`` (:data:`REFINER_WIDTHS`
    x its first width, as many levels as stage 2 has)."""
    base = int(channels2[0])
    return tuple(base * w for w in REFINER_WIDTHS[:len(channels2)])


def card() -> dict:
    """What the model card records about the cooperative training."""
    return {"cooperative_training": {
        "latent": "stage-2 bottleneck", "mask_kinds": list(MASK_KINDS),
        "mask_rate": list(MASK_RATE), "targeted_score": "channel: mean |dL/dh| over voxels; "
        "spatial: sum |dL/dh| over channels",
        "refiner_inputs": list(REFINER_INPUTS) + ["one per patch, drawn uniformly"],
        "corruption": {"boxes": list(CORRUPT_BOXES), "in_plane_size": list(CORRUPT_SIZE),
                       "max_noise_weight": CORRUPT_NOISE}}}
