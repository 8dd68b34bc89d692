"""The QU-BraTS uncertainty score (Mehta et al., QU-BraTS 2019-2020), computed in one pass.

Definition, per region with an uncertainty map ``u`` in [0, 100] (100 = least certain):

- thresholds tau = 100, 100 - 100/n, ..., 0 (``n = num_points``; n + 1 values);
- at each tau the voxels with ``u > tau`` are filtered out (strictly greater: a voxel whose
  uncertainty equals tau is kept);
- Dice on the kept voxels of the whole volume (not only the brain), 1 when the kept
  prediction and truth are both empty;
- FTP(tau) = (TP_all - TP_kept) / (TP_all + eps) and FTN(tau) likewise with true negatives,
  both counted inside the brain mask; eps = float32 machine epsilon, added to the
  denominator (so a region with no true positives has FTP = 0);
- each curve's area by the trapezoid rule over tau / 100, so it lies in [0, 1];
- region score = (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3; the overall score is the
  mean over regions.

These are the conventions of the challenge's public evaluation script
(github.com/RagMeh11/QU-BraTS, ``BraTS_Seg_Uncertainty.py``), which loops over thresholds;
here every threshold comes from one histogram: each voxel's uncertainty is mapped to the
first threshold that keeps it, voxels are counted per (threshold bin, TP/FP/FN/TN, inside
mask) with one ``bincount``, and a cumulative sum gives the kept counts at every threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medflow.uncertainty.regions import Region

EPS = float(np.finfo(np.float32).eps)
# Category code of a voxel: 4 * inside_mask + 2 * truth + prediction.
_TP, _FP, _FN = (3, 7), (1, 5), (2, 6)
_TP_MASK, _TN_MASK = 7, 4
#: Voxels per block in the histogram loop (small temporaries that stay in cache).
CHUNK = 1 << 16


def thresholds(num_points: int = 40) -> np.ndarray:
    """Uncertainty thresholds from 100 down to 0, ``num_points + 1`` values, evenly spaced.

    Args:
        num_points: number of intervals (40 gives 100, 97.5, ..., 2.5, 0).

    Returns:
        float64 array, descending; both end points are exact.

    Note:
        Built as ``100 * k / n`` from integers k, so rounding can never drop or shift an end
        point; for n = 40 every value equals the official script's ``np.arange`` values.

    Example:
        >>> thresholds(4).tolist()
        [100.0, 75.0, 50.0, 25.0, 0.0]
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    return 100.0 * np.arange(num_points, -1, -1) / num_points


@dataclass(frozen=True)
class QUCurves:
    """Dice, FTP and FTN at each threshold (all arrays aligned with ``thresholds``)."""

    thresholds: np.ndarray
    dice: np.ndarray
    ftp: np.ndarray
    ftn: np.ndarray

    def scores(self) -> dict[str, float]:
        """AUCs, the region score and the plain Dice (at tau = 100, nothing filtered)."""
        a_dice, a_ftp, a_ftn = (auc(self.thresholds, v) for v in (self.dice, self.ftp, self.ftn))
        top = int(np.argmax(self.thresholds))
        return {"dice": float(self.dice[top]), "auc_dice": a_dice, "auc_ftp": a_ftp,
                "auc_ftn": a_ftn, "score": (a_dice + (1 - a_ftp) + (1 - a_ftn)) / 3}


