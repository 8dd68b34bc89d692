"""Ranking by gradient-guided sampling, made practical (after Dai et al., "Suggestive
annotation of brain tumour images with gradient-guided sampling", MICCAI 2020).

The seed trains a VAE on the cohort's images, carries the segmentation loss gradient into
its latent space, and suggests the real images nearest to the points the gradient leads
to. Here every unlabelled unit's gradient is carried into the latent space with the
model's own segmentation as the target (:mod:`medflow.annotate.features`), and its norm
``gradient_norm`` says how steeply the loss changes as the image moves along the learnt
manifold: the units the model has not learnt yet. Units are taken in decreasing norm,
skipping any closer than half the pool's median neighbour distance (in the latent space)
to one already chosen (diversity), so one region of the manifold does not take the
whole budget.

Why not the literal version (labelled units' latent codes moved along their own loss
ascent, then the nearest unlabelled unit): on the heterogeneous BraTS phantom the ascent
directions point away from every subgroup (cosines -0.1 to -0.6 with the directions to the
subgroup centres) and its picks found the rare subgroups no more often than random
(docs/suggest-annotation.md has the numbers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.annotate.strategies import (_check_embedding, _keys, _result, _unlabelled,
                                         pool_size)
from medflow.annotate.table import FeatureSource, TopK, matrix, pairwise
from medflow.errors import InvalidDataError

DIVERSITY = 0.5  # skip units closer than this x the pool's median neighbour distance
MAX_DIVERSITY_SAMPLE = 1024


def diversity_radius(emb: np.ndarray) -> float:
    """``DIVERSITY`` x the median nearest-neighbour distance of (up to 1024 of) ``emb``."""
    sample = emb[:MAX_DIVERSITY_SAMPLE]
    if len(sample) < 2:
        return 0.0
    d = pairwise(sample, sample)
    np.fill_diagonal(d, np.inf)
    return DIVERSITY * float(np.median(d.min(1)))


def rank_gradient(src: FeatureSource, budget: int, seed: int = 0) -> pd.DataFrame:
    """Largest latent loss-gradient norms first, with diversity; the score is the norm."""
    _check_embedding(src, "gradient")
    pool = TopK(pool_size(budget))
    for b in src.batches(["subject", "slice", "labelled", "gradient_norm", *src.embedding]):
        b = _unlabelled(b)
        g = (b["gradient_norm"].to_numpy(np.float64) if "gradient_norm" in b
             else np.full(len(b), np.nan))
        if np.isnan(g).any():
            raise InvalidDataError("strategy 'gradient' needs the latent loss-gradient norm "
                                   "of every unlabelled unit (give --model)", src.path)
        pool.push(g, _keys(b, seed), b["subject"], b["slice"], matrix(b, src.embedding))
    radius = diversity_radius(pool.emb) if len(pool) else 0.0
    near = np.full(len(pool), np.inf)  # distance of each pool unit to the chosen ones
    picked = np.zeros(len(pool), bool)
    picks, skipped = [], []
    for _ in range(min(budget, len(pool))):
        free = ~picked
        fine = free & (near >= radius)
        i = int(np.argmax(fine) if fine.any() else np.argmax(free))  # pool is sorted by norm
        skipped.append(int((free[:i] & ~fine[:i]).sum()))
        picked[i] = True
        near = np.minimum(near, np.linalg.norm(pool.emb - pool.emb[i], axis=1))
        picks.append(i)
    reasons = [f"latent loss-gradient norm {pool.score[i]:.3g} (rank {i + 1} by norm"
               + (f"; {n} higher one(s) skipped as near an earlier pick" if n else "") + ")"
               for i, n in zip(picks, skipped)]
    return _result(pool.subject[picks], pool.slice[picks], pool.score[picks], reasons)
