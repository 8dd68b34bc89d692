"""Training the shape prior (``super-resolve train-prior``) on high-resolution label maps.

Each step draws, per shape, an augmentation (scaling and a small rotation), an encoder
input (by default the map degraded like a thick-slice stack with breath-hold shifts: the
encoder's one use is to give the latent optimisation a good start from a stack; clean
inputs are an option) and supervision points at the map's own voxel centres (half near a
boundary). The
loss is the cross-entropy of the decoded logits interpolated at those points plus a small
KL term (a beta-VAE: a smooth latent space to optimise in).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from medflow.superres.geometry import apply_affine
from medflow.superres.prior import PriorConfig, ShapeVAE, inside_box, log_probs_at
from medflow.superres.shapes import (Shape, clean_input, draw_augmentation, draw_stack,
                                     stack_input, target_points)

log = logging.getLogger("medflow")


def _batch(shapes: list[Shape], cfg: PriorConfig, rng: np.random.Generator, points: int,
           augment: bool, stack_fraction: float):
    inputs, targets = [], []
    for shape in shapes:
        aug = draw_augmentation(rng) if augment else np.eye(3)
        if rng.random() < stack_fraction:
            inputs.append(stack_input(shape, cfg, aug, draw_stack(rng, cfg)))
        else:
            inputs.append(clean_input(shape, cfg, aug))
        targets.append(target_points(shape, points, rng, aug))
    return torch.from_numpy(np.stack(inputs)), targets


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, mean over the batch."""
    return (-0.5 * (1.0 + logvar - mean ** 2 - logvar.exp()).sum(dim=1)).mean()


def reconstruction_dice(net: ShapeVAE, shape: Shape, x: np.ndarray) -> list[float]:
    """Dice per foreground class of ``decode(encode(x))`` against the shape's own map."""
    cfg = net.cfg
    with torch.no_grad():
        mean, _ = net.encode(torch.from_numpy(x)[None])
        logits = net.decode(mean)[0]
        ijk = np.argwhere(np.ones(shape.classes.shape, bool)).astype(np.float64)
        world = apply_affine(shape.affine, ijk)
        q = torch.from_numpy(shape.frame.to_canonical(world).astype(np.float32))
        w2g = torch.from_numpy(cfg.world_to_grid().astype(np.float32))
        pred = log_probs_at(logits, q, w2g).argmax(dim=1).numpy()
    truth = shape.classes.reshape(-1)
    return [float(2 * ((pred == c) & (truth == c)).sum()
                  / max(1, (pred == c).sum() + (truth == c).sum()))
            for c in range(1, cfg.n_classes)]


def train_prior(train: list[Shape], val: list[Shape], cfg: PriorConfig, *, epochs: int,
                batch: int = 4, lr: float = 1e-2, points: int = 8000, beta: float = 1e-3,
                stack_fraction: float = 1.0, seed: int = 0, device: str = "cpu",
                progress: bool = False) -> tuple[ShapeVAE, list[dict], dict]:
    """Train a :class:`ShapeVAE` on shapes.

    Args:
        train, val: training and validation shapes (``val`` may be empty).
        cfg: architecture and canonical grid.
        epochs: passes over ``train`` (each shape once per epoch, freshly augmented).
        batch: shapes per step.
        lr: Adam learning rate (cosine-decayed to 5 % over the run; the decoder's
            instance normalisation takes a high rate).
        points: supervision points per shape and step.
        beta: weight of the KL term.
        stack_fraction: share of encoder inputs degraded like a stack.
        seed: seeds the draws and the weights.

    Returns:
        (network in eval mode, per-epoch history rows, validation dict with mean Dice per
        class for clean and stack-like inputs).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ShapeVAE(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, int(np.ceil(len(train) / batch)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    w2g = torch.from_numpy(cfg.world_to_grid().astype(np.float32)).to(device)
    history = []
    for epoch in range(epochs):
        net.train()
        t0, order, sums = time.perf_counter(), rng.permutation(len(train)), np.zeros(2)
        for start in range(0, len(train), batch):
            chosen = [train[i] for i in order[start:start + batch]]
            x, targets = _batch(chosen, cfg, rng, points, True, stack_fraction)
            mean, logvar = net.encode(x.to(device))
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            logits = net.decode(z)
            q = torch.from_numpy(np.stack([t[0] for t in targets])).to(device)
            c = torch.from_numpy(np.stack([t[1] for t in targets])).to(device)
            logp = log_probs_at(logits, q, w2g)  # (B, N, C)
            # points the box cannot hold (a heart larger than the box) teach nothing
            c = torch.where(inside_box(q, w2g, cfg.shape), c, torch.full_like(c, -100))
            ce = torch.nn.functional.nll_loss(logp.reshape(-1, logp.shape[-1]), c.reshape(-1),
                                              ignore_index=-100)
            kl = kl_divergence(mean, logvar)
            loss = ce + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += [float(ce.detach()) * len(chosen), float(kl.detach()) * len(chosen)]
        row = {"epoch": epoch + 1, "cross_entropy": sums[0] / len(train),
               "kl": sums[1] / len(train), "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        if progress or (epoch + 1) % 10 == 0 or epoch == 0:
            log.info("epoch %d: CE %.4f KL %.1f (%.1f s)", epoch + 1, row["cross_entropy"],
                     row["kl"], row["seconds"])
    net.eval()
    return net, history, validate(net, val, seed)


def validate(net: ShapeVAE, shapes: list[Shape], seed: int = 0) -> dict:
    """Mean reconstruction Dice per class (clean and stack-like inputs) on ``shapes``."""
    if not shapes:
        return {}
    rng = np.random.default_rng([seed, 1])
    names = [str(v) for v in net.cfg.labels[1:]]
    clean = [reconstruction_dice(net, s, clean_input(s, net.cfg, np.eye(3))) for s in shapes]
    stack = [reconstruction_dice(net, s, stack_input(s, net.cfg, np.eye(3),
                                                     draw_stack(rng, net.cfg))) for s in shapes]
    return {"shapes": len(shapes),
            "dice_clean": dict(zip(names, np.mean(clean, axis=0).round(4).tolist())),
            "dice_stack_encoder_only": dict(zip(names, np.mean(stack, axis=0).round(4).tolist()))}
