"""Training both stages of the cascade in one loop.

Each step: augment one sample (sample-then-apply), run stage 1 on the whole downsampled
volume (loss against the block-averaged one-hot labels), then stage 2 on full-resolution
patches whose inputs are the *current* stage-1 probabilities (train mode, dropout on,
detached): stage 2 learns from stage-1 outputs that carry the errors of a partially
trained, noisy stage 1 rather than from ground truth. Stage-1 features reach stage 2's head
through post-concatenation, with gradients. ``gin-ipa`` and ``remap`` add a consistency
loss between the two appearance copies; the adv-chain modes add a second copy chained adversarially
against the current model (:mod:`segment.advchain`) and a consistency loss to it.
``cooperative`` (composable with every mode) adds hard examples decoded from a masked
stage-2 bottleneck and trains the shape-correcting refiner on the segmenter's clean and
hard outputs and on corrupted labels (:mod:`segment.cooperative`). Randomness per epoch
comes from ``(seed, epoch)``, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medflow.segment import advchain, cooperative
from medflow.segment.augment import apply_augment, sample_augment
from medflow.segment.cascade import Cascade, crop, downsample
from medflow.segment.infer import ArraySource, stream_predict
from medflow.segment.unet import autocast

IDENTITY_STATS = (-np.inf, np.inf, 0.0, 1.0)  # samples are normalised already


@dataclass
class TrainOptions:
    """Optimisation settings (recorded in the model card)."""

    epochs: int = 20
    lr: float = 2e-3
    augment: str = "standard"
    patches_per_sample: int = 2
    foreground_fraction: float = 0.67
    consistency_weight: float = 1.0
    max_val_frames: int = 2
    phase_weight: float = 0.0
    phase_loss_weight: float = 0.0
    adv_steps: int = 1
    cooperative: bool = False
    seed: int = 0


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)


def split_subjects(samples, val_fraction: float, seed: int):
    """Split samples by subject (never frames of one subject on both sides)."""
    subjects = sorted({s.subject for s in samples})
    n_val = int(round(val_fraction * len(subjects)))
    if val_fraction > 0 and len(subjects) > 1:
        n_val = min(max(n_val, 1), len(subjects) - 1)
    order = np.random.default_rng([seed, 99]).permutation(len(subjects))
    val = {subjects[i] for i in order[:n_val]}
    return [s for s in samples if s.subject not in val], [s for s in samples if s.subject in val]


def soft_dice_ce(logits: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy plus soft Dice (foreground classes) against (soft) one-hot targets;
    ``weight`` (B, 1, X, Y, Z) scales each voxel's cross-entropy."""
    logits = logits.float()
    ce = -(target * F.log_softmax(logits, dim=1)).sum(1)
    ce = (ce * weight[:, 0]).mean() if weight is not None else ce.mean()
    probs = torch.softmax(logits, dim=1)[:, 1:]
    tgt = target[:, 1:]
    dims = (0, 2, 3, 4)
    dice = (2 * (probs * tgt).sum(dims) + 1) / (probs.sum(dims) + tgt.sum(dims) + 1)
    return ce + (1 - dice.mean())


def one_hot(classes: torch.Tensor, n: int) -> torch.Tensor:
    """(B, X, Y, Z) long -> (B, n, X, Y, Z) float."""
    return F.one_hot(classes, n).permute(0, 4, 1, 2, 3).float()


