"""The annotation strategies: which unlabelled units to annotate next, from the feature
table (:mod:`medflow.annotate.table`), streamed in batches.

Every strategy keeps O(budget) state (a pool of at most ``max(4 x budget, 4096)`` units),
so memory does not grow with the cohort; within the pool the choice is exact. Ties break
on a seeded hash of the unit, so the same table and seed give the same list in any row
order.

- ``random``: the units with the smallest seeded hashes (a uniform draw).
- ``uncertainty``: highest mean predictive uncertainty of the current model.
- ``coreset``: k-centre greedy on the embeddings (Sener and Savarese, ICLR 2018): each
  pick is the unit farthest from every labelled or already chosen unit.
- ``typical``: cold start without a model (TypiClust, Hacohen et al., ICML 2022): k-means
  into (labelled + budget) clusters, then the densest unit of each of the largest clusters
  that hold no labelled unit (clusters under 5 units, outliers, last).
- ``gradient``: gradient-guided sampling made practical (after Dai et al., MICCAI 2020):
  the longest segmentation-loss gradients, with diversity in the VAE's latent space
  (:mod:`medflow.annotate.gradient`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.annotate.table import FeatureSource, TopK, matrix, pairwise, stable_keys
from medflow.errors import InvalidDataError

STRATEGIES = ("gradient", "uncertainty", "coreset", "typical", "random")
NEEDS_MODEL = ("gradient", "uncertainty")
MIN_POOL = 4096
MAX_CLUSTERS = 1000
DENSITY_K = 20
MIN_CLUSTER_SIZE = 5  # TypiClust's: smaller clusters (outliers) come after all others


def pool_size(budget: int) -> int:
    return max(4 * int(budget), MIN_POOL)


def _unlabelled(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[~batch["labelled"].astype(bool)]


def _keys(batch: pd.DataFrame, seed: int) -> np.ndarray:
    return stable_keys(seed, batch["subject"].to_numpy(), batch["slice"].to_numpy())


def _result(subjects, slices, scores, reasons) -> pd.DataFrame:
    return pd.DataFrame({"rank": np.arange(1, len(subjects) + 1), "subject": list(subjects),
                         "slice": np.asarray(slices, np.int64), "score": np.asarray(scores, float),
                         "reason": list(reasons)})


def rank_random(src: FeatureSource, budget: int, seed: int = 0) -> pd.DataFrame:
    """``budget`` unlabelled units drawn uniformly (smallest seeded hashes)."""
    top = TopK(budget)
    for b in src.batches(["subject", "slice", "labelled"]):
        b = _unlabelled(b)
        keys = _keys(b, seed)
        top.push(np.zeros(len(b)), keys, b["subject"], b["slice"])
    return _result(top.subject, top.slice, top.key.astype(np.float64) / 2.0**64,
                   [f"random draw (seed {seed})"] * len(top))


def rank_uncertainty(src: FeatureSource, budget: int, seed: int = 0) -> pd.DataFrame:
    """The ``budget`` unlabelled units the model is least sure of."""
    top = TopK(budget)
    for b in src.batches(["subject", "slice", "labelled", "uncertainty"]):
        b = _unlabelled(b)
        u = (b["uncertainty"].to_numpy(np.float64) if "uncertainty" in b
             else np.full(len(b), np.nan))
        if np.isnan(u).any():
            raise InvalidDataError("strategy 'uncertainty' needs the model's uncertainty of "
                                   "every unlabelled unit (give --model)", src.path)
        top.push(u, _keys(b, seed), b["subject"], b["slice"])
    return _result(top.subject, top.slice, top.score,
                   [f"mean predictive uncertainty {u:.2f} (0-100)" for u in top.score])


def _labelled_embeddings(src: FeatureSource) -> np.ndarray:
    rows = [matrix(b[b["labelled"].astype(bool)], src.embedding)
            for b in src.batches(["labelled", *src.embedding])]
    return np.concatenate(rows) if rows else np.empty((0, len(src.embedding)), np.float32)


def _check_embedding(src: FeatureSource, strategy: str) -> None:
    if not src.embedding:
        raise InvalidDataError(f"strategy '{strategy}' needs embeddings (emb_* columns)",
                               src.path)


def _nearest_distance(x: np.ndarray, ref: np.ndarray, rows: int = 1 << 22) -> np.ndarray:
    """Distance of each row of ``x`` to its nearest row of ``ref`` (inf when ref is empty),
    in chunks of about ``rows`` distances."""
    if len(ref) == 0:
        return np.full(len(x), np.inf, np.float32)
    step = max(1, rows // len(ref))
    return np.concatenate([pairwise(x[i:i + step], ref).min(1) for i in range(0, len(x), step)])


def rank_coreset(src: FeatureSource, budget: int, seed: int = 0) -> pd.DataFrame:
    """k-centre greedy: cover the embedding space with the fewest labelled units."""
    _check_embedding(src, "coreset")
    labelled = _labelled_embeddings(src)
    pool = TopK(pool_size(budget))
    for b in src.batches(["subject", "slice", "labelled", *src.embedding]):
        b = _unlabelled(b)
        e = matrix(b, src.embedding)
        far = _nearest_distance(e, labelled) if len(labelled) else np.zeros(len(b))
        pool.push(far, _keys(b, seed), b["subject"], b["slice"], e)
    picks, scores = [], []
    if not len(pool):
        return _result([], [], [], [])
    mind = _nearest_distance(pool.emb, labelled).astype(np.float64)
    first = None  # cold start: begin at the most central unit
    if not len(labelled):
        first = int(np.argmin(np.linalg.norm(pool.emb - pool.emb.mean(0), axis=1)))
    for _ in range(min(budget, len(pool))):
        i = first if first is not None and not picks else int(np.argmax(mind))
        picks.append(i)
        scores.append(float(mind[i]) if np.isfinite(mind[i]) else 0.0)
        mind = np.minimum(mind, np.linalg.norm(pool.emb - pool.emb[i], axis=1))
        mind[picks] = -np.inf
    return _result(pool.subject[picks], pool.slice[picks], scores,
                   [f"farthest from every labelled or chosen unit (distance {s:.3g})"
                    for s in scores])


def rank_typical(src: FeatureSource, budget: int, seed: int = 0) -> pd.DataFrame:
    """Cold start: the densest unit of each of the largest clusters with no labelled unit."""
    from sklearn.cluster import KMeans

    _check_embedding(src, "typical")
    n, n_labelled = src.counts()
    k = int(min(budget + n_labelled, MAX_CLUSTERS, n))
    sample = TopK(max(10 * k, MIN_POOL))             # a seeded uniform sample for k-means
    for b in src.batches(["subject", "slice", *src.embedding]):
        sample.push(np.zeros(len(b)), _keys(b, seed + 7), b["subject"], b["slice"],
                    matrix(b, src.embedding))
    km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(sample.emb)
    centres = km.cluster_centers_.astype(np.float32)
    size, has_label = np.zeros(k, np.int64), np.zeros(k, bool)
    pool = TopK(pool_size(budget))
    for b in src.batches(["subject", "slice", "labelled", *src.embedding]):
        e = matrix(b, src.embedding)
        cluster = pairwise(e, centres).argmin(1)
        size += np.bincount(cluster, minlength=k)
        lab = b["labelled"].to_numpy(bool)
        has_label[cluster[lab]] = True
        pool.push(density(e[~lab], sample.emb[:MIN_POOL]), _keys(b[~lab], seed),
                  b["subject"][~lab],
                  b["slice"][~lab], tag=cluster[~lab])
    if not len(pool):
        return _result([], [], [], [])
    cluster = pool.tag
    order = sorted(range(k), key=lambda c: (has_label[c], size[c] < MIN_CLUSTER_SIZE,
                                            -size[c], c))
    picks, scores, reasons = [], [], []
    while len(picks) < min(budget, len(pool)):
        for c in order:
            free = [i for i in np.flatnonzero(cluster == c) if i not in picks]
            if free and len(picks) < budget:
                i = free[0]  # the pool is sorted by density: the most typical first
                picks.append(i)
                scores.append(float(pool.score[i]))
                reasons.append(f"most typical unit of cluster {c} ({size[c]} units"
                               f"{', none labelled' if not has_label[c] else ''})")
    return _result(pool.subject[picks], pool.slice[picks], scores, reasons)


def density(x: np.ndarray, ref: np.ndarray, k: int = DENSITY_K) -> np.ndarray:
    """Typicality: 1 / mean distance to the ``k`` nearest points of ``ref`` (TypiClust);
    a point's own copy in ``ref`` (distance 0) is not its own neighbour."""
    if not len(x):
        return np.empty(0)
    k = min(k, len(ref) - 1) if len(ref) > 1 else 1
    step = max(1, (1 << 22) // max(len(ref), 1))
    out = []
    for i in range(0, len(x), step):
        d = np.sort(np.partition(pairwise(x[i:i + step], ref), min(k, len(ref) - 1), axis=1)
                    [:, :k + 1], axis=1)
        self_in = d[:, 0] < 1e-6
        near = np.where(self_in[:, None], d[:, 1:k + 1], d[:, :k]) if d.shape[1] > k \
            else d[:, :k]
        out.append(1.0 / (near.mean(1) + 1e-6))
    return np.concatenate(out)


def rank_units(src: FeatureSource, strategy: str, budget: int, seed: int = 0) -> pd.DataFrame:
    """Rank ``budget`` unlabelled units with ``strategy`` (see the module docstring).

    Returns:
        DataFrame ``rank, subject, slice, score, reason`` (best first); its ``score`` is the
        strategy's own (uncertainty 0-100, k-centre distance, density, gradient norm).
    """
    from medflow.annotate.gradient import rank_gradient

    ranker = {"random": rank_random, "uncertainty": rank_uncertainty, "coreset": rank_coreset,
              "typical": rank_typical, "gradient": rank_gradient}.get(strategy)
    if ranker is None:
        raise ValueError(f"unknown strategy {strategy!r}; one of {STRATEGIES}")
    if budget <= 0:
        return _result([], [], [], [])
    return ranker(src, budget, seed)
