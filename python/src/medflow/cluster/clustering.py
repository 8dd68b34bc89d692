"""Clustering of series embeddings, the choice of k, scores against known categories, and
the samplesheet column check.

Embeddings are unit vectors; k-means on them (Euclidean) ranks like cosine distance.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

#: Share of a column below which a cluster's members in that column are flagged.
MIN_COLUMN_SHARE = 0.25


def kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ with 10 restarts. Returns (labels (N,), unit centres (k, D))."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    centres = km.cluster_centers_
    centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return km.labels_.astype(np.int64), centres.astype(np.float32)


def choose_k(x: np.ndarray, k_max: int, seed: int) -> tuple[int, dict[int, float]]:
    """The k in 2..k_max with the largest mean silhouette (cosine) of its k-means partition.

    Args:
        x: (N, D) unit embeddings, N >= 3.
        k_max: largest k tried (clipped to N - 1).
        seed: k-means seed.

    Returns:
        (best k, {k: silhouette}). The silhouette (Rousseeuw 1987) is high when series are
        much closer to their own cluster than to the next one; it needs no labels.
    """
    from sklearn.metrics import silhouette_score

    scores = {}
    for k in range(2, min(k_max, len(x) - 1) + 1):
        labels, _ = kmeans(x, k, seed)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = round(float(silhouette_score(x, labels, metric="cosine")), 4)
    if not scores:
        return 2, {}
    return max(scores, key=lambda k: (scores[k], -k)), scores


def scores_from_counts(counts: Counter) -> dict[str, float]:
    """Purity, NMI and ARI from a contingency Counter {(truth, cluster): n}.

    Returns:
        ``purity`` (share of images in their cluster's most common category), ``nmi``
        (mutual information over the arithmetic mean of the two entropies, as
        scikit-learn's default), ``ari`` (Hubert & Arabie adjusted Rand index), ``n``.
    """
    truths = sorted({t for t, _ in counts})
    clusters = sorted({c for _, c in counts})
    table = np.array([[counts.get((t, c), 0) for c in clusters] for t in truths], float)
    n = table.sum()
    if n == 0:
        return {"purity": float("nan"), "nmi": float("nan"), "ari": float("nan"), "n": 0}
    purity = table.max(0).sum() / n
    pt, pc = table.sum(1) / n, table.sum(0) / n
    joint = table / n
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pt, pc)[nz])).sum())
    h_t = -float((pt[pt > 0] * np.log(pt[pt > 0])).sum())
    h_c = -float((pc[pc > 0] * np.log(pc[pc > 0])).sum())
    nmi = 1.0 if h_t == h_c == 0 else mi / max((h_t + h_c) / 2, 1e-12)

    def pairs(v):
        return float((v * (v - 1) / 2).sum())

    index, a, b = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = a * b / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (a + b) / 2
    ari = 1.0 if top == expected else (index - expected) / (top - expected)
    return {"purity": round(float(purity), 4), "nmi": round(float(nmi), 4),
            "ari": round(float(ari), 4), "n": int(n)}


def column_check(counts: Counter, min_share: float = MIN_COLUMN_SHARE
                 ) -> dict[tuple[str, int], dict]:
    """Which (column, cluster) combinations do not fit their samplesheet column.

    Args:
        counts: {(column, cluster): number of images}.
        min_share: a cluster holding less than this share of a column's images does not
            belong in it.

    Returns:
        {(column, cluster): {"flag": bool, "share": float, "looks_like": column or ""}}:
        ``looks_like`` names the column whose most common cluster this is (e.g. a
        4-chamber cine in the ``sa`` column looks like ``la_4ch``).

    Note:
        A column that legitimately holds two kinds of image (two contrasts), each at
        least ``min_share`` of it, passes; a minority kind below it is flagged for a
        person to look at.
    """
    totals = Counter()
    for (col, _), n in counts.items():
        totals[col] += n
    majority = {}
    for col in totals:
        best = max((n, -c) for (cc, c), n in counts.items() if cc == col)
        majority[col] = -best[1]
    out = {}
    for (col, cluster), n in counts.items():
        share = n / totals[col]
        like = [c for c, m in sorted(majority.items()) if m == cluster and c != col]
        out[(col, cluster)] = {"flag": share < min_share, "share": round(share, 4),
                               "looks_like": like[0] if like else ""}
    return out


def fit_map(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D map of embeddings: the first two principal axes. Returns (mean (D,), axes (2, D)).

    Note:
        A fixed linear map (not t-SNE/UMAP) so that assign can place any number of new
        images on the same plot, one at a time; signs are fixed (largest loading
        positive) so the map is reproducible.
    """
    mean = x.mean(0)
    if len(x) < 2:
        return mean.astype(np.float32), np.eye(2, x.shape[1], dtype=np.float32)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = np.zeros((2, x.shape[1]))
    axes[:len(vt[:2])] = vt[:2]
    for a in axes:
        if a[np.argmax(np.abs(a))] < 0:
            a *= -1
    return mean.astype(np.float32), axes.astype(np.float32)
