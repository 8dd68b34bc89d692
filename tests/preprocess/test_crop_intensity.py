"""Cropping keeps world positions; normalisation statistics are over all voxels and frames."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.io import Volume
from medflow.preprocess import (PreprocessConfig, crop_or_pad, crop_to_mask,
                                mask_bounding_box, normalise, percentile_scale, preprocess,
                                resample, zscore)
from medflow.preprocess.pipeline import PreprocessError


def _value_at_world(vol: Volume, xyz) -> float:
    ijk = np.round(np.linalg.inv(vol.affine) @ np.append(xyz, 1.0))[:3].astype(int)
    return vol.data[tuple(ijk)]


def test_crop_keeps_world_positions(image3d):
    out = crop_or_pad(image3d, (6, None, 13))
    assert out.shape3 == (6, 20, 13)
    for ijk in [(0, 0, 0), (5, 19, 12), (2, 3, 4)]:
        xyz = (out.affine @ np.array([*ijk, 1.0]))[:3]
        assert _value_at_world(image3d, xyz) == out.data[ijk]
    assert np.shares_memory(out.data, image3d.data)  # a view


def test_pad_where_smaller(image3d):
    out = crop_or_pad(image3d, (13, 20, 30), fill=0.0)
    assert out.shape3 == (13, 20, 30)
    # floor((10 - 13) / 2) = -2: two voxels padded before, one after
    assert np.all(out.data[:2] == 0) and np.all(out.data[-1:] == 0)
    np.testing.assert_array_equal(out.data[2:12], image3d.data)
    np.testing.assert_allclose(out.affine[:3, 3], image3d.affine[:3, :3] @ [-2, 0, 0]
                               + image3d.origin)


def test_crop_4d_time_untouched():
    data = np.random.default_rng(0).random((6, 6, 6, 4)).astype(np.float32)
    out = crop_or_pad(Volume(data, np.eye(4)), (4, 8, 6))
    assert out.data.shape == (4, 8, 6, 4)
    np.testing.assert_array_equal(out.data[:, 1:7, :, 2], data[1:5, :, :, 2])


def test_crop_to_mask_with_margin(image3d, label3d):
    box = mask_bounding_box(label3d.data)
    assert box == ((2, 8), (4, 16), (5, 25))
    out = crop_to_mask(image3d, label3d, margin_mm=3.0)  # spacing 1.5, 2, 3 -> 2, 2, 1 voxels
    assert out.shape3 == (10, 16, 22)
    np.testing.assert_array_equal(out.data, image3d.data[0:10, 2:18, 4:26])


def test_crop_mask_on_another_grid_is_resampled_first(image3d, label3d):
    finer = resample(label3d, (0.75, 1.0, 1.5))
    out = crop_to_mask(image3d, finer, margin_mm=0.0)
    direct = crop_to_mask(image3d, label3d, margin_mm=0.0)
    # nearest-neighbour round trip may move the box edge by one voxel at most
    assert all(abs(a - b) <= 1 for a, b in zip(out.shape3, direct.shape3))


def test_empty_mask_is_an_error(image3d, label3d):
    with pytest.raises(ValueError, match="no voxel > 0"):
        crop_to_mask(image3d, label3d.with_data(np.zeros_like(label3d.data)))


def test_zscore_over_all_frames():
    rng = np.random.default_rng(1)
    data = (rng.normal(50, 10, (5, 6, 7, 3)) * [1, 2, 3]).astype(np.float32)
    expected = (data.astype(np.float64) - data.mean(dtype=np.float64)) / data.std(dtype=np.float64)
    stats = zscore(data)
    np.testing.assert_allclose(data, expected, atol=1e-5)
    assert abs(data.mean()) < 1e-5 and abs(data.std() - 1) < 1e-5
    assert stats["std"] > 0


def test_zscore_constant_image():
    data = np.full((3, 3, 3), 7.0, np.float32)
    assert zscore(data)["std"] == 0 and np.all(data == 0)


def test_percentile_scale():
    data = np.random.default_rng(2).normal(0, 1, (8, 8, 8, 2)).astype(np.float32)
    lo, hi = np.percentile(data, [1, 99])
    stats = percentile_scale(data, 1, 99)
    assert stats == pytest.approx({"low": lo, "high": hi})
    assert data.min() == 0.0 and data.max() == 1.0


def test_normalise_copies_unless_inplace(image3d):
    before = image3d.data.copy()
    out, _ = normalise(image3d, "zscore")
    np.testing.assert_array_equal(image3d.data, before)
    out2, _ = normalise(image3d, "zscore", inplace=True)
    assert out2.data is image3d.data


def test_labels_are_never_normalised(label3d):
    with pytest.raises(ValueError, match="never normalised"):
        normalise(label3d, "zscore")
    with pytest.raises(PreprocessError):
        preprocess(label3d, PreprocessConfig(normalise="zscore"))


def test_pipeline_order_and_record(image3d):
    config = PreprocessConfig(orientation="LPS", spacing=(1.0, None, 2.0), crop_to=(8, 8, 8),
                              normalise="percentile", percentiles=(2, 98))
    out, steps = preprocess(image3d, config)
    assert [s["step"] for s in steps] == ["reorient", "resample", "crop", "normalise"]
    assert steps[0]["output"]["orientation"] == "LPS"
    assert steps[1]["input"]["shape"] == steps[0]["output"]["shape"]
    assert steps[2]["output"]["shape"] == [8, 8, 8]
    assert out.shape3 == (8, 8, 8) and out.data.min() >= 0 and out.data.max() <= 1
    assert steps[3]["parameters"]["percentiles"] == [2, 98]


def test_pipeline_does_not_change_its_input(image3d):
    before = image3d.data.copy()
    preprocess(image3d, PreprocessConfig(normalise="zscore"))
    np.testing.assert_array_equal(image3d.data, before)


def test_default_config_changes_nothing_but_orientation(image3d):
    out, steps = preprocess(image3d, PreprocessConfig(orientation="LPS"))
    back, _ = preprocess(out, PreprocessConfig(orientation="RAS"))
    ras, _ = preprocess(image3d, PreprocessConfig())
    np.testing.assert_array_equal(back.data, ras.data)
    np.testing.assert_allclose(back.affine, ras.affine, atol=1e-12)
    assert [s.get("skipped") is None for s in steps] == [True, False, False, False]


@pytest.mark.parametrize("kwargs", [dict(orientation="RAX"), dict(spacing=(1, 0, 1)),
                                    dict(interpolation="cubic"), dict(crop_to=(1.5, 2, 2)),
                                    dict(margin_mm=-1), dict(normalise="minmax"),
                                    dict(percentiles=(99, 1))])
def test_config_validates_at_the_door(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


def test_per_axis_parameters_follow_the_stored_axes():
    # stored axes point S, R, A: reorientation to RAS moves the 10 mm slice axis (i) last
    aff = np.array([[0, 1.8, 0, 0], [0, 0, 1.8, 0], [10.0, 0, 0, 0], [0, 0, 0, 1]])
    vol = Volume(np.random.default_rng(0).random((6, 20, 22, 3)).astype(np.float32), aff)
    config = PreprocessConfig(spacing=(None, 1.25, 1.25), crop_to=(None, 24, 30))
    out, steps = preprocess(vol, config)
    assert steps[0]["parameters"]["axis_permutation"] == [2, 0, 1]
    np.testing.assert_allclose(out.spacing, (1.25, 1.25, 10.0))
    assert out.data.shape == (24, 30, 6, 3)  # 20*1.8/1.25 = 29 -> 24, 22*1.8/1.25 = 32 -> 30
