"""Accuracy measures of super-resolved shapes and images against high-resolution truth.

Dice per label; the 95th-percentile Hausdorff distance (mm) between the label surfaces as
MONAI computes it (the larger of the two directed 95th percentiles of surface-to-surface
distances); image PSNR (dB, peak = the reference's range) and SSIM (scikit-image, 3D,
same data range).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt


def dice(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    """Dice of one label (1.0 when both are empty)."""
    a, b = np.asarray(pred) == label, np.asarray(truth) == label
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, label: int, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) of one label; NaN if either is
    empty."""
    a, b = np.asarray(pred) == label, np.asarray(truth) == label
    if not a.any() or not b.any():
        return float("nan")
    sa, sb = _surface(a), _surface(b)
    to_b = distance_transform_edt(~sb, sampling=spacing)[sa]
    to_a = distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(max(np.percentile(to_b, 95), np.percentile(to_a, 95)))


def psnr(pred: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB), the peak being the reference's value range."""
    ref = np.asarray(reference, np.float64)
    mse = float(np.mean((np.asarray(pred, np.float64) - ref) ** 2))
    peak = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def ssim(pred: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity (scikit-image, 7-voxel 3D windows, the reference's range)."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference, np.float64)
    return float(structural_similarity(ref, np.asarray(pred, np.float64),
                                       data_range=float(ref.max() - ref.min())))


def label_scores(pred: np.ndarray, truth: np.ndarray, spacing,
                 names: dict[int, str]) -> dict[str, float]:
    """``dice_<name>``, ``hd95_<name>_mm`` and ``vol_err_<name>_ml`` (predicted minus true
    volume; both on the same grid of ``spacing`` mm) for every label in ``names``."""
    out = {}
    ml = float(np.prod(spacing)) / 1000.0
    for value, name in names.items():
        out[f"dice_{name}"] = dice(pred, truth, value)
        out[f"hd95_{name}_mm"] = hd95(pred, truth, value, spacing)
        out[f"vol_err_{name}_ml"] = float(((pred == value).sum() - (truth == value).sum()) * ml)
    return out
