"""Probability calibration per region: ECE, MCE, Brier, NLL, reliability bins, temperature.

Each region is a binary problem: ``p`` is the predicted probability that a voxel belongs to
the region and ``y`` whether it truly does. Scores are computed over the brain mask (the
background outside the brain would swamp every average with trivially right voxels).

Binning (equal width, ``n`` bins): voxel with probability p goes to bin
``min(floor(p * n), n - 1)``, i.e. bins are [k/n, (k+1)/n) and the last one is closed.
ECE = sum_k (N_k / N) |mean(y)_k - mean(p)_k|; MCE = max over non-empty bins of the same gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

#: Probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] before logs and logits.
PROB_EPS = 1e-7
#: Temperature fitting histograms logits into this many bins over +-logit(1 - PROB_EPS).
LOGIT_BINS = 4096


@dataclass
class ReliabilityBins:
    """Per-bin sums; adding two (``a + b``) pools voxels, e.g. over a cohort."""

    counts: np.ndarray
    sum_p: np.ndarray
    sum_y: np.ndarray

    def __add__(self, other: "ReliabilityBins") -> "ReliabilityBins":
        return ReliabilityBins(self.counts + other.counts, self.sum_p + other.sum_p,
                               self.sum_y + other.sum_y)

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean probability, observed frequency) per bin; NaN where a bin is empty."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum_p / self.counts, self.sum_y / self.counts

    def ece(self) -> float:
        """Expected calibration error (bin-count weighted mean |frequency - probability|)."""
        n = self.counts.sum()
        if n == 0:
            return float("nan")
        return float(np.abs(self.sum_y - self.sum_p).sum() / n)

    def mce(self) -> float:
        """Maximum calibration error over non-empty bins."""
        full = self.counts > 0
        if not full.any():
            return float("nan")
        return float(np.max(np.abs(self.sum_y[full] - self.sum_p[full]) / self.counts[full]))


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Equal-width reliability bins of probabilities ``p`` against binary outcomes ``y``.

    Args:
        p: probabilities in [0, 1] (any shape). y: booleans of the same shape.
        n_bins: number of bins over [0, 1].

    Returns:
        :class:`ReliabilityBins` with counts and sums of p and y per bin.

    Example:
        >>> b = reliability_bins(np.array([0.1, 0.9, 0.9]), np.array([0, 1, 0]), 2)
        >>> round(b.ece(), 4)                  # |0 - 0.1| / 3 + 2 |0.5 - 0.9| / 3
        0.3
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=bool).ravel()
    k = np.minimum((p * n_bins).astype(np.intp), n_bins - 1)
    return ReliabilityBins(np.bincount(k, minlength=n_bins).astype(np.float64),
                           np.bincount(k, weights=p, minlength=n_bins),
                           np.bincount(k, weights=y.astype(np.float64), minlength=n_bins))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference between probability and outcome."""
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - np.asarray(y, dtype=np.float64)) ** 2))


def nll(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary negative log-likelihood (nats), probabilities clipped to PROB_EPS."""
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def calibration_scores(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    """ECE, MCE, Brier score and NLL of one region's probabilities.

    Args:
        p: probabilities (only the voxels to score, e.g. ``prob[mask]``). y: truth, booleans.
        n_bins: equal-width bins for ECE and MCE.

    Returns:
        ``{"ece", "mce", "brier", "nll"}``.
    """
    bins = reliability_bins(p, y, n_bins)
    return {"ece": bins.ece(), "mce": bins.mce(), "brier": brier(p, y), "nll": nll(p, y)}


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [PROB_EPS, 1 - PROB_EPS]."""
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities ``sigmoid(logit(p) / T)``."""
    return 1.0 / (1.0 + np.exp(-logit(p) / temperature))


class LogitHistogram:
    """Counts and logit sums per (logit bin, outcome): memory-bounded data for fitting T.

    Why: a cohort holds far too many voxels to keep; the NLL as a function of T needs only
    how many voxels of each outcome sit at each logit, which a fine histogram keeps.
    """

    def __init__(self, n_bins: int = LOGIT_BINS) -> None:
        self.limit = float(logit(np.array(1 - PROB_EPS)))
        self.n_bins = n_bins
        self.counts = np.zeros((2, n_bins))
        self.sums = np.zeros((2, n_bins))

    def add(self, p: np.ndarray, y: np.ndarray) -> "LogitHistogram":
        z = logit(np.asarray(p).ravel())
        y = np.asarray(y, dtype=bool).ravel()
        k = np.clip(((z + self.limit) / (2 * self.limit) * self.n_bins).astype(np.intp),
                    0, self.n_bins - 1)
        for outcome in (0, 1):
            sel = y == bool(outcome)
            self.counts[outcome] += np.bincount(k[sel], minlength=self.n_bins)
            self.sums[outcome] += np.bincount(k[sel], weights=z[sel], minlength=self.n_bins)
        return self

    def nll(self, temperature: float) -> float:
        """Mean NLL of ``sigmoid(z / T)`` with each bin's voxels at their mean logit."""
        full = self.counts > 0
        z = np.where(full, self.sums / np.where(full, self.counts, 1), 0.0) / temperature
        # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) for negatives.
        loss = self.counts[1] * np.logaddexp(0, -z[1]) + self.counts[0] * np.logaddexp(0, z[0])
        return float(loss.sum() / self.counts.sum())


def fit_temperature(hist: LogitHistogram, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The single temperature T minimising the NLL of ``sigmoid(logit(p) / T)``.

    Args:
        hist: validation voxels, see :class:`LogitHistogram`.
        bounds: search interval for T.

    Returns:
        T (> 1 softens over-confident probabilities, < 1 sharpens).

    Example:
        >>> rng = np.random.default_rng(0); s = rng.normal(0, 2, 100_000)
        >>> y = rng.random(s.size) < 1 / (1 + np.exp(-s))
        >>> p = 1 / (1 + np.exp(-3 * s))                     # three times over-confident
        >>> round(fit_temperature(LogitHistogram().add(p, y)), 1)
        3.0
    """
    if hist.counts.sum() == 0:
        raise ValueError("no voxels to fit a temperature on")
    res = optimize.minimize_scalar(lambda log_t: hist.nll(float(np.exp(log_t))),
                                   bounds=tuple(np.log(bounds)), method="bounded",
                                   options={"xatol": 1e-6})
    return float(np.exp(res.x))
