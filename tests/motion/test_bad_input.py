"""Each kind of bad input: one line naming the file and the problem, the documented exit
code, and no output folder content."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medflow.cli import cli
from medflow.io import Volume, read_image, write_nifti


def _args(paths, out):
    args = ["estimate-motion-mesh", "fit", "--sa", str(paths["sa"]), "--out", str(out)]
    for view in ("la_2ch", "la_4ch"):
        if view in paths:
            args += [f"--{view.replace('_', '-')}", str(paths[view])]
    return args


def _rewrite(src, dst, fn=None, affine=None):
    vol = read_image(src, kind="label")
    data = np.asarray(vol.data).copy()
    data = fn(data) if fn else data
    write_nifti(Volume(data, vol.affine if affine is None else affine, kind="label"), dst)
    return dst


def _expect(runner, paths, out, code, *words):
    result = runner.invoke(cli, _args(paths, out))
    assert result.exit_code == code, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("medflow: error"), line
    for w in words:
        assert w in line, line
    assert not out.exists() or not any(out.iterdir())


def test_missing_view_is_66(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    bad = dict(paths, la_2ch=tmp_path / "absent.nii.gz")
    _expect(runner, bad, tmp_path / "out", 66, "absent.nii.gz")


def test_no_lv_on_the_mid_slices_is_65_naming_the_qc_reason(runner, heart_segs, tmp_path):
    _, paths = heart_segs

    def drop_mid(d):
        mid = d[:, :, 2:8]
        mid[np.isin(mid, (1, 2))] = 0
        return d

    bad = dict(paths, sa=_rewrite(paths["sa"], tmp_path / "sa.nii.gz", drop_mid))
    _expect(runner, bad, tmp_path / "out", 65, "sa.nii.gz", "quality control",
            "slices hold LV blood pool and myocardium")


def test_long_axis_plane_off_the_stack_is_65(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    affine = read_image(paths["la_4ch"], kind="label").affine.copy()
    affine[:3, 3] += 400.0
    bad = dict(paths, la_4ch=_rewrite(paths["la_4ch"], tmp_path / "la4.nii.gz",
                                      affine=affine))
    _expect(runner, bad, tmp_path / "out", 65, "la4.nii.gz", "does not cross the short-axis stack")


def test_long_axis_plane_parallel_to_the_stack_is_65(runner, heart_segs, tmp_path):
    # a short-axis slice put in the 4-chamber column: inside the stack, but no long axis
    _, paths = heart_segs
    sa = read_image(paths["sa"], kind="label")
    mid = np.asarray(sa.data)[:, :, 4:5].copy()
    affine = sa.affine.copy()
    affine[:3, 3] += 4 * sa.affine[:3, 2]
    bad = tmp_path / "la4_sa_slice.nii.gz"
    write_nifti(Volume(mid, affine, kind="label"), bad)
    _expect(runner, dict(paths, la_4ch=bad), tmp_path / "out", 65, "la4_sa_slice.nii.gz",
            "parallel to the short-axis slices")


def test_different_frame_counts_is_65(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    bad = dict(paths, la_2ch=_rewrite(paths["la_2ch"], tmp_path / "la2.nii.gz",
                                      lambda d: d[..., :2]))
    _expect(runner, bad, tmp_path / "out", 65, "la2.nii.gz", "different frame counts",
            "la_2ch 2")  # the file that differs from the short axis is named


def test_different_cycle_lengths_is_65(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    for view, dt in (("sa", 40.0), ("la_2ch", 60.0)):
        img = nib.load(str(paths[view]))
        img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
        img.header.set_xyzt_units("mm", "msec")
        img.header["pixdim"][4] = dt
        nib.save(img, str(tmp_path / f"{view}.nii.gz"))
    bad = dict(paths, sa=tmp_path / "sa.nii.gz", la_2ch=tmp_path / "la_2ch.nii.gz")
    _expect(runner, bad, tmp_path / "out", 65, "different cycle lengths", "120 ms", "180 ms")


def test_unknown_labels_and_not_a_cine_are_65(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    bad = dict(paths, sa=_rewrite(paths["sa"], tmp_path / "sa7.nii.gz",
                                  lambda d: np.where(d == 3, 7, d).astype(d.dtype)))
    _expect(runner, bad, tmp_path / "out", 65, "sa7.nii.gz", "unknown label value(s) [7]")
    # an intensity image given as a segmentation: a short line, not every value it holds
    image = tmp_path / "image.nii.gz"
    write_nifti(Volume(np.arange(8 * 8 * 3 * 2, dtype=np.int16).reshape(8, 8, 3, 2),
                       np.eye(4), kind="label"), image)
    result = runner.invoke(cli, _args(dict(sa=image), tmp_path / "out3"))
    assert result.exit_code == 65 and len(result.output) < 300, result.output
    assert "378 unknown label value(s) [6, 7, 8, 9, 10, ...]" in result.output  # 0-5 known
    bad = dict(paths, sa=_rewrite(paths["sa"], tmp_path / "sa3d.nii.gz", lambda d: d[..., 0]))
    _expect(runner, bad, tmp_path / "out2", 65, "sa3d.nii.gz", "cine segmentation")


def test_output_over_an_input_is_refused(runner, heart_segs, tmp_path):
    _, paths = heart_segs
    out = tmp_path / "out"
    out.mkdir()
    sa = out / "phenotypes.parquet"          # an input where an output will go
    sa.write_bytes(paths["sa"].read_bytes())
    result = runner.invoke(cli, _args(dict(paths, sa=sa), out))
    assert result.exit_code == 2, result.output
    assert sa.read_bytes() == paths["sa"].read_bytes()


@pytest.mark.parametrize("args, words", [
    (["--out", "x"], "--sa and --out"),
    (["--samplesheet", "s.csv"], "--samplesheet and --outdir"),
    ([], "either"),
])
def test_usage_errors_are_2(runner, args, words):
    result = runner.invoke(cli, ["estimate-motion-mesh", "fit", *args])
    assert result.exit_code == 2 and words in result.output


@pytest.mark.parametrize("prefix", ["../escape", "a/b", "..", "/abs"])
def test_prefix_that_is_not_one_name_is_2(runner, heart_segs, tmp_path, prefix):
    """--prefix becomes part of file names: a path in it would write outside --out."""
    _, paths = heart_segs
    out = tmp_path / "deep" / "out"
    result = runner.invoke(cli, [*_args(paths, out), "--prefix", prefix])
    assert result.exit_code == 2, result.output
    assert "--prefix" in result.output
    assert not (tmp_path / "deep").exists()
