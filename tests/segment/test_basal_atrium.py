"""Issue 16: the most basal short-axis slice cuts the LV at end diastole and the atrium at
end systole. A small trained model's `segment-cascaded predict` must leave no LV there at
ES, keep the LV there at ED, and so count LVESV and LVEF right."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medflow.cardiac import voxel_phenotypes
from medflow.io import Volume, read_image, write_nifti

from .conftest import SPACING, TINY, affine

BASE = 1  # the most basal slice holding heart (slice 0 is empty)


def cine_with_basal_atrium(tiny_heart, seed: int):
    """A tiny 3-frame cine (ED 0 .. ES 2) whose basal slice at ES shows the atrium: a
    bright blood pool like the LV's but without a myocardial ring, labelled background."""
    rng = np.random.default_rng(seed)
    img, lab = tiny_heart(rng, frames=3)
    es = 2
    blood = lab[..., BASE, es] == 1
    atrium = blood | (lab[..., BASE, es] == 2)           # the ring's place: atrial blood
    img[..., BASE, es] = 40 + rng.normal(0, 10, blood.shape)
    img[..., BASE, es][atrium] = 300 + rng.normal(0, 10, int(atrium.sum()))
    lab[..., BASE, es] = 0
    return img, lab


@pytest.fixture(scope="module")
def basal_cohort(tmp_path_factory, tiny_heart):
    root = tmp_path_factory.mktemp("basal")
    rows = []
    for i in range(5):
        img, lab = cine_with_basal_atrium(tiny_heart, 100 + i)
        d = root / f"b{i}"
        d.mkdir()
        write_nifti(Volume(img, affine()), d / "sa.nii.gz")
        write_nifti(Volume(lab, affine(), "label"), d / "seg_sa.nii.gz")
        rows.append({"subject": f"b{i}", "sa": str(d / "sa.nii.gz"),
                     "seg_sa": str(d / "seg_sa.nii.gz")})
    pd.DataFrame(rows[:4]).to_csv(root / "train.csv", index=False)
    pd.DataFrame(rows[4:]).to_csv(root / "test.csv", index=False)
    return root


def test_basal_slice_at_end_systole_holds_no_lv(runner, basal_cohort, tmp_path):
    import torch

    from medflow.segment.cli import segment_cascaded

    torch.set_num_threads(1)
    model = tmp_path / "m"
    opts = [*TINY[:1], "40", *TINY[2:]]  # the tiny setting, 40 epochs (~25 s of one core)
    res = runner.invoke(segment_cascaded, ["train", "--samplesheet",
                                           str(basal_cohort / "train.csv"), "--out",
                                           str(model), *opts])
    assert res.exit_code == 0, res.output
    truth = np.asarray(read_image(basal_cohort / "b4" / "seg_sa.nii.gz", kind="label").data)
    for flag, name in (("--ventricle-anatomy", "on"), ("--no-ventricle-anatomy", "off")):
        out = tmp_path / f"seg_{name}.nii.gz"
        res = runner.invoke(segment_cascaded, ["predict", "--model", str(model), "--input",
                                               str(basal_cohort / "b4" / "sa.nii.gz"),
                                               "--output", str(out), flag])
        assert res.exit_code == 0, res.output
    seg = np.asarray(read_image(tmp_path / "seg_on.nii.gz", kind="label").data)
    assert (seg[..., BASE, 2] == 1).sum() == 0                   # the atrium is not LV
    assert (seg[..., BASE, 0] == 1).sum() >= 0.8 * (truth[..., BASE, 0] == 1).sum()
    pred_p = voxel_phenotypes(seg, SPACING)
    true_p = voxel_phenotypes(truth, SPACING)
    assert pred_p["es_frame"] == true_p["es_frame"] == 2
    assert abs(pred_p["lvesv_ml"] / true_p["lvesv_ml"] - 1) < 0.15
    assert abs(pred_p["lvef_pct"] - true_p["lvef_pct"]) < 5
    side = json.loads((tmp_path / "seg_on.json").read_text())
    assert side["ventricle_anatomy"]["applied"] and side["parameters"]["ventricle_anatomy"]
    side_off = json.loads((tmp_path / "seg_off.json").read_text())
    assert side_off["ventricle_anatomy"]["relabelled_background"] == {"lv_voxels": 0,
                                                                     "myo_voxels": 0,
                                                                     "rv_voxels": 0}