def auc(thresholds_: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid-rule area under ``values`` against ``thresholds / 100`` (either order)."""
    x = np.asarray(thresholds_, dtype=np.float64) / 100.0
    y = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@lru_cache(maxsize=16)
def _bin_table(num_points: int) -> np.ndarray:
    # Ascending thresholds plus +inf, so bin n + 1 (u > 100) never moves up.
    table = np.append(thresholds(num_points)[::-1], np.inf)
    table.flags.writeable = False
    return table


def threshold_bins(unc: np.ndarray, num_points: int = 40) -> np.ndarray:
    """For each voxel, the index of the smallest threshold that keeps it (``u <= tau``).

    Args:
        unc: uncertainty values (any shape, any real dtype).
        num_points: threshold intervals; thresholds ascending are ``100 * j / n``.

    Returns:
        intp array: a voxel is kept at the j-th ascending threshold exactly when its bin is
        <= j; ``num_points + 1`` means never kept (u > 100).

    Note:
        Computed arithmetically (far faster than a binary search per voxel): the estimate
        ``ceil(u * n / 100 - 1e-7)`` is never above the true bin and at most one below it
        (the offset exceeds any rounding of the product); one float64 comparison of u with
        the exact threshold at the estimate (float32 maps widen exactly) settles ties as
        the reference loop does.
    """
    u = np.asarray(unc)
    est = np.multiply(u, num_points / 100.0, dtype=np.float64)
    est -= 1e-7
    np.ceil(est, out=est)
    np.clip(est, 0, num_points + 1, out=est)
    bins = est.astype(np.intp)
    bins += u > _bin_table(num_points).take(bins)  # one bin too low: u lies above the threshold there
    return bins


class ThresholdHistogram:
    """Accumulates voxel counts per (threshold bin, key), block by block.

    Args:
        unc: the whole uncertainty map (only its dtype and, for integers, its range are
            read here). n_keys: number of voxel categories. num_points: threshold intervals.

    Note:
        Blocks keep temporaries small and reused (fresh multi-megabyte temporaries cost
        more in page faults than the arithmetic). An integer map (e.g. uint8) is counted
        by value and its few distinct values are folded into threshold bins at the end,
        so it needs no per-voxel threshold arithmetic at all.
    """

    def __init__(self, unc: np.ndarray, n_keys: int, num_points: int) -> None:
        self.n_keys, self.num_points = n_keys, num_points
        self.integer = unc.dtype.kind in "ui" and unc.size > 0
        self.lo, self.hi = (int(unc.min()), int(unc.max())) if self.integer else (0, 0)
        rows = self.hi - self.lo + 1 if self.integer else num_points + 2
        self.counts = np.zeros(rows * n_keys, np.int64)

    def add(self, u: np.ndarray, key: np.ndarray) -> None:
        """Count a block: uncertainty values and their keys (1D, same length)."""
        if self.integer:
            code = u.astype(np.intp)
            code -= self.lo
        else:
            code = threshold_bins(u, self.num_points)
        code *= self.n_keys
        code += key
        self.counts += np.bincount(code, minlength=len(self.counts))

    def result(self) -> np.ndarray:
        """Counts of shape ``(num_points + 2, n_keys)``; row j: kept from threshold j up."""
        counts = self.counts.reshape(-1, self.n_keys)
        if not self.integer:
            return counts
        out = np.zeros((self.num_points + 2, self.n_keys), np.int64)
        np.add.at(out, threshold_bins(np.arange(self.lo, self.hi + 1), self.num_points), counts)
        return out


def filtered_counts(truth: np.ndarray, pred: np.ndarray, unc: np.ndarray, mask: np.ndarray,
                    num_points: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept voxel counts per category at every threshold, from one histogram.

    Args:
        truth, pred, mask: boolean arrays of one shape (any shape, e.g. already flattened).
        unc: uncertainty of the same shape (uint8 or float), in [0, 100].
        num_points: number of threshold intervals.

    Returns:
        (ascending thresholds (K,), kept counts (K, 8), total counts (8,)) where the 8
        categories are ``4 * mask + 2 * truth + pred``.
    """
    ascending = thresholds(num_points)[::-1]
    key = (np.asarray(mask, np.uint8) << 2) | (np.asarray(truth, np.uint8) << 1) \
        | np.asarray(pred, np.uint8)
    unc = np.asarray(unc).ravel()
    key = key.ravel()
    hist = ThresholdHistogram(unc, 8, num_points)
    for start in range(0, unc.size, CHUNK):
        hist.add(unc[start:start + CHUNK], key[start:start + CHUNK])
    hist = hist.result()
    return ascending, np.cumsum(hist[:-1], axis=0), hist.sum(axis=0)


def curves_from_counts(ascending: np.ndarray, kept: np.ndarray, total: np.ndarray) -> QUCurves:
    """Dice / FTP / FTN curves (descending thresholds) from :func:`filtered_counts`."""
    kept = kept.astype(np.float64)
    tp = kept[:, _TP].sum(axis=1)
    fp_fn = kept[:, _FP].sum(axis=1) + kept[:, _FN].sum(axis=1)
    denom = 2 * tp + fp_fn
    dice = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 1.0)
    tp_all, tn_all = float(total[_TP_MASK]), float(total[_TN_MASK])
    ftp = (tp_all - kept[:, _TP_MASK]) / (tp_all + EPS)
    ftn = (tn_all - kept[:, _TN_MASK]) / (tn_all + EPS)
    return QUCurves(ascending[::-1].copy(), dice[::-1], ftp[::-1], ftn[::-1])


def qubrats_curves(truth: np.ndarray, pred: np.ndarray, unc: np.ndarray, mask: np.ndarray,
                   num_points: int = 40) -> QUCurves:
    """QU-BraTS curves of one binary region.

    Args:
        truth: boolean ground truth of the region.
        pred: boolean prediction of the region.
        unc: uncertainty in [0, 100] (uint8 or float), 100 = least certain.
        mask: boolean brain mask (FTP and FTN are counted inside it).
        num_points: threshold intervals (40: tau = 100, 97.5, ..., 0).

    Returns:
        :class:`QUCurves`; ``.scores()`` gives the AUCs and the region score.

    Example:
        >>> t = np.array([1, 1, 0, 0], bool); p = np.array([1, 0, 0, 1], bool)
        >>> c = qubrats_curves(t, p, np.array([0, 100, 0, 100.0]), np.ones(4, bool), 2)
        >>> c.dice.tolist()          # tau = 100, 50, 0: the two errors go at tau < 100
        [0.5, 1.0, 1.0]
    """
    return curves_from_counts(*filtered_counts(truth, pred, unc, mask, num_points))


