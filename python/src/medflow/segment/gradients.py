"""The model as a differentiable function of its input: public helpers for tools that need
the segmentation loss and its gradient with respect to the image (suggest-annotation's
gradient-guided sampling).

Same conventions as training: intensities clipped and z-scored per image
(:func:`data.robust_stats`), resampled to the model's spacing, labels encoded to class
indices (an unknown label value is an error, exit 65), the training loss
(cross-entropy + soft Dice). The forward pass is one training-style window covering the
whole volume (stage 1 on the downsampled volume, stage 2 on the padded volume), so it is
meant for small volumes or thumbnails; streaming inference stays in :mod:`infer`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medflow.io.volume import Volume
from medflow.segment.cascade import Cascade
from medflow.segment.config import divisor_of
from medflow.segment.data import (encode_labels, needs_resampling, normalise, resampled_shape,
                                  resize, robust_stats)
from medflow.segment.train import soft_dice_ce


def _frame(vol: Volume, frame: int) -> np.ndarray:
    return np.asarray(vol.data if vol.data.ndim == 3 else vol.data[..., frame])


def normalised_channels(channels: list[Volume], frame: int = 0) -> torch.Tensor:
    """The image channels normalised as the model normalises them, on their own grid.

    Args:
        channels: the image channels on one grid, 3D or 4D (``frame`` picks a 4D frame).

    Returns:
        (1, C, X, Y, Z) float32: clipped to the 0.5-99.5 percentiles and z-scored per
        channel (statistics over all frames).
    """
    image = np.stack([normalise(_frame(c, frame), robust_stats(c.data)) for c in channels])
    return torch.from_numpy(image)[None]


def model_grid_input(model: Cascade, channels: list[Volume], frame: int = 0) -> torch.Tensor:
    """The normalised image on the model's grid, as the network sees it.

    Args:
        model: a trained cascade (its config gives the spacing).
        channels: the image channels on one grid, 3D or 4D (``frame`` picks a 4D frame).

    Returns:
        (1, C, X', Y', Z') float32, at the model's spacing (the same field of view).
    """
    first = channels[0]
    x = normalised_channels(channels, frame)
    if needs_resampling(first.spacing, model.cfg.spacing):
        x = resize(x, resampled_shape(first.shape3, first.spacing, model.cfg.spacing))
    return x


def model_grid_classes(model: Cascade, label: Volume, shape, frame: int = 0,
                       path=None) -> torch.Tensor:
    """A label map as class indices (1, X', Y', Z') on the grid of ``shape`` (nearest).

    Raises:
        InvalidDataError: a label value the model does not know (names ``path``).
    """
    classes = encode_labels(_frame(label, min(frame, label.n_frames - 1)), model.cfg.labels,
                            path)
    t = torch.from_numpy(classes)[None, None]
    return resize(t, tuple(shape), label=True)[:, 0]


def whole_volume_logits(model: Cascade, image: torch.Tensor) -> torch.Tensor:
    """Logits (B, classes, X, Y, Z) of the whole image in one differentiable pass.

    Args:
        image: (B, C, X, Y, Z) normalised, on the model's grid; zero padded (the
            normalised mean, as at inference) to a multiple of the pooling.
    """
    cfg = model.cfg
    shape = image.shape[2:]
    div = divisor_of(cfg.pools2)
    pad = [(-n) % d for n, d in zip(shape, div)]
    x = F.pad(image, [p for a in reversed(pad) for p in (0, a)])
    if model.stage1 is None:
        logits = model.forward_stage2(x)
    else:
        logits1, feats1 = model.forward_stage1(x)
        probs_up, feats_up = model.stage1_context(logits1, feats1, (0, 0, 0), x.shape[2:],
                                                  x.shape[2:])
        logits = model.forward_stage2(x, probs_up, feats_up)
    return logits[..., :shape[0], :shape[1], :shape[2]]


def segmentation_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The training loss (cross-entropy + soft Dice) of logits against class indices."""
    target = F.one_hot(classes.long(), logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    return soft_dice_ce(logits, target)


def loss_gradient(model: Cascade, image: torch.Tensor, classes: torch.Tensor
                  ) -> tuple[float, torch.Tensor]:
    """The segmentation loss and its gradient with respect to the input image.

    Args:
        image: (1, C, X, Y, Z) from :func:`model_grid_input`.
        classes: (1, X, Y, Z) from :func:`model_grid_classes`.

    Returns:
        (loss, gradient (1, C, X, Y, Z)); the model stays in eval mode (no dropout).
    """
    model.eval()
    x = image.detach().clone().requires_grad_(True)
    loss = segmentation_loss(whole_volume_logits(model, x), classes)
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad
