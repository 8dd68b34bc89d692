"""BraTS-style phantom: files, geometry, nested labels, contrasts, truth, simulated predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medflow.io import read_image
from medflow.phantom.cli import demo_cohort
from medflow.phantom.brats import (DEFAULT_SHAPE, brats_affine, brats_spacing, render_brats,
                                   sample_brats_parameters, write_brats_subject)

SHAPE = (48, 48, 32)
ROLES = ["t1", "t1ce", "t2", "flair", "seg", "mask", "truth"]
PRED_ROLES = ["pred", "unc_wt", "unc_tc", "unc_et", "prob"]


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brats")
    roles = write_brats_subject(folder, "sub-x", 11, SHAPE, with_predictions=True)
    return folder, roles


def test_spacing_rule():
    assert brats_spacing(DEFAULT_SHAPE) == 2.0
    assert brats_spacing((240, 240, 155)) == 1.0
    assert brats_spacing((128, 128, 80)) == 1.5
    a = brats_affine((240, 240, 155))
    assert np.allclose(np.diag(a)[:3], 1.0)
    assert np.allclose(a[:3, :3] @ ((np.array([240, 240, 155]) - 1) / 2) + a[:3, 3], 0)


def test_roles_files_and_geometry(subject):
    folder, roles = subject
    assert list(roles) == ROLES[:6] + PRED_ROLES + ["truth"]
    ref = read_image(folder / roles["seg"], "label")
    assert ref.spacing == pytest.approx((4.0, 4.0, 4.0)) and ref.shape3 == SHAPE
    for role in ROLES[:6] + PRED_ROLES:
        vol = read_image(folder / roles[role])
        assert vol.shape3 == SHAPE and np.allclose(vol.affine, ref.affine), role
    assert read_image(folder / "prob.nii.gz").data.shape == SHAPE + (3,)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / name).mkdir()
        write_brats_subject(tmp_path / name, "s", seed, SHAPE, with_predictions=True)
    for f in ("t1.nii.gz", "seg.nii.gz", "pred.nii.gz", "unc_wt.nii.gz", "prob.nii.gz",
              "truth.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a/t1.nii.gz").read_bytes() != (tmp_path / "c/t1.nii.gz").read_bytes()


def test_labels_are_nested_and_inside_the_brain():
    for seed in range(4):
        v = render_brats(sample_brats_parameters(np.random.default_rng(seed)), (64, 64, 40))
        seg, brain = v["seg"], v["mask"] > 0
        assert set(np.unique(seg)) == {0, 1, 2, 4}
        assert not np.any(seg[~brain])
        # the enhancing rim encloses the necrosis: its neighbours are tumour core
        ring = ndimage.binary_dilation(seg == 1) & (seg != 1)
        assert np.isin(seg[ring], [4]).mean() > 0.95
        # oedema surrounds the core: the core's neighbours are tumour (or the brain edge)
        tc = np.isin(seg, [1, 4])
        ring = ndimage.binary_dilation(tc) & ~tc & brain
        assert (seg[ring] == 2).mean() > 0.9


def test_sequence_contrasts_and_mask(subject):
    folder, _ = subject
    seg = read_image(folder / "seg.nii.gz", "label").data
    mask = read_image(folder / "mask.nii.gz", "label").data > 0
    img = {s: read_image(folder / f"{s}.nii.gz").data for s in ("t1", "t1ce", "t2", "flair")}
    for s, data in img.items():
        assert np.array_equal(data > 0, mask), s  # skull-stripped: brain = image > 0
    v = render_brats(sample_brats_parameters(np.random.default_rng(11)), SHAPE)
    classes = v["classes"]
    med = {s: {c: np.median(d[classes == c]) for c in np.unique(classes[mask])}
           for s, d in img.items()}
    csf, wm, ed, et = 1, 3, 5, 6
    assert med["t1ce"][et] > 1.3 * med["t1ce"][wm]
    assert med["t2"][ed] > 1.5 * med["t2"][wm] and med["flair"][ed] > 1.5 * med["flair"][wm]
    assert med["flair"][csf] < 0.5 * med["flair"][wm]


def test_truth_json_volumes(subject):
    folder, _ = subject
    truth = json.loads((folder / "truth.json").read_text())
    seg = read_image(folder / "seg.nii.gz", "label").data
    voxel_ml = 4.0**3 / 1000
    assert truth["volumes"]["wt_ml"] == pytest.approx(np.count_nonzero(seg) * voxel_ml)
    assert truth["volumes"]["tc_ml"] == pytest.approx(np.isin(seg, [1, 4]).sum() * voxel_ml)
    assert truth["volumes"]["et_ml"] == pytest.approx((seg == 4).sum() * voxel_ml)
    assert truth["spacing_mm"] == 4.0 and truth["seed"] == 11


def test_predictions_have_known_errors_and_informative_uncertainty(subject):
    folder, _ = subject
    seg = read_image(folder / "seg.nii.gz", "label").data
    pred = read_image(folder / "pred.nii.gz", "label").data
    prob = read_image(folder / "prob.nii.gz").data
    info = json.loads((folder / "truth.json").read_text())["predictions"]
    assert set(np.unique(pred)) <= {0, 1, 2, 4}
    for i, (key, labels) in enumerate((("wt", [1, 2, 4]), ("tc", [1, 4]), ("et", [4]))):
        t, p = np.isin(seg, labels), np.isin(pred, labels)
        wrong = t != p
        assert wrong.sum() == info["error_voxels"][key] > 0
        assert info["dice"][key] == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()),
                                                  abs=1e-6)
        unc = read_image(folder / f"unc_{key}.nii.gz").data
        assert unc.dtype == np.uint8 and unc.max() <= 100
        assert unc[wrong].min() >= 75 and np.median(unc[~wrong]) < 15
        assert np.array_equal(prob[..., i] > 0.5, p)  # probabilities agree with the prediction


def test_demo_cohort_never_writes_over_files_it_did_not_write(tmp_path):
    from click.testing import CliRunner

    args = ["--kind", "brats", "--subjects", "1", "--shape", "24,24,16", "--out", str(tmp_path)]
    (tmp_path / "samplesheet.csv").write_text("subject,t1\nP001,/data/P001/t1.nii.gz\n")
    res = CliRunner().invoke(demo_cohort, args)
    assert res.exit_code == 2 and "demo-cohort did not write" in res.output, res.output
    (tmp_path / "samplesheet.csv").unlink()
    (tmp_path / "sub-000").mkdir()
    (tmp_path / "sub-000" / "t1.nii.gz").write_bytes(b"a real scan")
    res = CliRunner().invoke(demo_cohort, args)
    assert res.exit_code == 2 and "sub-000" in res.output, res.output
    assert (tmp_path / "sub-000" / "t1.nii.gz").read_bytes() == b"a real scan"
    (tmp_path / "sub-000" / "t1.nii.gz").unlink()
    for _ in range(2):  # an empty folder, then an earlier demo cohort: both fine
        res = CliRunner().invoke(demo_cohort, args)
        assert res.exit_code == 0, res.output