def _label_coder(dtype: np.dtype, values: list[int], scale: int):
    """Function mapping a label block to ``scale * code`` (code 0: in no region, i + 1:
    ``values[i]``); a 256-entry lookup table for uint8 maps, comparisons otherwise."""
    if dtype == np.uint8 and all(0 <= v < 256 for v in values):
        table = np.zeros(256, np.intp)
        table[values] = scale * np.arange(1, len(values) + 1)
        return table.take

    def code(labels: np.ndarray) -> np.ndarray:
        out = np.zeros(labels.shape, np.intp)
        for i, v in enumerate(values):
            out[labels == v] = scale * (i + 1)
        return out

    return code


def score_case(truth: np.ndarray, pred: np.ndarray, uncertainty: dict[str, np.ndarray],
               mask: np.ndarray, regions: tuple[Region, ...], num_points: int = 40
               ) -> tuple[dict[str, float], dict[str, QUCurves]]:
    """QU-BraTS scores of one case for every region.

    Args:
        truth, pred: label maps (same shape). mask: boolean brain mask.
        uncertainty: region name -> uncertainty map in [0, 100].
        regions: the regions, e.g. :func:`medflow.uncertainty.regions.brats_regions`.
        num_points: threshold intervals.

    Returns:
        (row, curves): row has ``<region>_dice``, ``_auc_dice``, ``_auc_ftp``, ``_auc_ftn``,
        ``_score`` per region (lower-case names) and ``score``, the mean region score.

    Note:
        One pass over the volume in blocks: voxels outside the mask that are background in
        truth and prediction count towards nothing and are skipped; the others get a joint
        key (inside mask, truth label, predicted label), and each region histograms its
        uncertainty against that key. The histogram is then folded into the region's
        TP/FP/FN/TN categories.

    Example:
        >>> from medflow.uncertainty.regions import brats_regions
        >>> seg = np.array([[[0, 2, 4, 1]]])
        >>> u = {name: np.zeros((1, 1, 4)) for name in ("WT", "TC", "ET")}
        >>> score_case(seg, seg, u, seg >= 0, brats_regions())[0]["score"]
        1.0
    """
    labels = sorted({lab for r in regions for lab in r.labels})
    n_lab = len(labels) + 1
    n_keys = 2 * n_lab * n_lab
    # Column-major volumes (nibabel's) are flattened in memory order: views, not copies.
    order = "F" if np.isfortran(truth) else "C"
    t_all, p_all = truth.ravel(order), pred.ravel(order)
    m_all = np.asarray(mask, bool).ravel(order)
    u_all = {r.name: np.asarray(uncertainty[r.name]).ravel(order) for r in regions}
    hists = {name: ThresholdHistogram(u, n_keys, num_points) for name, u in u_all.items()}
    # key = (inside mask * n_lab + truth code) * n_lab + predicted code
    code_t = _label_coder(t_all.dtype, labels, n_lab)
    code_p = _label_coder(p_all.dtype, labels, 1)
    for start in range(0, t_all.size, CHUNK):
        block = slice(start, start + CHUNK)
        t, p, m = t_all[block], p_all[block], m_all[block]
        if 0 in labels:  # background is a region label: every voxel counts
            sel = np.arange(len(t))
        else:
            sel = np.flatnonzero(m | (t != 0) | (p != 0))
        key = code_t(t[sel])
        key += code_p(p[sel])
        key += m[sel] * (n_lab * n_lab)
        for name, hist in hists.items():
            hist.add(u_all[name][block][sel], key)
    # (inside mask, truth label index, predicted label index) of each key.
    m_of, t_of, p_of = np.unravel_index(np.arange(n_keys), (2, n_lab, n_lab))
    ascending = thresholds(num_points)[::-1]
    row: dict[str, float] = {}
    curves: dict[str, QUCurves] = {}
    for region in regions:
        member = np.array([False] + [lab in region.labels for lab in labels])
        fold = np.zeros((n_keys, 8))
        fold[np.arange(n_keys), 4 * m_of + 2 * member[t_of] + member[p_of]] = 1
        hist = hists[region.name].result() @ fold
        c = curves_from_counts(ascending, np.cumsum(hist[:-1], axis=0), hist.sum(axis=0))
        curves[region.name] = c
        row.update({f"{region.key}_{k}": v for k, v in c.scores().items()})
    row["score"] = float(np.mean([row[f"{region.key}_score"] for region in regions]))
    return row, curves
