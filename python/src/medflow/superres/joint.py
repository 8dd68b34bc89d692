"""Training and running the ``joint`` network (:mod:`medflow.superres.joint_net`).

The network works on the output grid: the stack's image and label fractions are first
interpolated onto it (trilinear in the stack's voxel space); the network learns what
interpolation cannot: the through-plane shape and the partial volume. A model trained
with a shape prior (``train --prior``) sees each stack with its slice shifts undone, as
the ``latent`` method estimates them (:func:`medflow.superres.run.estimate_shifts`), in
training and in prediction alike: the first seed's motion correction in front of the
second seed's super-resolution. Without one it sees the stack as acquired and has to
learn the misalignment too, which it does not (benchmarks/superres/README.md).
Intensities are divided by the stack frame's 99th percentile and multiplied back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from medflow.segment.augment import sample_remap
from medflow.superres.baselines import stack_coordinates, undo_slice_shifts
from medflow.superres.joint_net import JointConfig, JointNet
from medflow.superres.shapes import class_map

log = logging.getLogger("medflow")


def image_scale(image: np.ndarray) -> float:
    """The intensity unit: the 99th percentile of a stack frame (1 for an empty image)."""
    value = float(np.percentile(np.asarray(image, np.float32), 99))
    return value if value > 0 else 1.0


def network_input(image: np.ndarray, labels: np.ndarray, stack_affine: np.ndarray,
                  affine: np.ndarray, shape, cfg: JointConfig, scale: float,
                  shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """(1 + C - 1, X, Y, Z) float32: the image / scale and each foreground class fraction,
    interpolated trilinearly from one stack frame (X, Y, K) onto the grid; 0 outside.
    ``shifts_mm`` (K, 2): per-slice shifts (truth.json's convention) undone first."""
    ijk = stack_coordinates(stack_affine, affine, shape)
    inside = np.all((ijk > -0.5) & (ijk < np.array(labels.shape[:3])[:, None] - 0.5), axis=0)
    ijk[2] = np.clip(ijk[2], 0.0, labels.shape[2] - 1.0)
    classes = class_map(labels, cfg.labels)
    maps = [np.asarray(image, np.float32) / scale]
    maps += [(classes == c).astype(np.float32) for c in range(1, cfg.n_classes)]
    if shifts_mm is not None:
        maps = [undo_slice_shifts(m, stack_affine, shifts_mm) for m in maps]
    out = np.stack([map_coordinates(m, ijk, order=1, mode="nearest") * inside for m in maps])
    return out.reshape((len(maps), *shape)).astype(np.float32)


@dataclass
class Pair:
    """One training example on the high-resolution grid: network input, target image
    (same scale) and target classes."""

    x: np.ndarray        # (C_in, X, Y, Z) float32
    image: np.ndarray    # (X, Y, Z) float32, HR image / scale
    classes: np.ndarray  # (X, Y, Z) uint8


def make_pair(image, labels, stack_affine, hr_image, hr_labels, hr_affine, cfg,
              shifts_mm: np.ndarray | None = None) -> Pair:
    scale = image_scale(image)
    x = network_input(image, labels, stack_affine, hr_affine, hr_labels.shape, cfg, scale,
                      shifts_mm)
    return Pair(x, np.asarray(hr_image, np.float32) / scale, class_map(hr_labels, cfg.labels))


def _patch(pair: Pair, size, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = pair.classes.shape
    size = [min(s, n - n % 4) for s, n in zip(size, shape)]
    start = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size))
    return pair.x[(slice(None), *sl)], pair.image[sl], pair.classes[sl]


