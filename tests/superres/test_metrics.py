"""The accuracy numbers the benchmark reports: Dice, HD95 and volume error of known shapes."""

from __future__ import annotations

import numpy as np

from medflow.superres.metrics import label_scores


def test_scores_of_a_cube_one_voxel_too_thick():
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    pred = truth.copy()
    pred[5:15, 5:15, 15] = 1  # one extra 10 x 10 layer of 2 x 2 x 2 mm voxels
    s = label_scores(pred, truth, (2.0, 2.0, 2.0), {1: "lv"})
    assert np.isclose(s["dice_lv"], 2 * 1000 / (1000 + 1100))
    assert np.isclose(s["vol_err_lv_ml"], 100 * 8 / 1000)  # 0.8 ml too much
    assert 0 < s["hd95_lv_mm"] <= 2.0
    same = label_scores(truth, truth, (2.0, 2.0, 2.0), {1: "lv"})
    assert same["dice_lv"] == 1.0 and same["vol_err_lv_ml"] == 0.0 and same["hd95_lv_mm"] == 0
