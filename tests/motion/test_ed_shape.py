"""`estimate-motion-mesh fit --ed-shape`: a high-resolution ED label map (super-resolve's
hr_ed) adds unshifted planes to the ED fit; it is recorded in the sidecar, and a bad or
missing map stops the tool before any work (65 / 66, the file named, nothing written)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from medflow.cli import cli
from medflow.io import Volume, write_nifti
from medflow.motion.fit import FitOptions

HR_MM = 2.5   # coarser than super-resolve's 1.25 mm: the checks and planes are the same


@pytest.fixture(scope="module")
def hr_ed(heart_segs, tmp_path_factory):
    """The phantom's true ED labels on a 2.5 mm grid (the role of super-resolve's hr_ed)."""
    from medflow.phantom import cine_planes as cp

    heart, _ = heart_segs
    affine, shape = cp.gt_geometry(heart)
    scale = HR_MM / float(np.linalg.norm(affine[:3, 0]))
    affine = affine.copy()
    affine[:3, :3] *= scale
    shape = tuple(int(np.ceil(n / scale)) for n in shape)
    labels = heart.labels_at(cp.grid_points(affine, shape).reshape(-1, 3), 0.0)
    path = tmp_path_factory.mktemp("hr") / "hr_ed.nii.gz"
    write_nifti(Volume(np.asarray(labels, np.uint8).reshape(shape), affine, kind="label"),
                path)
    return path


@pytest.fixture
def fast_cli(monkeypatch, fast):
    from medflow.motion import fit

    monkeypatch.setattr(fit, "FitOptions", functools.partial(fit.FitOptions, **fast))


def _args(paths, out, ed_shape):
    return ["estimate-motion-mesh", "fit", "--sa", str(paths["sa"]), "--la-2ch",
            str(paths["la_2ch"]), "--la-4ch", str(paths["la_4ch"]), "--out", str(out),
            "--threads", "1", "--ed-shape", str(ed_shape)]


def _rewrite(src, dst, fn=None, shift_mm=0.0):
    import nibabel as nib

    img = nib.load(str(src))
    data = np.asarray(img.dataobj).copy()
    affine = img.affine.copy()
    affine[:3, 3] += shift_mm
    write_nifti(Volume(fn(data) if fn else data, affine, kind="label"), dst)
    return dst


def _expect(runner, paths, out, ed_shape, code, *words):
    result = runner.invoke(cli, _args(paths, out, ed_shape))
    assert result.exit_code == code, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("medflow: error"), line
    for w in (ed_shape.name, *words):
        assert w in line, line
    assert not out.exists() or not any(out.iterdir())


def test_shape_planes_are_unshifted_and_weigh_as_stated(heart_segs, hr_ed):
    from medflow.motion.edshape import ed_targets, read_ed_shape
    from medflow.motion.inputs import read_inputs
    from medflow.motion.targets import build_targets

    _, paths = heart_segs
    inputs = read_inputs(paths["sa"], paths["la_2ch"], paths["la_4ch"])
    targets, planes = build_targets(inputs.views)
    shape = read_ed_shape(hr_ed, inputs.views[0])
    both, added = ed_targets(targets, shape, spacing_mm=5.0, relative_weight=0.5)
    n = len(planes)
    assert added > 10 and both.n_planes == n + added and both.sdf.shape[0] == 1
    assert (both.shift_index[n:] == -1).all()
    assert torch.equal(both.shift_index[:n], targets.shift_index)
    assert float(both.weight[n:].sum()) == pytest.approx(0.5 * n, rel=1e-5)
    # the acquired planes' maps are unchanged by the padding to a common size
    h, w = targets.sdf.shape[-2:]
    assert torch.equal(both.sdf[0, :n, :, :h, :w], targets.sdf[0])
    assert torch.equal(both.size[:n], targets.size)


@pytest.mark.slow
def test_ed_shape_is_accepted_and_recorded(runner, fast_cli, heart_segs, hr_ed, tmp_path):
    _, paths = heart_segs
    out = tmp_path / "out"
    result = runner.invoke(cli, [*_args(paths, out, hr_ed), "--prefix", "sub"])
    assert result.exit_code == 0, result.output
    side = json.loads((out / "sub_motion.json").read_text())
    assert side["inputs"]["ed_shape"]["path"] == str(hr_ed)
    assert len(side["inputs"]["ed_shape"]["sha256"]) == 64
    assert side["parameters"]["ed_shape"] == str(hr_ed)
    assert side["parameters"]["options"]["ed_shape_weight"] == FitOptions().ed_shape_weight
    assert side["losses"]["ed_shape_planes"] > 10
    # motion tracking reads the acquired planes only: residuals for the three views
    assert set(side["phenotypes"]) >= {"fit_rms_sa_mm", "fit_rms_la_2ch_mm"}
    assert not any("ed_shape" in k for k in side["phenotypes"])


def test_no_lv_labels_is_65(runner, heart_segs, hr_ed, tmp_path):
    _, paths = heart_segs
    bad = _rewrite(hr_ed, tmp_path / "no_lv.nii.gz", lambda d: np.where(d == 3, 3, 0))
    _expect(runner, paths, tmp_path / "out", bad, 65, "LV blood pool", "no LV")


def test_map_off_the_stack_is_65(runner, heart_segs, hr_ed, tmp_path):
    _, paths = heart_segs
    bad = _rewrite(hr_ed, tmp_path / "far.nii.gz", shift_mm=400.0)
    _expect(runner, paths, tmp_path / "out", bad, 65, "does not overlap the short-axis stack")


def test_a_cine_stack_is_not_a_shape_65(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    _expect(runner, paths, tmp_path / "out", paths["sa"], 65, "3D label map")


def test_missing_map_is_66(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    _expect(runner, paths, tmp_path / "out", tmp_path / "absent.nii.gz", 66)


def test_ed_shape_needs_one_subject(runner, heart_segs, hr_ed, tmp_path):
    result = runner.invoke(cli, ["estimate-motion-mesh", "fit", "--samplesheet",
                                 str(tmp_path / "s.csv"), "--outdir", str(tmp_path / "o"),
                                 "--ed-shape", str(hr_ed)])
    assert result.exit_code == 2 and "--ed-shape" in result.output


def test_own_map_agrees_and_a_displaced_one_does_not(heart_segs, hr_ed, tmp_path):
    # lv_agreement is what tells this heart from another one in the same scanner frame: the
    # phantom's own ED map agrees with its stack; the same heart 30 mm away (still inside
    # the stack's field of view) does not.
    import nibabel as nib

    from medflow.motion.edshape import MIN_AGREEMENT, lv_agreement
    from medflow.motion.inputs import read_inputs

    _, paths = heart_segs
    sa = read_inputs(paths["sa"], paths["la_2ch"], paths["la_4ch"]).views[0]
    img = nib.load(str(hr_ed))
    data, affine = np.asarray(img.dataobj), img.affine
    own = lv_agreement(data, affine, sa)
    moved = affine.copy()
    moved[:3, 3] += sa.affine[:3, 0] / np.linalg.norm(sa.affine[:3, 0]) * 30.0
    assert own > 0.8 > MIN_AGREEMENT > lv_agreement(data, moved, sa)


def test_another_hearts_map_is_65(runner, heart_segs, hr_ed, tmp_path):
    import nibabel as nib

    _, paths = heart_segs
    sa_axis = nib.load(str(paths["sa"])).affine[:3, 0]
    bad = tmp_path / "other.nii.gz"
    img = nib.load(str(hr_ed))
    affine = img.affine.copy()
    affine[:3, 3] += sa_axis / np.linalg.norm(sa_axis) * 30.0
    write_nifti(Volume(np.asarray(img.dataobj), affine, kind="label"), bad)
    _expect(runner, paths, tmp_path / "out", bad, 65, "not this heart", "Dice")
