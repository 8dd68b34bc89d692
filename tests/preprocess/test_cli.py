"""`medflow preprocess` through CliRunner: outputs, sidecar, usage errors, reproducibility."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medflow.cli import cli
from medflow.io import Volume, read_image, write_nifti


def _run(runner, *args):
    return runner.invoke(cli, ["preprocess", *map(str, args)])


def test_help_has_example(runner):
    result = _run(runner, "--help")
    assert result.exit_code == 0 and "Example" in result.output and "--quiet" in result.output


def test_single_image_with_sidecar(runner, tmp_path, image_file):
    out = tmp_path / "out" / "pre.nii.gz"
    result = _run(runner, "--input", image_file, "--output", out, "--spacing", "1,keep,2",
                  "--normalise", "zscore", "--crop-to", "12,12,keep")
    assert result.exit_code == 0, result.output
    vol = read_image(out)
    assert vol.shape3 == (12, 12, 45)
    assert vol.data.dtype == np.float32
    sidecar = json.loads((tmp_path / "out" / "pre.json").read_text())
    assert sidecar["tool"] == "preprocess"
    assert [s["step"] for s in sidecar["steps"]] == ["reorient", "resample", "crop", "normalise"]
    assert sidecar["parameters"]["spacing"] == [1.0, None, 2.0]
    assert sidecar["input_geometry"]["shape"] == [10, 20, 30]
    assert sidecar["output_geometry"]["shape"] == [12, 12, 45]
    np.testing.assert_allclose(sidecar["output_geometry"]["affine"], vol.affine, atol=1e-4)
    assert sidecar["inputs"]["input"]["sha256"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pre.json", "pre.nii.gz"]


def test_same_command_twice_same_bytes(runner, tmp_path, image_file):
    outs = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    for out in outs:
        assert _run(runner, "--input", image_file, "--output", out, "--spacing", "1.1",
                    "--normalise", "percentile", "--percentiles", "2,98").exit_code == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_label_role_nearest_no_new_values(runner, tmp_path, label_file):
    out = tmp_path / "seg.nii.gz"
    result = _run(runner, "--input", label_file, "--output", out, "--role", "label",
                  "--spacing", "0.9,1.1,1.7", "--interpolation", "bspline")
    assert result.exit_code == 0, result.output
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(img.dataobj))) == {0, 1, 2}
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    assert sidecar["steps"][1]["parameters"]["interpolation"] == "nearest"


def test_reference_maps_back_to_native_space(runner, tmp_path, label_file, image_file):
    iso = tmp_path / "iso.nii.gz"
    back = tmp_path / "back.nii.gz"
    assert _run(runner, "--input", label_file, "--output", iso, "--role", "label",
                "--spacing", "1,1,1").exit_code == 0
    result = _run(runner, "--input", iso, "--output", back, "--role", "label",
                  "--reference", image_file)
    assert result.exit_code == 0, result.output
    native = read_image(label_file, "label")
    mapped = read_image(back, "label")
    np.testing.assert_allclose(mapped.affine, native.affine, atol=1e-4)
    agree = (mapped.data == native.data).mean()
    assert agree > 0.97
    sidecar = json.loads((tmp_path / "back.json").read_text())
    assert sidecar["steps"][0]["skipped"] and "reference" in sidecar["inputs"]


def test_crop_mask_with_margin(runner, tmp_path, image_file, label_file):
    out = tmp_path / "crop.nii.gz"
    result = _run(runner, "--input", image_file, "--output", out, "--crop-mask", label_file,
                  "--margin", "3", "--orientation", "LPS")
    assert result.exit_code == 0, result.output
    vol = read_image(out)
    assert sorted(vol.shape3) == sorted((10, 16, 22))


def test_4d_cine(runner, tmp_path, oblique):
    data = np.random.default_rng(0).random((12, 10, 3, 5)).astype(np.float32)
    src = write_nifti(Volume(data, oblique(spacing=(1.8, 1.8, 10))),
                      tmp_path / "cine.nii.gz")
    out = tmp_path / "cine_pre.nii.gz"
    result = _run(runner, "--input", src, "--output", out, "--spacing", "1.25,1.25,keep",
                  "--normalise", "zscore")
    assert result.exit_code == 0, result.output
    vol = read_image(out)
    assert vol.data.shape[2:] == (3, 5) and vol.spacing[0] == pytest.approx(1.25, abs=1e-5)
    assert abs(vol.data.mean()) < 1e-4 and abs(vol.data.std() - 1) < 1e-3


@pytest.mark.parametrize("args, message", [
    (["--spacing", "1,1,1", "--reference", "{img}"], "mutually exclusive"),
    (["--crop-to", "4,4,4", "--crop-mask", "{img}"], "mutually exclusive"),
    (["--margin", "3"], "--margin needs --crop-mask"),
    (["--percentiles", "1,99"], "--normalise percentile"),
    (["--role", "label", "--normalise", "zscore"], "never normalised"),
    (["--orientation", "RAR"], "axis"),
    (["--spacing", "1,0,1"], "positive"),
    (["--spacing", "1,2"], "three"),
    (["--crop-to", "4.5,4,4"], "whole numbers"),
    (["--percentiles", "99,1"], "LOW < HIGH"),
    (["--normalise", "minmax"], "minmax"),
])
def test_usage_errors_exit_2(runner, tmp_path, image_file, args, message):
    out = tmp_path / "o.nii.gz"
    args = [a.format(img=image_file) for a in args]
    result = _run(runner, "--input", image_file, "--output", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_output_never_overwrites_an_input(runner, tmp_path, image_file):
    before = image_file.read_bytes()
    result = _run(runner, "--input", image_file, "--output", image_file)
    assert result.exit_code == 2 and "overwrite" in result.output
    other = tmp_path / "x.nii.gz"
    write_nifti(read_image(image_file), other)
    result = _run(runner, "--input", other, "--output", image_file, "--spacing", "2")
    assert result.exit_code == 0  # image_file is not an input here
    result = _run(runner, "--input", other, "--output", tmp_path / "y.nii.gz",
                  "--reference", tmp_path / "y.nii.gz")
    assert result.exit_code == 2 and "overwrite" in result.output
    assert image_file.read_bytes() != before  # (the legal run above replaced it)


@pytest.mark.parametrize("args", [[], ["--input", "a.nii.gz"], ["--samplesheet", "s.csv"],
                                  ["--input", "a.nii.gz", "--output", "b.nii.gz",
                                   "--outdir", "x"]])
def test_mode_errors(runner, args):
    result = _run(runner, *args)
    assert result.exit_code == 2


def test_output_must_be_nifti(runner, tmp_path, image_file):
    result = _run(runner, "--input", image_file, "--output", tmp_path / "a.mha")
    assert result.exit_code == 2 and ".nii" in result.output


def test_disk_full_exits_73_and_leaves_nothing(runner, tmp_path, image_file, monkeypatch):
    import errno

    import nibabel as nib

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full)
    out = tmp_path / "out" / "o.nii.gz"
    result = _run(runner, "--input", image_file, "--output", out)
    assert result.exit_code == 73, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0]
    assert str(out.parent) in lines[0]
    assert not out.parent.exists()      # nothing, not even the folder the command made
