"""Simulated segmentation predictions with controlled errors, uncertainty and probabilities.

The errors are known by construction, so uncertainty scores can be checked against truth:

- boundary errors: the whole tumour is dilated by one voxel on one side of its centre and
  eroded on the other; the enhancing rim grows into the necrosis on one side and the tumour
  core loses its outer layer to oedema on the other;
- a missed piece: a ball on the tumour's edge is predicted as background;
- a spurious blob: a ball of enhancing tumour in the other hemisphere.

Uncertainty maps (0-100, uint8, one per region) are high (75-100) where the region is wrong,
moderate (35-50) on the predicted boundary and low (3-13) elsewhere, with smooth noise.
Probabilities (one channel per region: WT, TC, ET) agree with the prediction (p > 0.5
exactly where the region is predicted) and are deliberately miscalibrated: over-confident
on errors (p >= 0.65 for a wrong call) and under-confident on the far more numerous right
calls (p <= 0.999, lower near edges), so a fitted temperature (below 1 here) lowers the NLL.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medflow.phantom.brats import smooth_field

REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
_STRUCT = ndimage.generate_binary_structure(3, 1)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
           for ax in range(3)]
    return tuple(slice(max(int(i[0]) - margin, 0), int(i[-1]) + margin + 1) for i in idx)


def _ball(shape, centre, radius) -> tuple[tuple[slice, ...], np.ndarray]:
    # A ball as (bounding slices, boolean patch): cost scales with the ball, not the volume.
    lo = [max(int(np.floor(c - radius)), 0) for c in centre]
    hi = [min(int(np.ceil(c + radius)) + 1, n) for c, n in zip(centre, shape)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.ogrid[sl]
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return sl, d2 <= radius**2


def sample_error_parameters(seg: np.ndarray, mask: np.ndarray, spacing: float,
                            rng: np.random.Generator) -> dict:
    """Draw where the simulated prediction goes wrong (sample-then-apply).

    Args:
        seg: true labels. mask: brain mask. spacing: isotropic voxel size (mm).
        rng: seeded generator.

    Returns:
        JSON-serialisable parameters for :func:`predict_with_errors`.
    """
    wt = np.argwhere(seg > 0)
    centre = wt.mean(axis=0)
    radius = (len(wt) * 3 / (4 * np.pi)) ** (1 / 3)  # equivalent-sphere radius, voxels
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    # Spurious blob: a brain voxel in the other hemisphere, well away from the tumour.
    cand = np.argwhere(mask[::3, ::3, ::3]) * 3
    far = np.linalg.norm(cand - centre, axis=1) > radius + 20 / spacing
    mid = (seg.shape[0] - 1) / 2
    other = np.sign(cand[:, 0] - mid) != np.sign(centre[0] - mid)
    pool = cand[far & other] if np.any(far & other) else cand
    return {
        "tumour_centre_vox": centre.round(3).tolist(),
        "boundary_axis": int(rng.integers(3)),
        "core_axis": int(rng.integers(3)),
        "missed_centre_vox": (centre + direction * radius * 0.8).round(3).tolist(),
        "missed_radius_vox": round(max(radius * 0.35, 1.5), 3),
        "blob_centre_vox": pool[int(rng.integers(len(pool)))].tolist(),
        "blob_radius_vox": round(max(4.0 / spacing, 1.5), 3),
        "noise": rng.normal(0, 1, size=(2, 5, 5, 4)).round(6).tolist(),
    }


def predict_with_errors(seg: np.ndarray, mask: np.ndarray, params: dict) -> np.ndarray:
    """Apply the error parameters to the true labels; returns the predicted label map."""
    pred = seg.copy()
    sl = _bbox(seg > 0, 3)
    sub, out = seg[sl], pred[sl]
    coords = np.ogrid[sl]
    centre = params["tumour_centre_vox"]
    side = coords[params["boundary_axis"]] > centre[params["boundary_axis"]]
    wt = sub > 0
    out[ndimage.binary_dilation(wt, _STRUCT) & ~wt & side] = 2
    out[wt & ~ndimage.binary_erosion(wt, _STRUCT) & ~side] = 0
    side2 = coords[params["core_axis"]] > centre[params["core_axis"]]
    out[ndimage.binary_dilation(sub == 4, _STRUCT) & (sub == 1) & side2] = 4
    tc = (sub == 1) | (sub == 4)
    out[tc & ~ndimage.binary_erosion(tc, _STRUCT) & ~side2 & (out > 0)] = 2
    bsl, ball = _ball(seg.shape, params["missed_centre_vox"], params["missed_radius_vox"])
    pred[bsl][ball] = 0
    bsl, ball = _ball(seg.shape, params["blob_centre_vox"], params["blob_radius_vox"])
    pred[bsl][ball] = 4
    pred[mask == 0] = 0
    return pred


def uncertainty_maps(seg: np.ndarray, pred: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """Per-region uncertainty (uint8, 0-100): high on errors, moderate on edges, low elsewhere."""
    noise = np.asarray(params["noise"])
    n1 = np.clip(0.5 + smooth_field(seg.shape, noise[0]), 0, 1)
    n2 = np.clip(0.5 + smooth_field(seg.shape, noise[1]), 0, 1)
    base = 3 + 10 * n1
    maps = {}
    for name, labels in REGIONS.items():
        truth, guess = np.isin(seg, labels), np.isin(pred, labels)
        u = base.copy()
        if guess.any():
            sl = _bbox(guess, 2)
            g = guess[sl]
            edge = (ndimage.binary_dilation(g, _STRUCT) ^ g) \
                | (g ^ ndimage.binary_erosion(g, _STRUCT))
            u[sl][edge] = 35 + 15 * n1[sl][edge]
        wrong = truth != guess
        u[wrong] = 75 + 25 * n2[wrong]
        maps[name] = np.clip(np.round(u), 0, 100).astype(np.uint8)
    return maps


def probability_maps(pred: np.ndarray, unc: dict[str, np.ndarray]) -> np.ndarray:
    """Region probabilities (X, Y, Z, 3; WT, TC, ET) consistent with the prediction.

    Note:
        Confidence is ``0.999 - 0.35 * u / 100``, always above 0.5, so thresholding at 0.5
        gives back the predicted regions; wrong voxels (u >= 75) keep confidence >= 0.65,
        which makes the maps over-confident there.
    """
    channels = []
    for name, labels in REGIONS.items():
        conf = 0.999 - 0.35 * unc[name].astype(np.float32) / 100
        channels.append(np.where(np.isin(pred, labels), conf, 1 - conf))
    return np.stack(channels, axis=-1).astype(np.float32)


def simulate_predictions(seg: np.ndarray, mask: np.ndarray, spacing: float,
                         rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    """Prediction, uncertainty maps and probabilities for one subject, plus what was done.

    Args:
        seg: true BraTS labels (0, 1, 2, 4). mask: brain mask. spacing: voxel size (mm).
        rng: the subject's generator (continues the phantom's stream).

    Returns:
        (arrays by role: pred, unc_wt, unc_tc, unc_et, prob; info for truth.json with the
        error parameters, per-region Dice and error voxel counts).

    Example:
        >>> from medflow.phantom.brats import render_brats, sample_brats_parameters
        >>> rng = np.random.default_rng(0)
        >>> v = render_brats(sample_brats_parameters(rng), (48, 48, 32))
        >>> arrays, info = simulate_predictions(v["seg"], v["mask"], 4.0, rng)
        >>> sorted(arrays)
        ['pred', 'prob', 'unc_et', 'unc_tc', 'unc_wt']
    """
    params = sample_error_parameters(seg, mask, spacing, rng)
    pred = predict_with_errors(seg, mask, params)
    unc = uncertainty_maps(seg, pred, params)
    info = {"errors": params, "dice": {}, "error_voxels": {}}
    for name, labels in REGIONS.items():
        t, p = np.isin(seg, labels), np.isin(pred, labels)
        denom = int(t.sum() + p.sum())
        info["dice"][name] = round(2 * float((t & p).sum()) / denom, 6) if denom else 1.0
        info["error_voxels"][name] = int((t != p).sum())
    arrays = {"pred": pred, **{f"unc_{k}": v for k, v in unc.items()},
              "prob": probability_maps(pred, unc)}
    return arrays, info
