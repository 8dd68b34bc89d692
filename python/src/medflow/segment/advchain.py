"""Adversarial data augmentation chains (``--augment adv-chain``).

After Chen et al., "Enhancing MR image segmentation with realistic adversarial data
augmentation" (Medical Image Analysis 2022; abstract in the project's seeds): photometric
(additive noise, smooth multiplicative bias field, gamma) and geometric (affine, smooth
in-plane deformation) transformations, chained in a random order per sample, all
differentiable in their parameters. Starting from a random draw inside each budget, the
parameters take ``steps`` normalised gradient-ascent steps on the disagreement (KL
divergence) between the current model's prediction on the chained image and its clean
prediction moved by the chain's geometry, and are projected back into the budgets.
Training then uses the chained copy with labels moved the same way, plus a consistency
term (the same KL). Our own implementation (the authors' code is not reused).

Geometry lives in normalised coordinates ([-1, 1], ``align_corners=False``), so one chain
moves the full-resolution image and labels and the stage-1 (downsampled) predictions
alike. An axis whose spacing exceeds :data:`augment.SLICE_AXIS_RATIO` x the finest (a
short-axis stack of 10 mm slices) is never moved: rotation, scaling, shifts and the
deformation stay in-plane.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medflow.segment.augment import SLICE_AXIS_RATIO, smooth_field, zscore
from medflow.segment.cascade import crop

#: ``--augment`` modes with an adversarial chain, and the base mode each builds on.
BASE_MODE = {"adv-chain": "standard", "gin-ipa+adv-chain": "gin-ipa"}
PHOTOMETRIC = ("noise", "bias", "gamma")
GEOMETRIC = ("affine", "deform")
#: Budgets (projection bounds) on a z-scored image: noise RMS; log bias-field coefficient
#: (x1.5 at most); |log gamma| (gamma 0.61-1.65); rotation (rad); |log scale|; shift and
#: deformation in normalised units (0.03 = 1.5 % of the extent, ~3 voxels of 184).
BUDGET = {"noise": 0.15, "bias": 0.4, "gamma": 0.5, "angle": math.pi / 12, "scale": 0.1,
          "shift": 0.05, "deform": 0.03}
STEP = 0.5          # each ascent step moves a parameter by this fraction of its budget
BIAS_GRID, DEFORM_GRID = (4, 4, 2), (5, 5, 3)


def copies(augment: str) -> int:
    """Appearance copies per training step for an ``--augment`` mode (memory planning): 2
    for gin-ipa, remap and the adv-chain modes (clean + chained copy), else 1."""
    return 2 if augment in ("gin-ipa", "remap") or augment in BASE_MODE else 1


def card(augment: str) -> dict:
    """The chain's ops, budgets and step for the model card ({} for other modes)."""
    if augment not in BASE_MODE:
        return {}
    return {"adv_chain": {"base": BASE_MODE[augment], "ops": [*PHOTOMETRIC, *GEOMETRIC],
                          "budget": dict(BUDGET), "step_fraction": STEP,
                          "consistency": "KL(moved clean prediction || chained prediction)"}}


