"""The synthetic cardiac cine cohort: analytic truth, mapping, geometry, appearance, bytes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medflow.phantom import cine_planes as cp
from medflow.phantom.cardiac import CONTRASTS, ROLES, write_cardiac_subject
from medflow.phantom.cli import demo_cohort
from medflow.phantom.heart import HeartModel, contraction

FRAMES = 4
SEED = 11


def _write(folder, seed=SEED, frames=FRAMES, contrast="ssfp"):
    folder.mkdir(parents=True, exist_ok=True)
    roles = write_cardiac_subject(folder, "sub-x", seed, frames=frames, contrast=contrast)
    return folder, roles


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("cardiac") / "ssfp")


def _load(folder, role):
    img = nib.load(str(folder / ROLES[role]))
    return np.asarray(img.dataobj), img.affine


def _truth(folder):
    return json.loads((folder / "truth.json").read_text())


def _heart_grid(model, t, h=1.0):
    """Heart-frame grid whose z samples put the (moving) base plane midway between them."""
    lo, hi = model.extent_heart()
    lo, hi = lo - 6.0, hi + 3.0
    base_z = model.apex_z * (1.0 - model.state(t)[1])
    axes = (np.arange(lo[0] + 0.37, hi[0], h), np.arange(lo[1] + 0.29, hi[1], h),
            np.arange(base_z - h / 2, lo[2], -h))
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def test_files_roles_shapes(subject):
    folder, roles = subject
    assert set(roles) == {"sa", "la_2ch", "la_4ch", "seg_sa", "seg_la_2ch", "seg_la_4ch",
                          "gt_ed", "gt_es", "hr_ed", "hr_es", "truth"}
    assert all((folder / name).is_file() for name in roles.values())
    sa = nib.load(str(folder / "sa.nii.gz"))
    assert sa.shape[:2] == cp.SA_SHAPE_XY and 10 <= sa.shape[2] <= 12 and sa.shape[3] == FRAMES
    assert np.allclose(sa.header.get_zooms()[:3], (1.8, 1.8, 10.0))
    for view in ("2ch", "4ch"):
        la = nib.load(str(folder / f"la_{view}.nii.gz"))
        assert la.shape[2:] == (1, FRAMES)
        assert np.allclose(la.header.get_zooms()[:3], (1.8, 1.8, 6.0))
        seg, affine = _load(folder, f"seg_la_{view}")
        assert seg.shape == la.shape and np.allclose(affine, la.affine)
    seg, affine = _load(folder, "seg_sa")
    assert seg.shape == sa.shape and seg.dtype == np.uint8 and np.allclose(affine, sa.affine)
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    gt, affine = _load(folder, "gt_ed")
    assert gt.ndim == 3 and np.allclose(np.linalg.norm(affine[:3, :3], axis=0), 1.25)
    truth = _truth(folder)
    for key in ("lvedv_ml", "lvesv_ml", "lvef_pct", "lv_mass_g", "rvedv_ml", "rvesv_ml",
                "rvef_pct", "ed_frame", "es_frame", "slice_shifts_mm", "model"):
        assert key in truth
    assert len(truth["slice_shifts_mm"]) == sa.shape[2]


def test_gt_voxel_volumes_match_truth(subject):
    folder, _ = subject
    truth = _truth(folder)
    for role, lv, rv in (("gt_ed", "lvedv_ml", "rvedv_ml"), ("gt_es", "lvesv_ml", "rvesv_ml")):
        gt, affine = _load(folder, role)
        ml = np.bincount(gt.ravel(), minlength=4) * abs(np.linalg.det(affine[:3, :3])) / 1e3
        assert ml[1] == pytest.approx(truth[lv], rel=0.03)
        assert ml[2] == pytest.approx(truth["lv_myo_ml"], rel=0.03)
        assert ml[3] == pytest.approx(truth[rv], rel=0.03)
        # Nothing touches the border: the grid holds the whole heart at ED and ES.
        for axis in range(3):
            assert not np.take(gt, [0, -1], axis=axis).any()
    assert truth["lv_mass_g"] == pytest.approx(1.05 * truth["lv_myo_ml"])
    # The SA slabs tile the ED ventricles from the base: slice summation is nearly unbiased.
    seg, affine = _load(folder, "seg_sa")
    ml = np.bincount(seg[..., 0].ravel(), minlength=4) * abs(np.linalg.det(affine[:3, :3])) / 1e3
    assert ml[1] == pytest.approx(truth["lvedv_ml"], rel=0.03)
    assert ml[3] == pytest.approx(truth["rvedv_ml"], rel=0.03)


def test_analytic_volumes_match_numerical_integration():
    model = HeartModel.from_seed(5)
    h = 1.2
    for t in (model.params.es_fraction, 0.6):
        grid = _heart_grid(model, t, h)
        counts = np.bincount(model.labels_at(model.to_world(grid), t), minlength=4) * h**3 / 1e3
        vols = model.volumes(t)
        assert counts[1] == pytest.approx(vols["lv_ml"], rel=0.005)
        assert counts[2] == pytest.approx(vols["lv_myo_ml"], rel=0.005)
        assert counts[3] == pytest.approx(vols["rv_ml"], rel=0.005)


def test_forward_inverse_roundtrip():
    model = HeartModel.from_seed(3)
    rng = np.random.default_rng(0)
    pts = model.to_world(rng.uniform(-90, 60, size=(20000, 3)))
    for t in (0.1, model.params.es_fraction, 0.7):
        back = model.forward(model.inverse(pts, t), t)
        assert np.abs(back - pts).max() < 1e-8
        moved = model.forward(pts, t)
        ok = np.isfinite(moved).all(axis=1)
        assert ok.mean() > 0.95
        assert np.abs(model.inverse(moved[ok], t) - pts[ok]).max() < 1e-8
    assert np.allclose(model.forward(pts, 0.0), pts) and np.allclose(model.inverse(pts, 0.0), pts)


def test_labels_come_from_ed_labels_through_mapping():
    model = HeartModel.from_seed(4)
    rng = np.random.default_rng(1)
    pts = model.to_world(rng.uniform(-100, 80, size=(50000, 3)))
    ed = model.labels_at(pts, 0.0)
    for t in (0.2, model.params.es_fraction, 0.8):
        assert np.array_equal(model.labels_at(pts, t), model.labels_at(model.inverse(pts, t), 0.0))
        # Material points of the myocardium and RV keep their label wherever they move.
        for label in (2, 3):
            tracked = model.forward(pts[ed == label], t)
            assert np.isfinite(tracked).all()
            assert (model.labels_at(tracked, t) == label).all()


def test_written_labels_follow_the_model(subject):
    folder, _ = subject
    truth = _truth(folder)
    model = HeartModel.from_seed(SEED, FRAMES)
    seg, affine = _load(folder, "seg_sa")
    shifts = np.asarray(truth["slice_shifts_mm"])
    assert 0 < np.abs(shifts).max() <= cp.MAX_SHIFT_MM
    pts = cp.grid_points(affine, seg.shape[:3], shifts).reshape(-1, 3)
    es = truth["es_frame"]
    assert np.array_equal(seg[..., es].ravel(), model.labels_at(pts, es / FRAMES))
    unshifted = cp.grid_points(affine, seg.shape[:3]).reshape(-1, 3)
    assert not np.array_equal(seg[..., es].ravel(), model.labels_at(unshifted, es / FRAMES))


def test_ejection_fractions_and_time_course_over_seeds():
    anatomies = set()
    for seed in range(25):
        model = HeartModel.from_seed(seed, frames=20)
        ed, es = model.volumes(0.0), model.volumes(model.params.es_fraction)
        lvef = 100 * (1 - es["lv_ml"] / ed["lv_ml"])
        assert 35.0 <= lvef <= 75.0 and 35.0 <= 100 * model.params.rvef <= 75.0
        assert 60 < ed["lv_ml"] < 250 and 60 < ed["rv_ml"] < 300 and 50 < ed["lv_myo_ml"] < 200
        assert es["lv_myo_ml"] == pytest.approx(ed["lv_myo_ml"])
        frame = model.params.es_fraction * 20
        assert frame == round(frame) and 0.3 <= model.params.es_fraction <= 0.4
        anatomies.add(round(model.params.a, 6))
    assert len(anatomies) == 25
    f = contraction(np.linspace(0, 1, 201), 0.35)
    assert f.min() >= 0 and f.max() == pytest.approx(1.0) and f[0] == 0
    assert contraction(0.35, 0.35) == 1.0


def test_same_seed_same_bytes_different_seed_differs(subject, tmp_path):
    folder, roles = subject
    again, _ = _write(tmp_path / "again")
    for name in roles.values():
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name
    a, b = HeartModel.from_seed(1), HeartModel.from_seed(2)
    assert a.params.a != b.params.a and not np.allclose(a.rot, b.rot)


def test_affine_oblique_and_long_axis_consistent_with_short_axis(subject):
    folder, _ = subject
    truth = _truth(folder)
    seg_sa, sa_affine = _load(folder, "seg_sa")
    direction = sa_affine[:3, :3] / np.linalg.norm(sa_affine[:3, :3], axis=0)
    assert np.abs(direction).max() < 0.99       # no voxel axis along a scanner axis
    # Undo the breath-hold shifts: SA labels at the true positions of each slice.
    shifts = np.asarray(truth["slice_shifts_world_mm"])
    inv = np.linalg.inv(sa_affine)
    for view in ("2ch", "4ch"):
        seg_la, la_affine = _load(folder, f"seg_la_{view}")
        ij = np.argwhere(seg_la[:, :, 0, 0] > 0)
        world = np.c_[ij, np.zeros(len(ij))] @ la_affine[:3, :3].T + la_affine[:3, 3]
        ijk = world @ inv[:3, :3].T + inv[:3, 3]
        k = np.rint(ijk[:, 2]).astype(int)
        near = (np.abs(ijk[:, 2] - k) < 0.1) & (k >= 0) & (k < seg_sa.shape[2])
        assert near.sum() > 30
        ijk, k, labels = ijk[near], k[near], seg_la[ij[near, 0], ij[near, 1], 0, 0]
        shifted = world[near] + shifts[k]
        vox = np.rint(shifted @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        agree = seg_sa[vox[:, 0], vox[:, 1], vox[:, 2], 0] == labels
        assert agree.mean() > 0.9, (view, agree.mean())
    # The 2-chamber plane holds the LV only, the 4-chamber plane both ventricles.
    assert not (_load(folder, "seg_la_2ch")[0] == 3).any()
    assert (_load(folder, "seg_la_4ch")[0] == 3).any()


def test_contrast_changes_intensities_not_labels(subject, tmp_path):
    folder, _ = subject
    gre, _ = _write(tmp_path / "gre", contrast="gre")
    assert (folder / "seg_sa.nii.gz").read_bytes() == (gre / "seg_sa.nii.gz").read_bytes()
    seg = _load(folder, "seg_sa")[0]

    def blood_to_myo(f):
        img = _load(f, "sa")[0].astype(float)
        return np.median(img[seg == 1]) / np.median(img[seg == 2])

    assert blood_to_myo(folder) > 2.5 and blood_to_myo(gre) < 1.8


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="ssfp, gre"):
        write_cardiac_subject(tmp_path, "s", 0, frames=3, contrast="t1map")
    with pytest.raises(ValueError, match="frames"):
        write_cardiac_subject(tmp_path, "s", 0, frames=1)
    assert CONTRASTS == ("ssfp", "gre")
    assert not list(tmp_path.iterdir())


def test_demo_cohort_cardiac_cli(runner, tmp_path):
    result = runner.invoke(demo_cohort, ["--kind", "cardiac", "--subjects", "1", "--frames", "2",
                                         "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "c" / "samplesheet.csv").read_text().splitlines()[0].split(",")
    assert header == ["subject", *ROLES]
    truth = json.loads((tmp_path / "c" / "sub-000" / "truth.json").read_text())
    assert truth["es_frame"] == 1 and truth["frames"] == 2


def test_hr_images_share_the_gt_grid_and_the_cine_appearance(subject):
    folder, _ = subject
    truth = _truth(folder)
    sa, _ = _load(folder, "sa")
    seg, _ = _load(folder, "seg_sa")
    for role, gt_role, frame in (("hr_ed", "gt_ed", 0), ("hr_es", "gt_es", truth["es_frame"])):
        hr, affine = _load(folder, role)
        gt, gt_affine = _load(folder, gt_role)
        assert hr.shape == gt.shape and hr.dtype == np.int16 and np.allclose(affine, gt_affine)
        # the same tissue looks the same: blood bright, myocardium dark (SSFP), as in the cine
        for label in (1, 2):
            hr_mean = hr[gt == label].mean()
            sa_mean = sa[..., frame][seg[..., frame] == label].mean()
            assert abs(hr_mean - sa_mean) < 0.2 * sa_mean, (role, label)
        assert hr[gt == 1].mean() > 2.5 * hr[gt == 2].mean()
