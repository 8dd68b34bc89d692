"""Training augmentation, sample-then-apply: ``sample_*`` draws an explicit parameter dict
from a seeded numpy Generator; ``apply_*`` is a deterministic function of it (TorchIO's
RandomGamma / Gamma split).

- ``standard``: flips, in-plane rotation, scaling (in-plane only for a stack of thick
  slices), gamma, intensity scale/shift, a smooth multiplicative bias field, Gaussian noise.
- ``gin-ipa`` (causality-inspired single-source domain generalisation): the spatial part of
  ``standard``, then two appearance copies of each image: copy A re-textured by a random
  shallow convolutional network (GIN); copy B the blend ``m * GIN_b(x) + (1 - m) * GIN_c(x)``
  of two independent re-texturings through a random smooth mask ``m`` (interventional
  pseudo-correlation augmentation). Training adds a consistency loss between the copies.
- ``remap`` (random tissue contrast): the spatial part of ``standard``, then two copies:
  copy A with ``standard``'s intensity transform; copy B through a random piecewise-linear
  intensity curve (knot values drawn uniformly, so often non-monotone: blood may come out
  darker than myocardium or fat, or two tissues nearly equal), then gamma, bias field and a
  wider noise range. Training adds the consistency loss between the copies, as for
  gin-ipa: the network must find the heart by shape and edges whatever the tissues' order
  of brightness (the contrast-agnostic aim of SynthSeg, Billot et al. 2023, done with a
  curve on the image since the phantom labels only the heart). Before gamma, each labelled
  structure of copy B may have its mean moved towards a random level (:func:`apply_class_shift`):
  a curve moves every voxel of one brightness together, so blood and myocardium keep
  their contrast order within an image's tissues; moving a labelled structure on its own
  is SynthSeg's per-label intensity draw, here only for the labelled heart, and it makes
  weak blood-myocardium contrast (gradient echo's) part of training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("none", "standard", "gin-ipa", "remap")


#: An axis whose spacing exceeds this many times the finest is a slice axis: spatial
#: augmentation never resamples along it (nnU-Net's in-plane augmentation of anisotropic
#: data; the same ratio above which :func:`config.plan_levels` stops pooling an axis).
SLICE_AXIS_RATIO = 2.0


def sample_spatial(rng: np.random.Generator, spacing) -> dict:
    """Flips per axis, rotation (rad) about the coarsest axis, scale per axis.

    The scale is one draw for every axis, except a slice axis (spacing more than
    :data:`SLICE_AXIS_RATIO` x the finest, e.g. a 10 mm short-axis stack at 1.8 mm pixels),
    which keeps scale 1. Scaling across 10 mm slices would blend neighbouring slices'
    images while the labels (nearest neighbour) come from one of them or from outside the
    stack: at the base of a cine that teaches "the most basal slice is background, whatever
    it shows", and the network can no longer tell the ventricle there at ED from the
    atrium at ES.
    """
    flip = [bool(f) for f in rng.random(3) < 0.5]
    angle, scale = float(rng.uniform(-math.pi / 12, math.pi / 12)), float(rng.uniform(0.85, 1.15))
    finest = min(float(s) for s in spacing)
    return {"flip": flip, "angle": angle,
            "scale": [1.0 if float(s) > SLICE_AXIS_RATIO * finest else scale for s in spacing],
            "axis": int(np.argmax(spacing))}


def apply_spatial(image: torch.Tensor, classes: torch.Tensor, p: dict, spacing):
    """image (C, X, Y, Z) float, classes (X, Y, Z) long -> transformed copies."""
    a, b = [i for i in range(3) if i != p["axis"]]
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    half = np.array(image.shape[1:]) * np.asarray(spacing) / 2.0   # physical half-extent
    scale = np.broadcast_to(np.asarray(p["scale"], np.float64), (3,))  # old cards: a float
    m = np.diag(1 / half) @ np.diag(1 / scale) @ rot.T @ np.diag(half)  # out-norm -> in-norm
    m = m[::-1, ::-1]                                   # affine_grid wants (z, y, x) order
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = torch.from_numpy(m.copy())
    size = (1, 1, *image.shape[1:])
    grid = F.affine_grid(theta, size, align_corners=False)
    img = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[0]
    lab = F.grid_sample(classes[None, None].float(), grid, mode="nearest",
                        padding_mode="zeros", align_corners=False)[0, 0].long()
    dims = [d for d in range(3) if p["flip"][d]]
    if dims:
        img, lab = img.flip([d + 1 for d in dims]), lab.flip(dims)
    return img.contiguous(), lab.contiguous()


def sample_intensity(rng: np.random.Generator) -> dict:
    """Gamma, scale, shift, bias-field coefficients (4x4x2 grid), noise std and seed."""
    return {"gamma": float(np.exp(rng.uniform(-0.3, 0.3))),
            "scale": float(rng.uniform(0.9, 1.1)), "shift": float(rng.uniform(-0.1, 0.1)),
            "bias": rng.normal(0, 0.15, size=(4, 4, 2)).tolist(),
            "noise": float(rng.uniform(0, 0.1)), "noise_seed": int(rng.integers(2**31))}


def apply_intensity(image: torch.Tensor, p: dict) -> torch.Tensor:
    """Deterministic intensity transform of a z-scored image (C, X, Y, Z)."""
    lo, hi = image.amin(), image.amax()
    unit = (image - lo) / (hi - lo + 1e-6)
    out = unit.pow(p["gamma"]) * (hi - lo) + lo
    field = smooth_field(torch.tensor(p["bias"]), image.shape[1:])
    out = out * torch.exp(field) * p["scale"] + p["shift"]
    g = torch.Generator().manual_seed(p["noise_seed"])
    return out + p["noise"] * torch.randn(out.shape, generator=g)


#: ``remap``: knots of the intensity curve (evenly spaced on the image's range), and copy
#: B's noise range (z units; ``standard`` draws 0-0.1, the GRE phantom's noise is ~0.2 of
#: its z-scored image). Six knots: a knot every fifth of the range, enough to move a tissue
#: class past its neighbours; random knot positions (steeper steps) scored lower on GRE.
REMAP_KNOTS, REMAP_NOISE = 6, 0.3


def sample_remap(rng: np.random.Generator) -> dict:
    """A random intensity curve on [0, 1]: the values (uniform) at its evenly spaced knots,
    and its weight against the identity."""
    return {"knots": rng.uniform(0, 1, REMAP_KNOTS).tolist(),
            "alpha": float(rng.uniform(0.5, 1.0))}


def apply_remap(image: torch.Tensor, p: dict) -> torch.Tensor:
    """Map (C, X, Y, Z) through the curve: the image's range to [0, 1], the piecewise-linear
    curve blended with the identity by alpha, z-scored. Every channel (frame) gets the same
    curve: one contrast per cine."""
    lo, hi = image.amin(), image.amax()
    unit = ((image - lo) / (hi - lo + 1e-6)).clamp(0, 1)
    ys = torch.tensor(p["knots"], dtype=image.dtype)
    x = unit * (len(ys) - 1)                       # knot k sits at k / (len - 1)
    i = x.floor().long().clamp(max=len(ys) - 2)    # the interval of each voxel
    frac = x - i
    curve = ys[i] * (1 - frac) + ys[i + 1] * frac
    return zscore(p["alpha"] * curve + (1 - p["alpha"]) * unit)


#: ``remap``'s class shift: the chance that a labelled structure's mean moves, and the range
#: of how far it moves towards its random level (a fraction of the distance).
CLASS_SHIFT_P, CLASS_SHIFT_WEIGHT = 0.5, (0.3, 1.0)


def sample_class_shift(rng: np.random.Generator, n_classes: int) -> dict:
    """Per class: whether it moves, its target level (a fraction of the image's 1st-99th
    percentile range) and the fraction of the way it moves. Class 0 (background) never
    moves."""
    on = rng.random(n_classes) < CLASS_SHIFT_P
    on[0] = False
    return {"on": on.tolist(), "level": rng.uniform(0, 1, n_classes).tolist(),
            "weight": rng.uniform(*CLASS_SHIFT_WEIGHT, n_classes).tolist()}


def apply_class_shift(image: torch.Tensor, classes: torch.Tensor, p: dict,
                      spacing) -> torch.Tensor:
    """Move each chosen structure's mean intensity (all channels of (C, X, Y, Z) together)
    ``weight`` of the way to its ``level``, through its mask blurred over 3 voxels in-plane
    (a partial-volume edge, not a step exactly on the label's boundary); z-scored again.
    ``classes`` (X, Y, Z) holds class indices, modulo the number of classes (training adds
    ``n_classes`` to voxels the cycle moves); texture inside a structure is kept."""
    flat = image.flatten()
    sample = flat[torch.linspace(0, flat.numel() - 1, min(flat.numel(), 100_000)).long()]
    lo, hi = (float(q) for q in torch.quantile(sample, torch.tensor([0.01, 0.99])))
    finest = min(float(s) for s in spacing)
    kernel = tuple(1 if float(s) > SLICE_AXIS_RATIO * finest else 3 for s in spacing)
    classes, out = classes % len(p["on"]), image.clone()
    for k, (on, level, weight) in enumerate(zip(p["on"], p["level"], p["weight"])):
        mask = classes == k
        if not on or not bool(mask.any()):
            continue
        shift = weight * (lo + level * (hi - lo) - float(image[:, mask].mean()))
        soft = F.avg_pool3d(mask[None, None].float(), kernel, stride=1,
                            padding=tuple(n // 2 for n in kernel), count_include_pad=False)
        out = out + shift * soft[0]
    return zscore(out)


def smooth_field(coarse: torch.Tensor, size) -> torch.Tensor:
    """A coarse (x, y, z) grid upsampled smoothly (trilinear) to ``size``."""
    return F.interpolate(coarse[None, None].float(), size=tuple(size), mode="trilinear",
                         align_corners=True)[0, 0]


def sample_gin(rng: np.random.Generator, in_ch: int, kernel=(3, 3, 3), layers: int = 4,
               width: int = 2) -> dict:
    """Weights, biases and kernel sizes of a random shallow conv net (GIN), plus its mixing
    weight alpha.

    Each layer's kernel is 1 or ``kernel`` at random, as in GIN. Weights are scaled by
    1/sqrt(fan-in) so every layer's activations stay at about unit scale, and biases are
    N(0, 1): the LeakyReLU kinks then fall *inside* the intensity range, so the net maps
    tissue intensities non-monotonically (blood may end up darker than muscle). Without
    biases a conv + LeakyReLU net is positively homogeneous, i.e. on a z-scored image it is
    only a two-slope linear map around 0, far too weak to imitate another MR contrast.
    """
    chans = [in_ch] + [width] * (layers - 1) + [in_ch]
    convs = []
    for i, o in zip(chans, chans[1:]):
        k = tuple(kernel) if rng.random() < 0.5 else (1, 1, 1)
        fan_in = i * int(np.prod(k))
        convs.append({"weight": (rng.normal(0, 1, size=(o, i, *k)) / np.sqrt(fan_in)).tolist(),
                      "bias": rng.normal(0, 1, size=o).tolist()})
    return {"convs": convs, "alpha": float(rng.uniform(0, 1))}


def zscore(image: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per channel of (C, X, Y, Z): the normalisation
    every image gets at inference, so augmented copies live on the same intensity scale."""
    flat = image.flatten(1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-6)
    return (image - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def apply_gin(image: torch.Tensor, p: dict) -> torch.Tensor:
    """Re-texture (C, X, Y, Z): random convs + LeakyReLU, z-scored, mixed with the input by
    alpha, z-scored again. With temporal context C is several frames' worth of the net's
    input channels: each frame's group goes through the same net (one appearance per cine)."""
    group = len(p["convs"][0]["weight"][0])           # the GIN net's input channels
    h = image.reshape(-1, group, *image.shape[1:])    # (frames, group, X, Y, Z)
    n = len(p["convs"])
    for i, conv in enumerate(p["convs"]):
        w = torch.tensor(conv["weight"], dtype=image.dtype)
        b = torch.tensor(conv["bias"], dtype=image.dtype)
        h = F.conv3d(h, w, b, padding=tuple(k // 2 for k in w.shape[2:]))
        if i < n - 1:
            h = F.leaky_relu(h, 0.2)
    return zscore(p["alpha"] * zscore(h.reshape(image.shape)) + (1 - p["alpha"]) * image)


def sample_ipa_mask(rng: np.random.Generator) -> dict:
    """A random smooth pseudo-correlation mask: coarse Gaussian grid and sharpness."""
    return {"coarse": rng.normal(0, 1, size=(4, 4, 3)).tolist(),
            "sharpness": float(rng.uniform(2, 6))}


def apply_ipa_mask(p: dict, size) -> torch.Tensor:
    return torch.sigmoid(p["sharpness"] * smooth_field(torch.tensor(p["coarse"]), size))


def sample_augment(rng: np.random.Generator, mode: str, spacing, in_ch: int,
                   kernel=(3, 3, 3), n_classes: int = 0) -> dict:
    """All parameters of one augmentation draw for ``mode`` (see :data:`MODES`);
    ``n_classes`` (background included) for ``remap``'s class shift (0: none)."""
    if mode == "none":
        return {"mode": mode}
    p = {"mode": mode, "spatial": sample_spatial(rng, spacing)}
    if mode == "standard":
        p["intensity"] = sample_intensity(rng)
    elif mode == "remap":
        p["intensity"], p["remap"] = sample_intensity(rng), sample_remap(rng)
        p["remap_intensity"] = {**sample_intensity(rng),
                                "noise": float(rng.uniform(0, REMAP_NOISE))}
        if n_classes:
            p["class_shift"] = sample_class_shift(rng, n_classes)
    else:
        p["gin"] = [sample_gin(rng, in_ch, kernel) for _ in range(3)]
        p["mask"] = sample_ipa_mask(rng)
    return p


def apply_augment(image: torch.Tensor, classes: torch.Tensor, p: dict, spacing):
    """Returns (images (K, C, X, Y, Z), classes (X, Y, Z)); K = 2 copies for gin-ipa and
    remap."""
    if p["mode"] == "none":
        return image[None], classes
    image, classes = apply_spatial(image, classes, p["spatial"], spacing)
    if p["mode"] == "standard":
        return apply_intensity(image, p["intensity"])[None], classes
    if p["mode"] == "remap":
        remapped = apply_remap(image, p["remap"])
        if "class_shift" in p:
            remapped = apply_class_shift(remapped, classes, p["class_shift"], spacing)
        remapped = apply_intensity(remapped, p["remap_intensity"])
        return torch.stack([apply_intensity(image, p["intensity"]), remapped]), classes
    gin_a, gin_b, gin_c = (apply_gin(image, g) for g in p["gin"])
    m = apply_ipa_mask(p["mask"], image.shape[1:])[None]
    copy_b = zscore(m * gin_b + (1 - m) * gin_c)  # a blend of two z-scored images is not
    return torch.stack([gin_a, copy_b]), classes
