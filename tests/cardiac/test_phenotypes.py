"""Phenotype arithmetic and QC rules against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medflow.cardiac import (basal_descent_reasons, label_volume_curves, plausibility_reasons,
                             short_axis_qc, ventricular_phenotypes, volume_curve_reasons,
                             voxel_phenotypes)

LV = [120.0, 110.0, 80.0, 60.0, 50.0, 58.0, 80.0, 100.0, 112.0, 118.0]
RV = [130.0, 120.0, 95.0, 75.0, 66.0, 70.0, 90.0, 110.0, 122.0, 128.0]


def test_ventricular_phenotypes_by_hand():
    p = ventricular_phenotypes(LV, [100.0] * 10, RV, frame_interval_s=0.1)
    assert (p["ed_frame"], p["es_frame"]) == (0, 4)
    assert p["lvedv_ml"] == 120 and p["lvesv_ml"] == 50 and p["lvsv_ml"] == 70
    assert p["lvef_pct"] == pytest.approx(100 * 70 / 120)
    assert p["lvm_g"] == pytest.approx(105.0)                   # 100 mL x 1.05 g/mL
    assert p["hr_bpm"] == pytest.approx(60.0)                    # 10 frames x 0.1 s
    assert p["lvco_l_min"] == pytest.approx(70 * 60 / 1000)
    assert p["rvedv_ml"] == 130 and p["rvesv_ml"] == 66          # at the LV's ED/ES frames
    assert p["rvef_pct"] == pytest.approx(100 * 64 / 130)


def test_ed_rules_and_errors():
    shifted = LV[3:] + LV[:3]
    assert ventricular_phenotypes(shifted, ed_rule="max")["ed_frame"] == shifted.index(120.0)
    assert ventricular_phenotypes(shifted)["ed_frame"] == 0
    assert math.isnan(ventricular_phenotypes([0.0, 0.0])["lvef_pct"])
    with pytest.raises(ValueError):
        ventricular_phenotypes([1.0])
    with pytest.raises(ValueError):
        ventricular_phenotypes(LV, rv_ml=RV[:5])
    with pytest.raises(ValueError):
        ventricular_phenotypes(LV, ed_rule="last")
    with pytest.raises(ValueError):
        ventricular_phenotypes(LV, frame_interval_s=0)


def test_voxel_counting():
    lab = np.zeros((10, 10, 4, 2), np.uint8)
    lab[:5, :5, :2, 0] = 1       # 50 voxels of 2 x 2 x 10 mm = 2 mL at ED
    lab[:5, :2, :2, 1] = 1       # 20 voxels at ES
    lab[5:, :, :, :] = 2         # 200 voxels of myocardium = 8 mL
    curves = label_volume_curves(lab, (2.0, 2.0, 10.0))
    assert curves[1].tolist() == pytest.approx([2.0, 0.8])
    p = voxel_phenotypes(lab, (2.0, 2.0, 10.0))
    assert p["lvef_pct"] == pytest.approx(60.0) and p["lvm_g"] == pytest.approx(8.4)
    assert p["myo_ml_per_frame"] == pytest.approx([8.0, 8.0])


def ring_stack(slices=8, rv=True) -> np.ndarray:
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    d = np.hypot(x - 20, y - 20)
    sl = np.zeros((40, 40), np.uint8)
    sl[d < 6] = 1
    sl[(d >= 6) & (d < 9)] = 2
    if rv:
        sl[(np.hypot(x - 31, y - 20) < 5) & (d >= 9)] = 3
    out = np.zeros((40, 40, slices + 2), np.uint8)
    out[..., 1:-1] = sl[..., None]
    return out


def test_short_axis_qc_rules():
    assert short_axis_qc(ring_stack()) == []
    assert any("< 6" in r for r in short_axis_qc(ring_stack(slices=4)))
    gap = ring_stack()
    gap[..., 4] = 0
    assert "a gap between the slices holding the LV" in short_axis_qc(gap)
    no_rv = short_axis_qc(ring_stack(rv=False))
    assert any("RV blood pool has 0 voxels" in r for r in no_rv)
    assert "the mid-cavity slice holds no RV" in no_rv


def test_volume_curve_check_flags_a_flat_curve():
    assert volume_curve_reasons(LV) == []
    assert "no systole" in volume_curve_reasons([100.0] * 10)[0]
    assert volume_curve_reasons([100, 101, 102, 103, 104])[0].endswith("no systole")
    assert "more than one systole" in volume_curve_reasons([100, 50, 100, 50, 100, 100])[0]
    assert volume_curve_reasons([0.0] * 5) == ["LV volume is 0 at end-diastole"]


def cone_cine(basal_lv_at_es: int) -> np.ndarray:
    """(16, 16, 6, 3) LV discs narrowing from slice 0 (base) to slice 5 (apex); frame 1 is
    ES, where the basal slice keeps ``basal_lv_at_es`` LV voxels."""
    lab = np.zeros((16, 16, 6, 3), np.uint8)
    yy, xx = np.mgrid[:16, :16]
    for z in range(6):
        lab[..., z, :][(yy - 8) ** 2 + (xx - 8) ** 2 <= (7 - z) ** 2] = 1
    es = lab[..., 1]
    es[..., 1:][es[..., 1:] == 1] = 0
    es[..., 1:][(yy - 8) ** 2 + (xx - 8) ** 2 <= 4] = 1        # smaller cavities at ES
    basal = es[..., 0]
    basal[:] = 0
    basal.flat[:basal_lv_at_es] = 1
    return lab


def test_basal_descent_check_flags_lv_left_in_the_basal_slice_at_es():
    assert basal_descent_reasons(cone_cine(0), 0, 1) == []
    assert basal_descent_reasons(cone_cine(9), 0, 1) == []      # below 10 voxels: noise
    reasons = basal_descent_reasons(cone_cine(120), 0, 1)
    assert reasons and reasons[0].startswith("LV blood pool at ES in the basal slice 0 (120 of")
    # the base found at whichever end is wider, on any slice axis
    flipped = np.moveaxis(cone_cine(120)[:, :, ::-1], 2, 0)
    assert "basal slice 5 " in basal_descent_reasons(flipped, 0, 1, slice_axis=0)[0]
    assert basal_descent_reasons(np.moveaxis(cone_cine(0)[:, :, ::-1], 2, 0), 0, 1, 0) == []
    assert basal_descent_reasons(cone_cine(120), 0, 0) == []    # no systole: other checks


def test_plausibility_flags():
    p = ventricular_phenotypes(LV, [100.0] * 10, RV)
    assert plausibility_reasons(p) == []
    low = ventricular_phenotypes([100, 90, 80, 75, 80, 95], [100.0] * 6)
    assert any(r.startswith("lvef_pct 25.0 outside 40-80") for r in plausibility_reasons(low))
