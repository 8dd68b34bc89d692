"""`medflow super-resolve` through Click: outputs, sidecars, same seed same bytes, training
commands, and every kind of bad input with its exit code."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medflow.cli import cli
from medflow.io import Volume, make_affine, read_image, write_nifti
from medflow.phantom.cardiac import write_cardiac_subject


@pytest.fixture(scope="session")
def subject(tmp_path_factory):
    """One demo-cohort subject with 2 frames (images, labels, long axis, gt, hr)."""
    folder = tmp_path_factory.mktemp("subject")
    write_cardiac_subject(folder, "sub-0", seed=5, frames=2)
    return folder


def run(runner, *args):
    return runner.invoke(cli, ["super-resolve", *[str(a) for a in args]])


def test_baseline_writes_each_frame_its_image_and_sidecar(runner, subject, tmp_path):
    out = tmp_path / "hr_{frame}.nii.gz"
    res = run(runner, "predict", "--method", "sdf", "--input", subject / "seg_sa.nii.gz",
              "--image", subject / "sa.nii.gz", "--output", out,
              "--output-image", tmp_path / "img_{frame}.nii.gz")
    assert res.exit_code == 0, res.output
    for frame in ("ed", "es"):
        hr = read_image(tmp_path / f"hr_{frame}.nii.gz", kind="label")
        assert np.allclose(hr.spacing, 1.25) and set(np.unique(hr.data)) == {0, 1, 2, 3}
        img = read_image(tmp_path / f"img_{frame}.nii.gz")
        assert img.data.shape == hr.data.shape and np.asarray(img.data).max() > 100
        meta = json.loads((tmp_path / f"hr_{frame}.json").read_text())
        assert meta["tool"] == "super-resolve" and meta["parameters"]["method"] == "sdf"
        assert meta["parameters"]["frame"] == frame
    assert json.loads((tmp_path / "hr_es.json").read_text())["parameters"]["frame_index"] == 1
    first = (tmp_path / "hr_ed.nii.gz").read_bytes()
    res = run(runner, "predict", "--method", "sdf", "--input", subject / "seg_sa.nii.gz",
              "--output", out, "--frames", "ed")
    assert res.exit_code == 0 and (tmp_path / "hr_ed.nii.gz").read_bytes() == first


def test_latent_with_long_axis_same_seed_same_bytes(runner, subject, tiny_prior, tmp_path):
    folder, _ = tiny_prior
    args = ["predict", "--model", folder, "--input", subject / "seg_sa.nii.gz",
            "--la-2ch", subject / "seg_la_2ch.nii.gz", "--la-4ch", subject / "seg_la_4ch.nii.gz",
            "--frames", "ed", "--iterations", "5", "--seed", "3"]
    outputs = []
    for name in ("a.nii.gz", "b.nii.gz"):
        res = run(runner, *args, "--output", tmp_path / name)
        assert res.exit_code == 0, res.output
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    meta = json.loads((tmp_path / "a.json").read_text())
    k = read_image(subject / "seg_sa.nii.gz", kind="label").shape3[2]
    assert len(meta["result"]["slice_shifts_mm"]) == k
    assert meta["result"]["long_axis_views"] == 2 and meta["parameters"]["method"] == "latent"
    assert meta["parameters"]["shape_from"] == "stack"
    assert any(meta["result"]["slice_refined_on_long_axis"])
    # the decoded shape instead, and the image with the same shifts undone
    res = run(runner, *args, "--shape-from", "prior", "--output", tmp_path / "p.nii.gz",
              "--image", subject / "sa.nii.gz", "--output-image", tmp_path / "pimg.nii.gz")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.nii.gz").read_bytes() != outputs[0]
    prior_meta = json.loads((tmp_path / "p.json").read_text())
    assert prior_meta["parameters"]["shape_from"] == "prior"
    assert prior_meta["result"]["slice_shifts_mm"] == meta["result"]["slice_shifts_mm"]
    image = read_image(tmp_path / "pimg.nii.gz")
    assert image.shape3 == read_image(tmp_path / "p.nii.gz").shape3
    assert np.asarray(image.data).max() > 100


def _sheet(path, rows, columns):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def test_train_prior_then_predict(runner, subject, tmp_path):
    sheet = _sheet(tmp_path / "sheet.csv", [{"subject": "sub-0", "gt_ed": subject / "gt_ed.nii.gz",
                                            "gt_es": subject / "gt_es.nii.gz"}],
                   ["subject", "gt_ed", "gt_es"])
    res = run(runner, "train-prior", "--samplesheet", sheet, "--out", tmp_path / "prior",
              "--epochs", "1", "--val-fraction", "0", "--latent", "4")
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "prior" / "model.json").read_text())
    assert card["tool"] == "super-resolve" and card["method"] == "latent"
    assert card["config"]["labels"] == [0, 1, 2, 3] and card["training"]["shapes"] == 2
    assert (tmp_path / "prior" / "model.safetensors").exists()
    res = run(runner, "predict", "--model", tmp_path / "prior", "--input",
              subject / "seg_sa.nii.gz", "--output", tmp_path / "hr.nii.gz", "--frames", "es",
              "--iterations", "2")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hr.nii.gz").exists()  # one frame: the name as given


def test_train_joint_then_predict_image_and_labels(runner, subject, tmp_path):
    cols = ["subject", "sa", "seg_sa", "hr_ed", "hr_es", "gt_ed", "gt_es"]
    sheet = _sheet(tmp_path / "sheet.csv",
                   [{"subject": "sub-0", **{c: subject / f"{c}.nii.gz" for c in cols[1:]}}], cols)
    res = run(runner, "train", "--method", "joint", "--samplesheet", sheet, "--out",
              tmp_path / "joint", "--steps", "2", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "joint" / "model.json").read_text())["method"] == "joint"
    # a small output grid keeps the test fast
    gt = read_image(subject / "gt_ed.nii.gz", kind="label")
    small = gt.affine.copy()
    small[:3, :3] *= 2.0
    ref = tmp_path / "grid.nii.gz"
    write_nifti(Volume(np.zeros((24, 24, 20), np.uint8), small), ref)
    res = run(runner, "predict", "--model", tmp_path / "joint", "--input",
              subject / "seg_sa.nii.gz", "--image", subject / "sa.nii.gz", "--grid-like", ref,
              "--output", tmp_path / "l_{frame}.nii.gz", "--output-image",
              tmp_path / "i_{frame}.nii.gz")
    assert res.exit_code == 0, res.output
    img = read_image(tmp_path / "i_es.nii.gz")
    assert img.data.shape == (24, 24, 20) and np.allclose(img.affine, small)
    res = run(runner, "predict", "--model", tmp_path / "joint", "--input",
              subject / "seg_sa.nii.gz", "--output", tmp_path / "x.nii.gz")
    assert res.exit_code == 2 and "give --image" in res.output     # usage, before any read
    assert not (tmp_path / "x.nii.gz").exists()
    # the method comes from the card: an option joint does not use is refused all the same,
    # and a model trained without --prior has no motion correction for long axes to refine
    for extra, words in ((["--shape-from", "prior"], "--method joint (the --model's)"),
                         (["--iterations", "5"], "without --prior")):
        res = run(runner, "predict", "--model", tmp_path / "joint", "--input",
                  subject / "seg_sa.nii.gz", "--image", subject / "sa.nii.gz", "--output",
                  tmp_path / "x.nii.gz", *extra)
        assert res.exit_code == 2 and words in res.output, res.output
        assert not (tmp_path / "x.nii.gz").exists()
    # batch mode: the image column defaults to the one the model was trained on
    res = run(runner, "predict", "--model", tmp_path / "joint", "--samplesheet", sheet,
              "--outdir", tmp_path / "batch", "--frames", "ed", "--grid-like", ref)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "batch" / "sub-0" / "sub-0_sa_hrimage_ed.nii.gz").exists()


def test_joint_trained_with_a_prior_motion_corrects_in_training_and_prediction(
        runner, subject, tiny_prior, tmp_path):
    folder, _ = tiny_prior
    cols = ["subject", "sa", "seg_sa", "seg_la_2ch", "seg_la_4ch", "hr_ed", "hr_es", "gt_ed",
            "gt_es"]
    sheet = _sheet(tmp_path / "sheet.csv",
                   [{"subject": "sub-0", **{c: subject / f"{c}.nii.gz" for c in cols[1:]}}], cols)
    res = run(runner, "train", "--samplesheet", sheet, "--out", tmp_path / "joint",
              "--la-roles", "seg_la_2ch")
    assert res.exit_code == 2 and "give --prior" in res.output
    res = run(runner, "train", "--samplesheet", sheet, "--out", tmp_path / "joint", "--steps",
              "2", "--val-fraction", "0", "--prior", folder, "--la-roles",
              "seg_la_2ch,seg_la_4ch")
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "joint" / "model.json").read_text())
    assert card["training"]["motion_correction"]["long_axis_roles"] == ["seg_la_2ch",
                                                                         "seg_la_4ch"]
    for name in ("model.json", "model.safetensors"):  # the model folder carries its prior
        assert (tmp_path / "joint" / "prior" / name).read_bytes() == (folder / name).read_bytes()
    gt = read_image(subject / "gt_ed.nii.gz", kind="label")
    small = gt.affine.copy()
    small[:3, :3] *= 2.0
    ref = tmp_path / "grid.nii.gz"
    write_nifti(Volume(np.zeros((24, 24, 20), np.uint8), small), ref)
    args = ["predict", "--model", tmp_path / "joint", "--input", subject / "seg_sa.nii.gz",
            "--image", subject / "sa.nii.gz", "--grid-like", ref, "--frames", "ed",
            "--iterations", "5"]
    res = run(runner, *args, "--la-4ch", subject / "seg_la_4ch.nii.gz", "--output",
              tmp_path / "l.nii.gz", "--output-image", tmp_path / "i.nii.gz")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "l.json").read_text())
    k = read_image(subject / "seg_sa.nii.gz", kind="label").shape3[2]
    assert meta["result"]["motion_corrected"] and len(meta["result"]["slice_shifts_mm"]) == k
    assert meta["result"]["long_axis_views"] == 1 and meta["parameters"]["iterations"] == 5
    # a one-frame long axis is the ED frame's: ES goes without it (it was reused for ES)
    one = tmp_path / "la_ed.nii.gz"
    la = read_image(subject / "seg_la_4ch.nii.gz", kind="label")
    write_nifti(Volume(np.asarray(la.data)[..., :1], la.affine, kind="label"), one)
    res = run(runner, *args[:-4], "--frames", "ed,es", "--iterations", "5", "--la-4ch", one,
              "--output", tmp_path / "f_{frame}.nii.gz")
    assert res.exit_code == 0, res.output
    views = {f: json.loads((tmp_path / f"f_{f}.json").read_text())["result"]["long_axis_views"]
             for f in ("ed", "es")}
    assert views == {"ed": 1, "es": 0}
    # another subject's long axis is refused as it is for latent
    other = tmp_path / "other"
    write_cardiac_subject(other, "sub-9", seed=11, frames=2)
    res = run(runner, *args, "--la-4ch", other / "seg_la_4ch.nii.gz", "--output",
              tmp_path / "o.nii.gz")
    assert res.exit_code == 65 and "agree" in res.output
    assert not (tmp_path / "o.nii.gz").exists()


def test_joint_without_a_prior_refuses_long_axis_labels(runner, subject, tmp_path):
    cols = ["subject", "sa", "seg_sa", "hr_ed", "hr_es", "gt_ed", "gt_es"]
    sheet = _sheet(tmp_path / "sheet.csv",
                   [{"subject": "sub-0", **{c: subject / f"{c}.nii.gz" for c in cols[1:]}}], cols)
    res = run(runner, "train", "--samplesheet", sheet, "--out", tmp_path / "joint", "--steps",
              "1", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    assert "validation: none (no subject held out" in res.output   # was "validation: {}"
    assert json.loads((tmp_path / "joint" / "model.json").read_text()
                      )["training"]["motion_correction"] is None
    res = run(runner, "predict", "--model", tmp_path / "joint", "--input",
              subject / "seg_sa.nii.gz", "--image", subject / "sa.nii.gz", "--la-4ch",
              subject / "seg_la_4ch.nii.gz", "--output", tmp_path / "x.nii.gz")
    assert res.exit_code == 2 and "without --prior" in res.output, res.output
    res = run(runner, "predict", "--model", tmp_path / "joint", "--samplesheet", sheet,
              "--outdir", tmp_path / "batch", "--la-roles", "seg_la_4ch")
    assert res.exit_code == 2 and "--la-roles: not used by" in res.output, res.output
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "batch").exists()


# ---------------------------------------------------------------- bad inputs
def _stack(tmp_path, data, name="seg.nii.gz", affine=None):
    path = tmp_path / name
    write_nifti(Volume(np.asarray(data, np.uint8), affine if affine is not None
                       else make_affine((1.8, 1.8, 10.0)), "label"), path)
    return path


def _ring_stack(k=4):
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    d = np.hypot(x - 20, y - 18)
    sl = np.zeros((40, 40), np.uint8)
    sl[(d >= 6) & (d < 10)] = 2
    sl[d < 6] = 1
    sl[(np.hypot(x - 31, y - 18) < 7) & (d >= 10)] = 3
    return np.repeat(sl[..., None], k, axis=2)


@pytest.mark.parametrize("case", ["one_slice", "no_cardiac_labels", "other_labels"])
def test_bad_stacks_are_refused_with_65(runner, tiny_prior, tmp_path, case):
    folder, _ = tiny_prior
    data = _ring_stack()
    if case == "one_slice":
        data = data[..., :1]
    elif case == "no_cardiac_labels":
        data = np.where(data == 3, 3, 0)
    else:
        data[0, 0, 0] = 5  # a seg4 label (right atrium) the prior never saw
        data[1, 0, :] = np.arange(10, 14)  # and more: the message names a few, then counts
    seg = _stack(tmp_path, data)
    res = run(runner, "predict", "--model", folder, "--input", seg, "--output",
              tmp_path / "o.nii.gz")
    assert res.exit_code == 65, res.output
    assert str(seg) in res.output
    assert {"one_slice": "slice", "no_cardiac_labels": "no cardiac labels",
            "other_labels": "not among the labels"}[case] in res.output
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "o_ed.nii.gz").exists()
    if case == "other_labels":
        assert "[5, 10, 11, 12, 13]" in res.output


def test_output_image_without_image_is_a_usage_error(runner, tmp_path):
    seg = _stack(tmp_path, _ring_stack())
    res = run(runner, "predict", "--method", "sdf", "--input", seg, "--output",
              tmp_path / "o.nii.gz", "--output-image", tmp_path / "i.nii.gz")
    assert res.exit_code == 2 and "--output-image needs --image" in res.output
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_long_axis_frame_without_labels_is_left_out(runner, subject, tiny_prior, tmp_path):
    """Labels in some frames but not this one: that view says nothing about this frame."""
    folder, _ = tiny_prior
    la = read_image(subject / "seg_la_4ch.nii.gz", kind="label")
    data = np.asarray(la.data).copy()
    data[..., 0] = 0  # the ED frame left unlabelled
    empty_ed = tmp_path / "la4_empty_ed.nii.gz"
    write_nifti(Volume(data, la.affine, kind="label"), empty_ed)
    res = run(runner, "predict", "--model", folder, "--input", subject / "seg_sa.nii.gz",
              "--la-2ch", subject / "seg_la_2ch.nii.gz", "--la-4ch", empty_ed,
              "--output", tmp_path / "o_{frame}.nii.gz", "--iterations", "5")
    assert res.exit_code == 0, res.output
    ed = json.loads((tmp_path / "o_ed.json").read_text())["result"]
    es = json.loads((tmp_path / "o_es.json").read_text())["result"]
    assert ed["long_axis_views"] == 1 and es["long_axis_views"] == 2
    # only slices with labels are refined (the others have nothing to be refined by)
    assert not any(r and not h for r, h in zip(ed["slice_refined_on_long_axis"],
                                                ed["slice_has_labels"]))


def test_another_subjects_long_axis_is_refused_with_65(runner, subject, tiny_prior, tmp_path):
    """Planes that cross the stack but show another heart would pull every shift tens of
    millimetres: their labels agree with the stack's on a fraction of the crossing pixels
    (own planes: 0.86 or more on the demo cohort)."""
    folder, _ = tiny_prior
    other = tmp_path / "other"
    write_cardiac_subject(other, "sub-1", seed=11, frames=2)
    res = run(runner, "predict", "--model", folder, "--input", subject / "seg_sa.nii.gz",
              "--la-2ch", other / "seg_la_2ch.nii.gz", "--la-4ch", other / "seg_la_4ch.nii.gz",
              "--frames", "ed", "--output", tmp_path / "o.nii.gz")
    assert res.exit_code == 65, res.output
    assert "agree with the short-axis labels" in res.output and len(res.output.splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("case", ["far_away", "parallel"])
def test_long_axis_that_does_not_cross_the_stack_is_refused(runner, tiny_prior, tmp_path, case):
    folder, _ = tiny_prior
    seg = _stack(tmp_path, _ring_stack())
    if case == "far_away":  # a proper long-axis plane (x-z), 500 mm away
        direction = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
        affine = make_affine((1.8, 1.8, 6.0), direction, (0.0, 500.0, 0.0))
    else:  # a plane parallel to the short-axis slices
        affine = make_affine((1.8, 1.8, 6.0), None, (0.0, 0.0, 5.0))
    la = _stack(tmp_path, _ring_stack(1), "la.nii.gz", affine)
    res = run(runner, "predict", "--model", folder, "--input", seg, "--la-4ch", la,
              "--output", tmp_path / "o.nii.gz")
    assert res.exit_code == 65, res.output
    assert str(la) in res.output and "does not cross" in res.output


def test_missing_model_66_and_other_tools_model_65(runner, tmp_path):
    seg = _stack(tmp_path, _ring_stack())
    res = run(runner, "predict", "--model", tmp_path / "nope", "--input", seg, "--output",
              tmp_path / "o.nii.gz")
    assert res.exit_code == 66 and "model folder not found" in res.output
    other = tmp_path / "segmodel"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format": "medflow-segment-cascaded"}))
    (other / "model.safetensors").write_bytes(b"")
    res = run(runner, "predict", "--model", other, "--input", seg, "--output",
              tmp_path / "o.nii.gz")
    assert res.exit_code == 65 and "not a super-resolve model" in res.output
    res = run(runner, "predict", "--method", "sdf", "--input", tmp_path / "missing.nii.gz",
              "--output", tmp_path / "o.nii.gz")
    assert res.exit_code == 66


@pytest.mark.parametrize("frames", ["bogus", "ed,edd", ","])
def test_frames_other_than_ed_es_all_is_a_usage_error(runner, tmp_path, frames):
    # a 3D stack has one frame: without the check at the door a typo passed unnoticed
    seg = _stack(tmp_path, _ring_stack())
    res = run(runner, "predict", "--method", "sdf", "--input", seg, "--frames", frames,
              "--output", tmp_path / "o" / "hr.nii.gz")
    assert res.exit_code == 2 and "--frames" in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_joint_needs_the_image_and_models_their_method(runner, tiny_prior, tmp_path):
    folder, _ = tiny_prior
    seg = _stack(tmp_path, _ring_stack())
    res = run(runner, "predict", "--method", "joint", "--model", folder, "--input", seg,
              "--output", tmp_path / "o.nii.gz")
    assert res.exit_code == 65 and "not a 'joint' one" in res.output
    res = run(runner, "predict", "--method", "latent", "--input", seg, "--output",
              tmp_path / "o.nii.gz")
    assert res.exit_code == 2 and "--model" in res.output


def test_corrupt_prior_weights_65_and_nothing_written(runner, tiny_prior, tmp_path):
    import shutil

    folder, _ = tiny_prior
    broken = tmp_path / "prior"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    seg = _stack(tmp_path, _ring_stack())
    res = run(runner, "predict", "--model", broken, "--input", seg, "--output",
              tmp_path / "o_{frame}.nii.gz")
    assert res.exit_code == 65 and "corrupt weights" in res.output, res.output
    assert not list(tmp_path.glob("o_*"))


@pytest.mark.parametrize("what", ["labels", "image"])
def test_output_over_an_input_is_refused_before_any_write(runner, tmp_path, what):
    seg = _stack(tmp_path, _ring_stack())
    image = tmp_path / "img.nii.gz"
    write_nifti(Volume(_ring_stack().astype(np.float32) * 100, make_affine((1.8, 1.8, 10.0))),
                image)
    before = {p: p.read_bytes() for p in (seg, image)}
    output, output_image = (seg, tmp_path / "i.nii.gz") if what == "labels" else \
        (tmp_path / "o.nii.gz", image)
    res = run(runner, "predict", "--method", "sdf", "--input", seg, "--image", image,
              "--frames", "ed", "--output", output, "--output-image", output_image)
    assert res.exit_code == 2, res.output
    assert all(p.read_bytes() == b for p, b in before.items())
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "i.nii.gz").exists()


@pytest.mark.parametrize("extra", [
    ["--method", "sdf", "--la-4ch", "{la}"],
    ["--method", "linear", "--iterations", "5"],
    ["--method", "nearest", "--shape-from", "prior"],
    ["--method", "sdf", "--model", "{tmp}"],
    ["--method", "joint", "--model", "{tmp}", "--shape-from", "stack"],
])
def test_options_the_method_does_not_use_are_usage_errors(runner, subject, tmp_path, extra):
    fill = {"la": subject / "seg_la_4ch.nii.gz", "tmp": tmp_path}
    res = run(runner, "predict", "--input", subject / "seg_sa.nii.gz", "--output",
              tmp_path / "x.nii.gz", *[str(e).format(**fill) for e in extra])
    assert res.exit_code == 2 and "not used by --method" in res.output, res.output
    assert not (tmp_path / "x.nii.gz").exists()


def test_batch_with_two_jobs_and_a_model_loaded_finishes(subject, tiny_prior, tmp_path):
    """Workers are spawned: forked after PyTorch's threads started, they hung for ever."""
    import subprocess
    import sys

    folder, _ = tiny_prior
    sheet = _sheet(tmp_path / "sheet.csv",
                   [{"subject": s, "seg_sa": subject / "seg_sa.nii.gz"} for s in ("a", "b")],
                   ["subject", "seg_sa"])
    res = subprocess.run([sys.executable, "-m", "medflow", "super-resolve", "predict",
                          "--model", str(folder), "--samplesheet", str(sheet), "--outdir",
                          str(tmp_path / "out"), "--frames", "ed", "--iterations", "2",
                          "--jobs", "2"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr
    for s in ("a", "b"):
        assert (tmp_path / "out" / s / f"{s}_sa_hr_ed.nii.gz").exists()