def sample_starts(rng, classes: np.ndarray, patch, n: int, fg: float):
    """Window starts: a fraction ``fg`` centred on a random foreground voxel."""
    shape = classes.shape
    fg_idx = np.flatnonzero(classes) if fg > 0 else np.empty(0)
    out = []
    for _ in range(n):
        if fg_idx.size and rng.random() < fg:
            centre = np.unravel_index(fg_idx[rng.integers(fg_idx.size)], shape)
            start = [int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for c, p in
                     zip(centre, patch)]
        else:
            start = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(shape, patch)]
        out.append(tuple(min(max(st, 0), s - p) if s >= p else -((p - s) // 2)
                         for st, s, p in zip(start, shape, patch)))
    return out


def train_step(model: Cascade, opt, sample, opts: TrainOptions, rng, device: str,
               moved: np.ndarray | None = None) -> float:
    """One optimisation step on one sample; ``moved`` (X, Y, Z) marks the voxels whose label
    changes over the cycle, weighted ``1 + opts.phase_loss_weight`` in the loss.

    Appearance copies: 1, or 2 for ``gin-ipa`` and ``remap`` (consistency: symmetric KL
    between them) and the adv-chain modes (copy 2 is adversarially chained,
    :mod:`segment.advchain`, with its own moved labels; consistency: KL from the moved clean
    prediction)."""
    cfg = model.cfg
    mode = advchain.BASE_MODE.get(opts.augment, opts.augment)
    p = sample_augment(rng, mode, cfg.spacing, cfg.in_channels, cfg.kernels2[0],
                       cfg.n_classes)
    classes = torch.from_numpy(sample.classes)
    if moved is not None:  # rides with the labels through the spatial transform (nearest)
        classes = classes + cfg.n_classes * torch.from_numpy(moved).long()
    images, classes = apply_augment(torch.from_numpy(sample.image), classes, p, cfg.spacing)
    weight = None
    if moved is not None:
        weight = 1.0 + opts.phase_loss_weight * (classes // cfg.n_classes).float()
        weight, classes = weight[None, None].to(device), classes % cfg.n_classes
    images, target = images.to(device), one_hot(classes[None], cfg.n_classes).to(device)
    starts = sample_starts(rng, classes.numpy(), cfg.patch, opts.patches_per_sample,
                           opts.foreground_fraction)
    refs = None
    if opts.augment in advchain.BASE_MODE:
        adv, tgt, w, refs, _ = advchain.adversarial_copy(model, images[0], images[-1], target,
                                                         weight, starts, rng, opts.adv_steps)
        images, target = torch.stack([images[0], adv]), torch.cat([target, tgt])
        weight = None if weight is None else torch.cat([weight, w])
    k = images.shape[0]                                  # appearance copies
    target = target.expand(k, -1, -1, -1, -1)
    weight = None if weight is None else weight.expand(k, -1, -1, -1, -1)
    with autocast(device):
        out = model.forward_patches(images, starts, keep_latent=opts.cooperative)
        logits1, logits2 = out[0], out[1]
        loss = torch.zeros((), device=device)
        if logits1 is not None:
            loss = loss + soft_dice_ce(logits1, downsample(target, cfg.stage1_factor),
                                       None if weight is None else
                                       downsample(weight, cfg.stage1_factor))
        y = torch.cat([crop(target, s, cfg.patch) for s in starts])          # start-major
        w2 = None if weight is None else torch.cat([crop(weight, s, cfg.patch) for s in starts])
        seg2 = soft_dice_ce(logits2, y, w2)
        loss = loss + seg2
        if opts.cooperative:
            loss = loss + cooperative_loss(model, out[2], seg2, logits2, y, w2, rng)
        if refs is not None and opts.consistency_weight > 0:
            ref2 = torch.cat([crop(refs[1], s, cfg.patch) for s in starts])
            c = advchain.kl(ref2, logits2[1::2])
            if logits1 is not None:
                c = c + advchain.kl(refs[0], logits1[1:])
            loss = loss + opts.consistency_weight * c
        elif k == 2 and opts.consistency_weight > 0:
            logp = F.log_softmax(logits2.float(), dim=1)
            a, b = logp[0::2], logp[1::2]
            kl = (a.exp() * (a - b)).sum(1).mean() + (b.exp() * (b - a)).sum(1).mean()
            loss = loss + opts.consistency_weight * 0.5 * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def cooperative_loss(model: Cascade, latent, seg_loss: torch.Tensor, logits2: torch.Tensor,
                     target: torch.Tensor, weight: torch.Tensor | None,
                     rng: np.random.Generator) -> torch.Tensor:
    """The cooperative terms of one step (:mod:`segment.cooperative`).

    Args:
        latent: stage 2's encoder outputs of the step (:meth:`Cascade.forward_patches`).
        seg_loss: stage 2's loss on ``logits2``; a targeted mask takes its gradient with
            respect to the bottleneck.
        logits2 / target / weight: stage-2 logits, one-hot targets (B, n, *patch) and loss
            weights (B, 1, *patch) or None.

    Returns:
        the segmenter's loss on the hard example (the bottleneck masked by one mask drawn
        from ``rng``) plus the refiner's loss; the refiner sees per patch one input drawn
        from :data:`cooperative.REFINER_INPUTS` (the clean or hard probabilities, or
        corrupted labels; one per patch instead of all three: a third of the refiner's
        cost). Refiner inputs are detached: its loss trains the refiner only.
    """
    from medflow.segment.predict import slice_axis

    h = latent.levels[-1]
    params = cooperative.sample_mask(rng)
    grad = None
    if params.kind.startswith("targeted"):
        grad = torch.autograd.grad(seg_loss, h, retain_graph=True)[0]
    hard = model.decode_latent(latent, h * cooperative.latent_mask(params, h, grad))
    corruption = cooperative.sample_corruption(rng, target.shape[0], model.cfg.patch,
                                               model.cfg.n_classes,
                                               slice_axis(model.cfg.spacing))
    source = torch.from_numpy(rng.integers(len(cooperative.REFINER_INPUTS),
                                           size=target.shape[0]))
    inputs = torch.stack([torch.softmax(logits2.detach().float(), 1),
                          torch.softmax(hard.detach().float(), 1),
                          cooperative.corrupt_labels(corruption, target)])
    inputs = inputs[source, torch.arange(target.shape[0])]     # (B, n, *patch)
    refined = model.refiner(inputs.to(logits2.dtype))
    return soft_dice_ce(hard, target, weight) + soft_dice_ce(refined, target, weight)


def dice_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice per foreground class (nan where the class is absent in both)."""
    out = []
    for c in range(1, n_classes):
        a, b = pred == c, truth == c
        denom = a.sum() + b.sum()
        out.append(float(2 * (a & b).sum() / denom) if denom else float("nan"))
    return out


def evaluate(model: Cascade, samples, device: str = "cpu", refine: bool = False) -> list[float]:
    """Mean Dice per foreground class over ``samples`` with the inference code path
    (``refine``: through the model's refiner, as ``predict --refine``)."""
    model.eval()
    scores = []
    for s in samples:
        pred = np.zeros(s.classes.shape, np.int64)

        def keep(z0, z1, probs, _dis, pred=pred):
            pred[..., z0:z1] = probs.argmax(0).numpy()

        src = ArraySource(list(s.image), [IDENTITY_STATS] * s.image.shape[0])
        stream_predict(model, src, keep, device=device, refine=refine)
        scores.append(dice_scores(pred, s.classes, model.cfg.n_classes))
    with np.errstate(all="ignore"):
        return np.nanmean(np.asarray(scores, dtype=float), axis=0).tolist() if scores else []


def train(model: Cascade, samples, opts: TrainOptions, val_fraction: float = 0.2,
          device: str = "cpu", start_epoch: int = 0, history: list | None = None,
          opt=None, on_epoch=None, progress=None) -> list[dict]:
    """Train ``model`` in place from ``start_epoch`` to ``opts.epochs``.

    Args:
        samples: :class:`data.Sample` list (normalised images, class indices).
        on_epoch: called as ``on_epoch(model, opt, history)`` after every epoch (saving).
        progress: optional tqdm-like bar (``update``, ``set_postfix``).

    Returns:
        the training curve: one dict per epoch (loss, validation Dice per class).
    """
    history = list(history or [])
    if opts.cooperative and model.refiner is None:
        raise ValueError("cooperative training needs a model with a refiner "
                         "(CascadeConfig.refiner_channels)")
    model.to(memory_format=torch.channels_last_3d)  # as at inference; faster on CPU
    train_set, val_set = split_subjects(samples, val_fraction, opts.seed)
    val_set = _limit_frames(val_set, opts.max_val_frames)
    weights = phase_weights(train_set, opts.phase_weight)
    moved = moved_masks(train_set) if opts.phase_loss_weight > 0 else [None] * len(train_set)
    opt = opt or torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=1e-5)
    for epoch in range(start_epoch, opts.epochs):
        rng = np.random.default_rng([opts.seed, epoch])
        torch.manual_seed(int(rng.integers(2**31)))
        for group in opt.param_groups:
            group["lr"] = opts.lr * (1 - epoch / opts.epochs) ** 0.9
        model.train()
        losses = []
        for i in epoch_order(rng, len(train_set), weights):
            losses.append(train_step(model, opt, train_set[i], opts, rng, device, moved[i]))
            if progress is not None:
                progress.update(1)
        dice = evaluate(model, val_set, device) if val_set else []
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "val_dice_mean": float(np.nanmean(dice)) if dice else float("nan"),
               **{f"val_dice_{c + 1}": d for c, d in enumerate(dice)}}
        if opts.cooperative and val_set:
            refined = evaluate(model, val_set, device, refine=True)
            row["val_dice_refined_mean"] = float(np.nanmean(refined))
        history.append(row)
        if progress is not None:
            progress.set_postfix(loss=f"{row['loss']:.3f}", dice=f"{row['val_dice_mean']:.3f}")
        if on_epoch is not None:
            on_epoch(model, opt, history)
    return history


def moved_masks(samples) -> list[np.ndarray | None]:
    """Per sample, its subject's phase-dependent voxels: uint8 (X, Y, Z), 1 where the label
    is not the same in every frame of the cine (the moving ventricular walls, the base that
    is ventricle at ED and atrium at ES). None for a subject with one frame."""
    by_subject: dict[str, list] = {}
    for s in samples:
        by_subject.setdefault(s.subject, []).append(s)
    masks: dict[str, np.ndarray | None] = {}
    for subject, frames in by_subject.items():
        first = frames[0].classes
        same = [f.classes for f in frames[1:] if f.classes.shape == first.shape]
        masks[subject] = (np.any([c != first for c in same], axis=0).astype(np.uint8)
                          if same else None)
    return [masks[s.subject] for s in samples]


def phase_weights(samples, weight: float) -> np.ndarray | None:
    """Sampling weight per sample: ``1 + weight x c / c_max``, with ``c`` the number of
    voxels whose label differs from the subject's first labelled frame (ED) and ``c_max``
    the largest ``c`` of that subject. Frames far from ED (end systole) come up to
    ``1 + weight`` times as often; None (uniform) when ``weight`` is 0 or nothing moves."""
    if weight <= 0:
        return None
    first: dict[str, object] = {}
    for s in sorted(samples, key=lambda s: s.frame):
        first.setdefault(s.subject, s)
    change = np.array([np.count_nonzero(s.classes != first[s.subject].classes)
                       if s.classes.shape == first[s.subject].classes.shape else 0
                       for s in samples], dtype=float)
    top = {sub: max(change[i] for i, s in enumerate(samples) if s.subject == sub)
           for sub in first}
    w = np.array([1.0 + weight * c / top[s.subject] if top[s.subject] > 0 else 1.0
                  for c, s in zip(change, samples)])
    return None if np.allclose(w, 1.0) else w


def epoch_order(rng: np.random.Generator, n: int, weights=None) -> np.ndarray:
    """One epoch's sample indices: a permutation of ``n``, or ``n`` draws with replacement
    in proportion to ``weights``."""
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, p=weights / weights.sum())


def _limit_frames(samples, n: int):
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        if seen.get(s.subject, 0) < n:
            out.append(s)
            seen[s.subject] = seen.get(s.subject, 0) + 1
    return out
