"""QU-BraTS score: analytic cases, hand-computed arrays, the per-threshold reference, ordering."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.phantom.brats import render_brats, sample_brats_parameters
from medflow.phantom.brats_predictions import simulate_predictions
from medflow.uncertainty import auc, brats_regions, qubrats_curves, score_case, thresholds
from medflow.uncertainty.qubrats import threshold_bins

EPS = float(np.finfo(np.float32).eps)


def reference(truth, pred, unc, mask, num_points=40):
    """REFERENCE: the definition, one threshold at a time (as the challenge script loops).

    Filter voxels with u > tau (strictly), Dice on the kept voxels of the whole volume
    (1 when both empty), FTP / FTN inside the mask with eps added to the denominator.
    """
    taus = thresholds(num_points)
    tp_all = np.sum(truth & pred & mask)
    tn_all = np.sum(~truth & ~pred & mask)
    dice, ftp, ftn = [], [], []
    for tau in taus:
        kept = np.ones(unc.shape, bool)
        kept[unc > tau] = False
        t, p = truth[kept], pred[kept]
        inter, union = np.sum(t & p), np.sum(t) + np.sum(p)
        dice.append(1.0 if union == 0 else 2.0 * inter / union)
        ftp.append((tp_all - np.sum((truth & pred & mask)[kept])) / (tp_all + EPS))
        ftn.append((tn_all - np.sum((~truth & ~pred & mask)[kept])) / (tn_all + EPS))
    a = [auc(taus, v) for v in (dice, ftp, ftn)]
    return {"dice_curve": np.array(dice), "auc_dice": a[0], "auc_ftp": a[1], "auc_ftn": a[2],
            "score": (a[0] + (1 - a[1]) + (1 - a[2])) / 3}


def random_case(rng, shape=(9, 14, 11), kind="float"):
    truth = rng.random(shape) < 0.3
    pred = truth ^ (rng.random(shape) < 0.15)
    mask = rng.random(shape) < 0.8
    if kind == "uint8":
        unc = rng.integers(0, 101, shape).astype(np.uint8)
    elif kind == "ties":  # every value sits exactly on a threshold
        unc = rng.choice(thresholds(40), shape)
    else:
        unc = (rng.random(shape) * 100).astype(np.float32)
    return truth, pred, unc, mask


def test_thresholds_are_exact_and_match_the_official_grid():
    t = thresholds(40)
    assert len(t) == 41 and t[0] == 100.0 and t[-1] == 0.0
    official = np.arange(0.0, 100.0 + EPS, 100.0 / 40)[::-1]
    assert np.array_equal(t, official)
    for n in (1, 3, 7, 33, 97, 1000):
        t = thresholds(n)
        assert len(t) == n + 1 and t[0] == 100.0 and t[-1] == 0.0
        assert np.all(np.diff(t) < 0)


def test_zero_uncertainty_gives_plain_dice_and_no_filtering():
    rng = np.random.default_rng(1)
    truth, pred, _, mask = random_case(rng)
    s = qubrats_curves(truth, pred, np.zeros(truth.shape), mask).scores()
    plain = 2 * np.sum(truth & pred) / (truth.sum() + pred.sum())
    assert s["auc_dice"] == pytest.approx(plain, abs=1e-12)
    assert s["dice"] == pytest.approx(plain, abs=1e-12)
    assert s["auc_ftp"] == 0 and s["auc_ftn"] == 0
    assert s["score"] == pytest.approx((plain + 2) / 3)


def test_full_uncertainty_filters_everything_below_100():
    rng = np.random.default_rng(2)
    truth, pred, _, mask = random_case(rng)
    c = qubrats_curves(truth, pred, np.full(truth.shape, 100.0), mask)
    plain = 2 * np.sum(truth & pred) / (truth.sum() + pred.sum())
    assert c.dice[0] == pytest.approx(plain) and np.all(c.dice[1:] == 1.0)
    assert c.ftp[0] == 0 and np.allclose(c.ftp[1:], 1, atol=1e-6)
    s = c.scores()
    assert s["auc_dice"] == pytest.approx(0.975 + 0.025 * (1 + plain) / 2)
    assert s["auc_ftp"] == pytest.approx(0.9875, abs=1e-6)
    assert s["auc_ftn"] == pytest.approx(0.9875, abs=1e-6)


def test_perfect_uncertainty_on_errors_gives_dice_one_after_first_threshold():
    rng = np.random.default_rng(3)
    truth, pred, _, mask = random_case(rng)
    unc = np.where(truth != pred, 100.0, 0.0)
    c = qubrats_curves(truth, pred, unc, mask)
    assert np.all(c.dice[1:] == 1.0)
    assert c.scores()["auc_ftp"] == 0 and c.scores()["auc_ftn"] == 0


def test_hand_computed_example():
    # Voxels: TP (u 0), FN (u 100), TN (u 0, outside mask), FP (u 50).
    truth = np.array([1, 1, 0, 0], bool)
    pred = np.array([1, 0, 0, 1], bool)
    mask = np.array([1, 1, 0, 1], bool)
    c = qubrats_curves(truth, pred, np.array([0, 100, 0, 50.0]), mask, num_points=2)
    assert c.thresholds.tolist() == [100.0, 50.0, 0.0]
    # tau 100: all kept, Dice 2/4; tau 50: FN gone (u 100 > 50), FP kept (50 is not > 50)
    assert c.dice.tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert c.ftp.tolist() == [0.0, 0.0, 0.0]  # the TP has u = 0: never filtered
    # the only TN is outside the mask: no TN to count, FTN stays 0
    assert c.ftn.tolist() == [0.0, 0.0, 0.0]
    s = c.scores()
    assert s["auc_dice"] == pytest.approx(0.5 * (0.5 + 2 / 3) / 2 + 0.5 * (2 / 3 + 1) / 2)


def test_empty_truth_and_prediction_give_dice_one():
    z = np.zeros((4, 5, 6), bool)
    s = qubrats_curves(z, z, np.full(z.shape, 30.0), np.ones_like(z)).scores()
    assert s["auc_dice"] == pytest.approx(1.0) and s["auc_ftp"] == 0
    # TN filtered for tau < 30 (30 itself keeps them): 0.275 + 0.025 / 2
    assert s["auc_ftn"] == pytest.approx(0.2875, abs=1e-6)


@pytest.mark.parametrize("kind", ["float", "uint8", "ties"])
@pytest.mark.parametrize("num_points", [40, 7, 3, 100])
def test_agrees_with_reference(kind, num_points):
    rng = np.random.default_rng(num_points)
    for _ in range(3):
        truth, pred, unc, mask = random_case(rng, kind=kind)
        ours = qubrats_curves(truth, pred, unc, mask, num_points)
        ref = reference(truth, pred, unc, mask, num_points)
        s = ours.scores()
        for k in ("auc_dice", "auc_ftp", "auc_ftn", "score"):
            assert s[k] == pytest.approx(ref[k], abs=1e-6)
        np.testing.assert_allclose(ours.dice, ref["dice_curve"], atol=1e-12)


def test_threshold_bins_settle_ties_like_a_search():
    for n in (3, 7, 40, 97):
        asc = thresholds(n)[::-1]
        u = np.concatenate([asc, np.nextafter(asc, np.inf), np.nextafter(asc, -np.inf),
                            [-5.0, 100.5, 1e9]])
        expected = np.searchsorted(asc, u, side="left")
        assert np.array_equal(threshold_bins(u, n), expected)
        assert np.array_equal(threshold_bins(u.astype(np.float32), n),
                              np.searchsorted(asc, u.astype(np.float32).astype(float), "left"))


def phantom_case(seed=5, shape=(48, 48, 32)):
    rng = np.random.default_rng(seed)
    vols = render_brats(sample_brats_parameters(rng), shape)
    arrays, _ = simulate_predictions(vols["seg"], vols["mask"], 4.0, rng)
    unc = {r.name: arrays[f"unc_{r.key}"] for r in brats_regions()}
    return vols["seg"], arrays["pred"], unc, vols["mask"] > 0


def test_score_case_matches_reference_per_region_and_memory_order():
    truth, pred, unc, mask = phantom_case()
    row, _ = score_case(truth, pred, unc, mask, brats_regions())
    for r in brats_regions():
        ref = reference(r.mask(truth), r.mask(pred), unc[r.name], mask)
        for k in ("auc_dice", "auc_ftp", "auc_ftn", "score"):
            assert row[f"{r.key}_{k}"] == pytest.approx(ref[k], abs=1e-6)
    assert row["score"] == pytest.approx(np.mean([row[f"{k}_score"] for k in ("wt", "tc", "et")]))
    fortran = score_case(np.asfortranarray(truth), np.asfortranarray(pred),
                         {k: np.asfortranarray(v) for k, v in unc.items()},
                         np.asfortranarray(mask), brats_regions())[0]
    assert fortran == row
    wide = score_case(truth.astype(np.int16), pred.astype(np.float64), unc, mask,
                      brats_regions())[0]
    assert wide == row


def test_background_region_and_float_maps_agree_with_reference():
    from medflow.uncertainty.regions import Region

    truth, pred, unc, mask = phantom_case(seed=6)
    regions = (Region("BG", (0,)), Region("WT", (1, 2, 4)))
    uf = {"BG": unc["WT"].astype(np.float32) / 3, "WT": unc["WT"] + 0.5}
    row, _ = score_case(truth, pred, uf, mask, regions)
    for r in regions:
        ref = reference(r.mask(truth), r.mask(pred), uf[r.name], mask)
        assert row[f"{r.key}_score"] == pytest.approx(ref["score"], abs=1e-6)


def test_good_uncertainty_beats_random_beats_inverted():
    truth, pred, unc, mask = phantom_case(seed=7)
    rng = np.random.default_rng(0)
    variants = {"good": unc,
                "random": {k: rng.uniform(0, 100, v.shape) for k, v in unc.items()},
                "inverted": {k: 100 - v.astype(float) for k, v in unc.items()}}
    rows = {name: score_case(truth, pred, u, mask, brats_regions())[0]
            for name, u in variants.items()}
    for key in ("wt", "tc", "et"):
        assert rows["good"][f"{key}_score"] > rows["random"][f"{key}_score"] \
            > rows["inverted"][f"{key}_score"]
        assert rows["good"][f"{key}_auc_dice"] > rows["random"][f"{key}_auc_dice"] \
            > rows["inverted"][f"{key}_auc_dice"]
        assert rows["good"][f"{key}_auc_ftn"] < rows["random"][f"{key}_auc_ftn"] \
            < rows["inverted"][f"{key}_auc_ftn"]
    assert rows["good"]["score"] > rows["random"]["score"] > rows["inverted"]["score"]