class Chain:
    """One sample's chain: op order, parameters (leaf tensors with gradients) and the
    geometry they act in. Image (C, X, Y, Z) of ``shape`` at ``spacing`` (mm); parameters
    drawn on the CPU (same draw on every device) and moved to ``device``."""

    def __init__(self, rng: np.random.Generator, shape, spacing, channels: int,
                 device="cpu"):
        finest = min(float(s) for s in spacing)
        self.moving = [a for a in range(3) if float(spacing[a]) <= SLICE_AXIS_RATIO * finest]
        axis = int(np.argmax(spacing))
        self.plane = [a for a in range(3) if a != axis]
        self.half = [n * float(s) / 2 for n, s in zip(shape, spacing)]  # physical half-extent
        self.order = [str(o) for o in rng.permutation(PHOTOMETRIC + GEOMETRIC)]
        b = BUDGET
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        init = {
            "noise": torch.randn((channels, *shape), generator=gen) * b["noise"] / 2,
            "bias": torch.from_numpy(rng.normal(0, b["bias"] / 2, BIAS_GRID)),
            "gamma": torch.tensor(rng.uniform(-1, 1) * b["gamma"] / 2),
            "angle": torch.tensor(rng.uniform(-1, 1) * b["angle"] / 2),
            "scale": torch.tensor(rng.uniform(-1, 1) * b["scale"] / 2),
            "shift": torch.from_numpy(rng.uniform(-1, 1, 2) * b["shift"] / 2),
            "deform": torch.from_numpy(rng.normal(0, b["deform"] / 2,
                                                  (len(self.moving), *DEFORM_GRID))),
        }
        self.params = {k: v.float().to(device).requires_grad_(True) for k, v in init.items()}
        self.project()

    def project(self) -> None:
        """Clamp every parameter into its budget (noise: rescale to the RMS budget)."""
        with torch.no_grad():
            for k, v in self.params.items():
                if k == "noise":
                    v.mul_(min(1.0, BUDGET[k] / (float(v.pow(2).mean().sqrt()) + 1e-12)))
                else:
                    v.clamp_(-BUDGET[k], BUDGET[k])

    def ascend(self, grads) -> None:
        """One normalised gradient-ascent step (RMS-normalised per parameter, i.e. the sign
        for a scalar), then projection."""
        with torch.no_grad():
            for (k, v), g in zip(self.params.items(), grads):
                if g is not None:
                    v.add_(STEP * BUDGET[k] * g / (g.pow(2).mean().sqrt() + 1e-12))
        self.project()

    def grid(self, op: str, size) -> torch.Tensor:
        """Sampling grid (1, X, Y, Z, 3) in our axis order (x, y, z), normalised."""
        dev = self.params["gamma"].device
        axes = [(2 * torch.arange(n, dtype=torch.float32, device=dev) + 1) / n - 1 for n in size]
        g = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)[None]
        p = self.params
        if op == "affine":
            a, b = self.plane
            if a not in self.moving or b not in self.moving:
                return g
            ha, hb = self.half[a], self.half[b]
            pa, pb = g[..., a] * ha, g[..., b] * hb
            c, s, k = torch.cos(p["angle"]), torch.sin(p["angle"]), torch.exp(-p["scale"])
            qa = (c * pa - s * pb) * k / ha + p["shift"][0]
            qb = (s * pa + c * pb) * k / hb + p["shift"][1]
            cols = [qa if i == a else qb if i == b else g[..., i] for i in range(3)]
            return torch.stack(cols, -1)
        field = F.interpolate(p["deform"][None], size=tuple(size), mode="trilinear",
                              align_corners=True)[0]
        shift = {ax: field[i] for i, ax in enumerate(self.moving)}
        return torch.stack([g[..., i] + shift[i] if i in shift else g[..., i]
                            for i in range(3)], -1)

    def photometric(self, op: str, image: torch.Tensor) -> torch.Tensor:
        """Noise, bias or gamma on (C, X, Y, Z); bias and gamma act on intensities above
        the channel minimum (a field multiplies signal, not the z-scored offset)."""
        p = self.params
        if op == "noise":
            return image + p["noise"]
        lo = image.detach().flatten(1).amin(1).view(-1, 1, 1, 1)
        hi = image.detach().flatten(1).amax(1).view(-1, 1, 1, 1)
        if op == "bias":
            return (image - lo) * torch.exp(smooth_field(p["bias"], image.shape[1:])) + lo
        unit = ((image - lo) / (hi - lo + 1e-6)).clamp_min(1e-6)
        return unit.pow(torch.exp(p["gamma"])) * (hi - lo) + lo

    def apply(self, image: torch.Tensor, moving: list) -> tuple[torch.Tensor, list]:
        """Chain ``image`` (C, X, Y, Z) -> z-scored result; each tensor in ``moving``
        ((B, C', x, y, z) at any resolution, or None) follows the geometric ops only
        (bilinear: one-hot labels become soft labels, probabilities stay probabilities)."""
        for op in self.order:
            if op in PHOTOMETRIC:
                image = self.photometric(op, image)
                continue
            image = warp(image[None], self.grid(op, image.shape[1:]))[0]
            moving = [None if t is None else warp(t, self.grid(op, t.shape[2:]))
                      for t in moving]
        return zscore(image), moving


