"""Calibration: ECE against MONAI, MCE, Brier, NLL, temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.uncertainty.calibration import (LogitHistogram, apply_temperature, brier,
                                             calibration_scores, fit_temperature, nll,
                                             reliability_bins)


def monai_ece(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    torch = pytest.importorskip("torch")
    from monai.metrics import CalibrationErrorMetric

    metric = CalibrationErrorMetric(num_bins=n_bins, include_background=True,
                                    calibration_reduction="expected", metric_reduction="mean")
    yp = torch.as_tensor(p, dtype=torch.float64).reshape(1, 1, -1)
    yt = torch.as_tensor(y, dtype=torch.float64).reshape(1, 1, -1)
    metric(yp, yt)
    return float(metric.aggregate())


def monai_bins(p: np.ndarray, y: np.ndarray, n_bins: int) -> np.ndarray:
    torch = pytest.importorskip("torch")
    from monai.metrics import calibration_binning

    _, _, counts = calibration_binning(torch.as_tensor(p).reshape(1, 1, -1),
                                       torch.as_tensor(y, dtype=torch.float64).reshape(1, 1, -1),
                                       num_bins=n_bins)
    return counts.numpy().ravel()


@pytest.mark.parametrize("n_bins", [15, 10, 7])
def test_ece_matches_monai_when_no_probability_sits_on_a_bin_edge(n_bins):
    # MONAI's bins differ from ours only on the edges themselves: it stretches the edges to
    # k (1 + eps) / n and puts a value equal to an edge in the lower bin (bucketize with
    # right=False); ours puts it in the upper bin (floor(p * n)). Probabilities on a grid
    # that never meets k / n (odd multiples of 1/2000 for these n) must give the same ECE.
    rng = np.random.default_rng(n_bins)
    p = (2 * rng.integers(0, 1000, 50_000) + 1) / 2000.0
    y = rng.random(p.size) < np.clip(p + rng.normal(0, 0.15, p.size), 0, 1)
    ours = reliability_bins(p, y, n_bins).ece()
    assert ours == pytest.approx(monai_ece(p, y, n_bins), abs=1e-6)


def test_ece_matches_monai_on_the_phantom_probabilities():
    from medflow.phantom.brats import render_brats, sample_brats_parameters
    from medflow.phantom.brats_predictions import REGIONS, simulate_predictions

    rng = np.random.default_rng(3)
    v = render_brats(sample_brats_parameters(rng), (48, 48, 32))
    arrays, _ = simulate_predictions(v["seg"], v["mask"], 4.0, rng)
    mask = v["mask"] > 0
    for i, labels in enumerate(REGIONS.values()):
        p = arrays["prob"][..., i][mask].astype(np.float64)
        y = np.isin(v["seg"], labels)[mask]
        edges = np.isclose(p * 15, np.round(p * 15), atol=1e-9)
        assert not edges.any()  # so the two binnings must put every voxel in the same bin
        ours = reliability_bins(p, y, 15)
        counts = monai_bins(p, y, 15)
        assert np.array_equal(ours.counts, counts)
        # MONAI sums in float32 (tensor.float()), hence ~1e-6 differences on 10^4+ voxels.
        assert ours.ece() == pytest.approx(monai_ece(p, y, 15), abs=1e-5)


def test_perfectly_calibrated_probabilities_have_small_ece():
    rng = np.random.default_rng(0)
    p = rng.random(400_000)
    y = rng.random(p.size) < p
    s = calibration_scores(p, y)
    assert s["ece"] < 0.005 and s["mce"] < 0.02
    assert s["brier"] == pytest.approx(1 / 6, abs=0.003)  # E[p(1-p)] for uniform p


def test_hand_computed_scores():
    p = np.array([0.1, 0.9, 0.9, 1.0])
    y = np.array([0, 1, 0, 1], bool)
    b = reliability_bins(p, y, 2)
    assert b.counts.tolist() == [1, 3]  # p = 1.0 goes to the last bin
    # bin 0: |0 - 0.1| ; bin 1: |2/3 - 2.8/3|
    assert b.ece() == pytest.approx((0.1 + abs(2 - 2.8)) / 4)
    assert b.mce() == pytest.approx(max(0.1, 0.8 / 3))
    assert brier(p, y) == pytest.approx((0.01 + 0.01 + 0.81 + 0) / 4)
    assert nll(p, y) == pytest.approx(-(np.log(0.9) + np.log(0.9) + np.log(0.1)
                                        + np.log(1 - 1e-7)) / 4)


def test_reliability_bins_pool_by_addition():
    rng = np.random.default_rng(1)
    p, y = rng.random(1000), rng.random(1000) < 0.4
    whole = reliability_bins(p, y)
    parts = reliability_bins(p[:300], y[:300]) + reliability_bins(p[300:], y[300:])
    assert np.allclose(whole.counts, parts.counts) and whole.ece() == pytest.approx(parts.ece())


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_temperature_recovers_a_known_distortion(true_t):
    rng = np.random.default_rng(2)
    s = rng.normal(0, 2.5, 200_000)
    y = rng.random(s.size) < 1 / (1 + np.exp(-s))
    p = 1 / (1 + np.exp(-s * true_t))  # calibrated after dividing logits by true_t
    t = fit_temperature(LogitHistogram().add(p, y))
    assert t == pytest.approx(true_t, rel=0.03)
    assert nll(apply_temperature(p, t), y) <= nll(p, y)
    assert calibration_scores(apply_temperature(p, t), y)["ece"] < calibration_scores(p, y)["ece"]


def test_unit_temperature_changes_nothing():
    p = np.array([0.01, 0.3, 0.5, 0.97])
    assert np.allclose(apply_temperature(p, 1.0), p)
