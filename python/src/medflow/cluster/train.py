"""Training: metadata-enhanced contrastive pretraining, clustering, self-labelling.

1. Contrastive: each step draws ``batch`` anchor slices (series uniformly, then a slice;
   ``visit_mates`` of the series come in pairs with another series of the same visit, at
   the same level of the stack: the hard negatives), pairs each with a metadata positive
   (:mod:`medflow.cluster.pairs`), augments both views independently and minimises the
   SupCon loss with metadata positives (neighbouring frames of a slice position) and the
   series' other slices left out.
2. Clustering: slice embeddings are averaged per series (series-level categories) and
   clustered by k-means; k is given or chosen by the silhouette (:func:`choose_k`).
3. Self-labelling (the refinement step of SCAN, Van Gansbeke et al. 2020, and of the
   unsupervised categorisation seed), ``rounds`` times, each round clustering the
   embedding the previous one refined: the series closest to each centre (``keep`` of each
   cluster) become pseudo-labelled; the whole encoder and a classifier head are trained
   on augmented slices with cross-entropy, clusters drawn uniformly (imbalanced cohorts),
   keeping the contrastive loss as a regulariser. Augmented intensity curves, bias fields
   and crops make the classifier follow content rather than intensity scale or framing.
   The final category of a series is the arg-max of its slices' mean class probability.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from medflow.cluster.augment import augment
from medflow.cluster.clustering import choose_k, fit_map, kmeans
from medflow.cluster.data import TrainingSet
from medflow.cluster.encoder import EncoderConfig, SliceEncoder, TrainConfig, supcon_loss
from medflow.cluster.pairs import (batch_masks, draw_partners, mate_slices,
                                  positive_candidates, visit_mates)
from medflow.cluster.slices import two_scale

log = logging.getLogger("medflow")
EMBED_BATCH = 256


def _optimiser(model: SliceEncoder, lr: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    return opt, sched


def _members(data: TrainingSet) -> list[np.ndarray]:
    order = np.argsort(data.series_of, kind="stable")
    bounds = np.searchsorted(data.series_of[order], np.arange(len(data.series) + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(len(data.series))]


def _batch(data: TrainingSet, idx: np.ndarray, device: str) -> torch.Tensor:
    """Stored slices (B, 1, 2S, 2S), float32."""
    return torch.from_numpy(data.slices[idx].astype(np.float32))[:, None].to(device)


def _mate(mates: dict[int, np.ndarray], s: int, n: int, rng: np.random.Generator) -> int:
    """A random visit mate of series ``s`` (another random series when it has none)."""
    m = mates.get(int(s), ())
    return int(m[rng.integers(len(m))]) if len(m) else int(rng.integers(n))


def contrastive(model: SliceEncoder, data: TrainingSet, cfg: TrainConfig, seed: int,
                device: str, series_pool: list[np.ndarray] | None = None,
                labels: np.ndarray | None = None, steps: int | None = None,
                lr: float | None = None, tick=None) -> list[float]:
    """Train ``model`` in place; with ``labels`` (pseudo-label per series, -1: none) add
    the self-labelling cross-entropy. Returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    members = _members(data)
    candidates = positive_candidates(data.meta, cfg.slice_reach)
    mates = visit_mates(data.meta)
    steps = cfg.steps if steps is None else steps
    opt, sched = _optimiser(model, lr or cfg.lr, steps)
    pools = series_pool or [np.arange(len(data.series))]
    model.train()
    losses = []
    for _ in range(steps):
        n = max(1, cfg.batch // cfg.per_series)
        n_mates = int(round(cfg.visit_mates * n / 2))             # series drawn as a visit mate
        pool_of = rng.integers(len(pools), size=n - n_mates)      # cluster first: balanced
        series = np.repeat([pools[p][rng.integers(len(pools[p]))] for p in pool_of],
                           cfg.per_series)
        anchors = np.array([members[s][rng.integers(len(members[s]))] for s in series])
        if n_mates:  # the first series' visit mates, at the same level of the stack
            head = n_mates * cfg.per_series
            mate = np.repeat([_mate(mates, s, len(data.series), rng)
                              for s in series[:head:cfg.per_series]], cfg.per_series)
            anchors = np.concatenate([anchors, mate_slices(anchors[:head], mate, members,
                                                           data.meta)])
        partners = draw_partners(anchors, candidates, rng)
        idx = np.concatenate([anchors, partners])
        x = two_scale(augment(_batch(data, idx, "cpu"), gen, cfg.strength)).to(device)
        z, logits = model(x)
        positive, ignore = (torch.from_numpy(m).to(device) for m in batch_masks(idx, data.meta,
                                                                     cfg.slice_reach))
        loss = supcon_loss(z, positive, ignore, cfg.temperature)
        if labels is not None:
            target = torch.from_numpy(labels[data.series_of[idx]]).to(device)
            loss = loss + F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(round(float(loss.detach()), 5))
        if len(losses) % 50 == 0:
            log.info("step %d/%d: loss %.4f", len(losses), steps, np.mean(losses[-50:]))
        tick and tick()
    model.eval()
    return losses


@torch.inference_mode()
def embed_series(model: SliceEncoder, data: TrainingSet, device: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Series embeddings (mean of unit slice embeddings, renormalised) and, when the model
    has a classifier, each series' mean class probabilities."""
    model.eval()
    feats, probs = [], []
    for start in range(0, len(data), EMBED_BATCH):
        x = two_scale(_batch(data, np.arange(start, min(start + EMBED_BATCH, len(data))),
                             device))
        f = model.features(x)
        feats.append(F.normalize(f, dim=1).cpu().numpy())
        if model.classifier is not None:
            probs.append(torch.softmax(model.logits(f), 1).cpu().numpy())
    return pool(np.concatenate(feats), data.series_of, len(data.series)), (
        pool(np.concatenate(probs), data.series_of, len(data.series), unit=False)
        if probs else None)


def pool(values: np.ndarray, owner: np.ndarray, n: int, unit: bool = True) -> np.ndarray:
    """Mean of rows per owner (0..n-1); renormalised to unit length when ``unit``."""
    sums = np.zeros((n, values.shape[1]), np.float64)
    np.add.at(sums, owner, values)
    counts = np.bincount(owner, minlength=n)[:, None]
    mean = sums / np.maximum(counts, 1)
    if unit:
        mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean.astype(np.float32)


def confident(labels: np.ndarray, distance: np.ndarray, keep: float) -> list[np.ndarray]:
    """Per cluster, its series with the smallest distances (at least one, ``keep`` share)."""
    out = []
    for c in range(labels.max() + 1):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(math.ceil(keep * len(idx))))
        out.append(idx[np.argsort(distance[idx], kind="stable")[:n]])
    return [o for o in out if len(o)]


def by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..m-1 by decreasing size (ties: first member first)."""
    ids = [c for c in dict.fromkeys(labels.tolist())]
    ids.sort(key=lambda c: -int((labels == c).sum()))
    return np.array([ids.index(c) for c in labels.tolist()], np.int64), ids


def fit(data: TrainingSet, enc: EncoderConfig, cfg: TrainConfig, k: int | None, seed: int,
        device: str, tick=None) -> tuple[SliceEncoder, dict, dict]:
    """The whole training. Returns (model with classifier, extra tensors, card facts)."""
    torch.manual_seed(seed)
    model = SliceEncoder(enc).to(device)
    losses = contrastive(model, data, cfg, seed, device, tick=tick)
    emb, _ = embed_series(model, data, device)
    scores: dict[int, float] = {}
    if k is None:
        k, scores = choose_k(emb, cfg.k_max, seed)
    first = None
    refine: list[float] = []
    for r in range(max(1, cfg.rounds)):  # later rounds: k-means on the refined embedding
        labels, centres = kmeans(emb, k, seed)
        first = labels if first is None else first
        distance = 1 - (emb * centres[labels]).sum(1)
        pools = confident(labels, distance, cfg.keep)
        kept = [c for c in range(k) if np.isin(c, labels)]  # k-means leaves none empty
        targets = np.full(len(data.series), -100, np.int64)   # ignored by cross-entropy
        for c, idx in enumerate(pools):
            targets[idx] = c
        model.set_clusters(torch.from_numpy(centres[kept]))
        model.to(device)
        refine += contrastive(model, data, cfg, seed + 1 + r, device, pools, targets,
                              steps=cfg.refine_steps, lr=cfg.lr / 3, tick=tick)
        emb, probs = embed_series(model, data, device)
    final, order = by_size(probs.argmax(1))
    head = model.classifier
    keep = torch.tensor(order)
    model.set_clusters(torch.zeros(len(order), enc.features))
    with torch.no_grad():  # the classifier keeps only the outputs some series chose
        model.classifier.weight.copy_(head.weight[keep])
        model.classifier.bias.copy_(head.bias[keep])
    centres = pool(emb, final, len(order))
    map_mean, map_axes = fit_map(emb)
    extra = {"centres": centres, "map_mean": map_mean, "map_axes": map_axes}
    overlap = np.zeros((len(order), k), int)
    np.add.at(overlap, (final, first), 1)
    changed = int(len(final) - overlap.max(1).sum())  # series self-labelling moved
    facts = {"k": len(order), "k_requested": k, "k_silhouette": scores,
             "cluster_sizes_series": np.bincount(final).tolist(),
             "self_labelling_changed_series": changed,
             "loss_contrastive_first_last": [losses[0], losses[-1]] if losses else [],
             "loss_refine_first_last": [refine[0], refine[-1]] if refine else []}
    return model, extra, facts