def remap_pair(x_image: np.ndarray, target: np.ndarray, knots, alpha: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """The same random intensity curve applied to a patch's input image and its
    high-resolution target: another contrast with the same anatomy.

    The curve is piecewise linear with evenly spaced ``knots`` (values in [0, 1]) over
    [0, the input patch's maximum], blended with the identity by ``alpha``
    (:func:`medflow.segment.augment.sample_remap` draws both), and maps back to the input's
    range; values beyond it take the last knot's value.
    """
    top = float(max(x_image.max(), 1e-6))
    ys = np.asarray(knots, np.float32)

    def curve(v):
        u = np.clip(v / top, 0.0, 1.0)
        mapped = np.interp(u, np.linspace(0.0, 1.0, len(ys)), ys)
        return (top * (alpha * mapped + (1 - alpha) * u)).astype(np.float32)

    return curve(x_image), curve(target)


def train_joint(train: list[Pair], val: list[Pair], cfg: JointConfig, *, steps: int,
                batch: int = 2, lr: float = 2e-3, image_weight: float = 1.0, seed: int = 0,
                device: str = "cpu", remap: float = 0.5) -> tuple[JointNet, list[dict], dict]:
    """Train on random patches: L1 on the image (in units of the scale) plus the
    cross-entropy of the labels. A ``remap`` fraction of the patches see another contrast
    (:func:`remap_pair`): without it the label head learns the training contrast's
    intensities and one of two models trained on SSFP fell to LV Dice 0.27 on GRE
    images with the same labels (benchmarks/superres/README.md).

    Returns:
        (network in eval mode, history rows every 50 steps, validation dict).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = JointNet(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    history, sums, t0 = [], np.zeros(2), time.perf_counter()
    for step in range(steps):
        net.train()
        patches = [_patch(train[int(rng.integers(len(train)))], cfg.patch, rng)
                   for _ in range(batch)]
        for i, (x, target, classes) in enumerate(patches):
            if rng.random() < remap:
                p = sample_remap(rng)
                image, target = remap_pair(x[0], target, p["knots"], p["alpha"])
                patches[i] = (np.concatenate([image[None], x[1:]]), target, classes)
        size = np.min([p[2].shape for p in patches], axis=0)
        x = torch.from_numpy(np.stack([p[0][:, :size[0], :size[1], :size[2]] for p in patches]))
        y_img = torch.from_numpy(np.stack([p[1][:size[0], :size[1], :size[2]] for p in patches]))
        y_lab = torch.from_numpy(np.stack([p[2][:size[0], :size[1], :size[2]]
                                           for p in patches]).astype(np.int64))
        image, logits = net(x.to(device))
        l1 = (image[:, 0] - y_img.to(device)).abs().mean()
        ce = torch.nn.functional.cross_entropy(logits, y_lab.to(device))
        loss = image_weight * l1 + ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        sums += [float(l1.detach()), float(ce.detach())]
        if (step + 1) % 50 == 0:
            history.append({"step": step + 1, "l1": sums[0] / 50, "cross_entropy": sums[1] / 50,
                            "seconds": round(time.perf_counter() - t0, 1)})
            log.info("step %d: L1 %.4f CE %.4f", step + 1, sums[0] / 50, sums[1] / 50)
            sums[:] = 0
    net.eval()
    return net, history, validate_joint(net, val)


def run_joint(net: JointNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network on a whole grid: (image / scale (X, Y, Z) float32, class indices)."""
    shape = x.shape[1:]
    pad = [(0, 0)] + [(0, (-n) % 4) for n in shape]
    xt = torch.from_numpy(np.pad(x, pad))[None]
    with torch.no_grad():
        image, logits = net(xt)
    sl = tuple(slice(0, n) for n in shape)
    return image[0, 0][sl].numpy(), logits[0].argmax(0)[sl].numpy().astype(np.uint8)


def validate_joint(net: JointNet, pairs: list[Pair]) -> dict:
    """Mean Dice per class and PSNR (dB, against the HR image) on whole validation grids."""
    from medflow.superres.metrics import psnr

    if not pairs:
        return {}
    dice, gains = [], []
    for p in pairs:
        image, classes = run_joint(net, p.x)
        dice.append([2 * ((classes == c) & (p.classes == c)).sum()
                     / max(1, (classes == c).sum() + (p.classes == c).sum())
                     for c in range(1, net.cfg.n_classes)])
        gains.append(psnr(image, p.image) - psnr(p.x[0], p.image))
    names = [str(v) for v in net.cfg.labels[1:]]
    return {"pairs": len(pairs), "dice": dict(zip(names, np.mean(dice, 0).round(4).tolist())),
            "psnr_gain_over_linear_db": round(float(np.mean(gains)), 3)}