def warp(t: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, X, Y, Z) at ``grid`` (1, X, Y, Z, 3 in x, y, z order), border
    padding. grid_sample wants its last axis in (z, y, x) order, hence the flip."""
    g = grid.flip(-1).expand(t.shape[0], -1, -1, -1, -1)
    return F.grid_sample(t, g, mode="bilinear", padding_mode="border", align_corners=False)


def kl(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of KL(reference || softmax(logits)); (B, C, ...) both."""
    logp = F.log_softmax(logits.float(), dim=1)
    return (torch.xlogy(reference, reference) - reference * logp).sum(1).mean()


def clean_reference(model, image: torch.Tensor):
    """The model's clean prediction (eval mode, no gradients) on one whole image (1, C, X,
    Y, Z): (stage-1 probabilities on the coarse grid or None, stage-2 probabilities
    (1, n, X, Y, Z) from one pass of stage 2 over the whole image, zero-padded to its pool
    divisor)."""
    from medflow.segment.config import divisor_of

    was = model.training
    model.eval()
    with torch.no_grad():
        shape = tuple(image.shape[2:])
        padded = tuple(-(-n // d) * d for n, d in zip(shape, divisor_of(model.cfg.pools2)))
        x = crop(image, (0, 0, 0), padded)
        probs1, ctx = None, ()
        if model.stage1 is not None:
            logits1, feats1 = model.forward_stage1(image)
            probs1 = torch.softmax(logits1.float(), 1)
            ctx = model.stage1_context(logits1, feats1, (0, 0, 0), padded, shape)
        logits2 = model.forward_stage2(x, *ctx)[..., :shape[0], :shape[1], :shape[2]]
    model.train(was)
    return probs1, torch.softmax(logits2.float(), 1)


def disagreement(model, chain: Chain, image, refs, starts) -> torch.Tensor:
    """KL between the clean prediction moved by the chain and the model's prediction on
    the chained ``image`` (C, X, Y, Z): stage-2 patches at ``starts`` (+ stage 1, whole)."""
    adv, (ref1, ref2) = chain.apply(image, list(refs))
    logits1, logits2 = model.forward_patches(adv[None], starts)
    d = kl(torch.cat([crop(ref2, s, model.cfg.patch) for s in starts]), logits2)
    return d + kl(ref1, logits1) if logits1 is not None else d


def adversarial_copy(model, clean, base, target, weight, starts, rng: np.random.Generator,
                     steps: int = 1):
    """Optimise a chain against ``model`` and return the training copy.

    Args:
        clean: (C, X, Y, Z) image whose prediction is the reference (the clean copy).
        base: (C, X, Y, Z) image the chain transforms (``clean`` itself, or the second
            GIN-IPA copy for ``gin-ipa+adv-chain``).
        target / weight: (1, n, X, Y, Z) one-hot labels / (1, 1, X, Y, Z) loss weights or
            None, in ``clean``'s geometry.
        starts: the step's stage-2 patch starts.

    Returns:
        (image (C, X, Y, Z), target, weight, (ref1, ref2), history) with the labels,
        weights and clean-prediction references moved by the chain's geometry (no
        gradients) and ``history`` the disagreement before each ascent step.
    """
    refs = clean_reference(model, clean[None])
    chain = Chain(rng, clean.shape[1:], model.cfg.spacing, clean.shape[0], clean.device)
    was = model.training
    model.eval()                      # the attack sees the deterministic model (no dropout)
    history = []
    for _ in range(steps):
        d = disagreement(model, chain, base, refs, starts)
        history.append(float(d.detach()))
        chain.ascend(torch.autograd.grad(d, list(chain.params.values()), allow_unused=True))
    model.train(was)
    with torch.no_grad():
        image, (tgt, w, r1, r2) = chain.apply(base, [target, weight, *refs])
    return image, tgt, w, (r1, r2), history
