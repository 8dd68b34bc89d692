"""Batch mode: a samplesheet in, one folder per subject and a Parquet table out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io import Volume, read_image, write_nifti


def _cohort(root, oblique, n=3, broken=()):
    rng = np.random.default_rng(0)
    lines = ["subject,t1,seg,truth"]
    for i in range(n):
        sub = f"sub-{i:02d}"
        folder = root / "data" / sub
        folder.mkdir(parents=True)
        aff = oblique(spacing=(1.2, 1.1, 2.0), origin=(i, -i, 2.0 * i))
        img = rng.normal(100, 10, (12, 14, 8)).astype(np.float32)
        if sub in broken:
            img[0, 0, 0] = np.nan
        seg = np.zeros((12, 14, 8), np.uint8)
        seg[3:9, 4:10, 2:6] = 1 + i % 2
        write_nifti(Volume(img, aff), folder / "t1.nii.gz")
        write_nifti(Volume(seg, aff, kind="label"), folder / "seg.nii.gz")
        (folder / "truth.json").write_text(json.dumps({"volume": 1}))
        lines.append(f"{sub},data/{sub}/t1.nii.gz,data/{sub}/seg.nii.gz,data/{sub}/truth.json")
    sheet = root / "samplesheet.csv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


ARGS = ["--spacing", "1,1,keep", "--normalise", "zscore"]


def _batch(runner, sheet, outdir, *extra):
    return runner.invoke(cli, ["preprocess", "--samplesheet", str(sheet), "--outdir",
                               str(outdir), *ARGS, *extra])


def test_batch_writes_every_subject_and_role(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique)
    out = tmp_path / "results"
    result = _batch(runner, sheet, out)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "preprocess.parquet")
    assert len(table) == 6 and set(table["role"]) == {"t1", "seg"}
    assert list(table.columns[:4]) == ["subject", "role", "kind", "output"]
    assert {"shape", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm", "seconds"} <= set(table)
    for row in table.itertuples():
        path = out / row.output
        assert path.name == f"{row.subject}_{row.role}_preproc.nii.gz"
        assert (path.parent / path.name.replace(".nii.gz", ".json")).exists()
        vol = read_image(path, row.kind)
        assert list(vol.data.shape) == list(row.shape)
        assert row.spacing_x_mm == pytest.approx(1.0, abs=1e-5)
    seg = read_image(out / "sub-01" / "sub-01_seg_preproc.nii.gz", "label")
    assert set(np.unique(seg.data)) == {0, 2}  # labels resampled by nearest, not normalised
    t1 = read_image(out / "sub-01" / "sub-01_t1_preproc.nii.gz")
    assert abs(t1.data.mean()) < 1e-4
    assert not list(out.rglob("*truth*"))  # non-image roles are skipped


def test_results_do_not_depend_on_jobs(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique)
    assert _batch(runner, sheet, tmp_path / "j1", "--jobs", "1").exit_code == 0
    assert _batch(runner, sheet, tmp_path / "j2", "--jobs", "2").exit_code == 0
    names = sorted(p.relative_to(tmp_path / "j1") for p in (tmp_path / "j1").rglob("*.nii.gz"))
    assert names == sorted(p.relative_to(tmp_path / "j2")
                           for p in (tmp_path / "j2").rglob("*.nii.gz"))
    for name in names:
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes()
    t1 = pd.read_parquet(tmp_path / "j1" / "preprocess.parquet").drop(columns="seconds")
    t2 = pd.read_parquet(tmp_path / "j2" / "preprocess.parquet").drop(columns="seconds")
    pd.testing.assert_frame_equal(t1, t2)


def test_a_failing_subject_is_reported_and_the_others_go_on(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique, broken=("sub-01",))
    out = tmp_path / "results"
    result = _batch(runner, sheet, out)
    assert result.exit_code == 65
    errors = [line for line in result.output.splitlines() if line.startswith("medflow: error")]
    assert len(errors) == 2  # one line for the subject, one summary naming the samplesheet
    assert "sub-01" in errors[0] and "t1.nii.gz" in errors[0] and "NaN" in errors[0]
    assert str(sheet) in errors[1]
    assert not (out / "sub-01").exists() or not list((out / "sub-01").iterdir())
    table = pd.read_parquet(out / "preprocess.parquet")
    assert sorted(set(table["subject"])) == ["sub-00", "sub-02"]


def test_label_on_another_grid_than_its_image_fails_that_subject(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique)
    seg = tmp_path / "data" / "sub-02" / "seg.nii.gz"
    moved = read_image(seg, "label")
    write_nifti(moved.with_data(moved.data, oblique(spacing=(1.2, 1.1, 2.0), origin=(9, 9, 9))),
                seg)
    out = tmp_path / "results"
    result = _batch(runner, sheet, out)
    assert result.exit_code == 65
    error = next(line for line in result.output.splitlines() if "sub-02" in line)
    assert "seg.nii.gz" in error and "does not match its image" in error and "t1.nii.gz" in error
    assert not (out / "sub-02").exists() or not list((out / "sub-02").iterdir())
    assert sorted(set(pd.read_parquet(out / "preprocess.parquet")["subject"])) == [
        "sub-00", "sub-01"]


def test_sheet_problems_all_reported_nothing_written(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique)
    lines = sheet.read_text().splitlines()
    lines.append(lines[1])  # duplicate subject
    lines.append("bad id!,data/sub-00/t1.nii.gz,data/sub-00/seg.nii.gz,")
    lines.append("sub-09,data/nope.nii.gz,data/sub-00/seg.nii.gz,")
    sheet.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results"
    result = _batch(runner, sheet, out)
    assert result.exit_code == 65
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and str(sheet) in line
    assert "duplicate subject" in line and "bad subject ID" in line and "nope.nii.gz" in line
    assert not out.exists()


def test_sheet_missing_files_only_66(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique)
    (tmp_path / "data" / "sub-02" / "t1.nii.gz").unlink()
    result = _batch(runner, sheet, tmp_path / "results")
    assert result.exit_code == 66 and "sub-02/t1.nii.gz" in result.output
    assert not (tmp_path / "results").exists()


def test_sheet_missing_subject_column_65(runner, tmp_path):
    sheet = tmp_path / "s.csv"
    sheet.write_text("id,t1\na,x.nii.gz\n")
    result = _batch(runner, sheet, tmp_path / "results")
    assert result.exit_code == 65 and "missing column 'subject'" in result.output
    assert not (tmp_path / "results").exists()


def test_missing_samplesheet_66(runner, tmp_path):
    result = _batch(runner, tmp_path / "nope.csv", tmp_path / "results")
    assert result.exit_code == 66


@pytest.mark.parametrize("extra", [["--role", "label"], ["--series", "1"],
                                   ["--input", "x.nii.gz"], ["--crop-mask", "m.nii.gz"]])
def test_batch_usage_errors(runner, tmp_path, oblique, extra):
    sheet = _cohort(tmp_path, oblique, n=1)
    result = _batch(runner, sheet, tmp_path / "results", *extra)
    assert result.exit_code == 2
    assert not (tmp_path / "results").exists()


def test_batch_never_overwrites_inputs(runner, tmp_path, oblique):
    sheet = _cohort(tmp_path, oblique, n=1)
    target = tmp_path / "data" / "sub-00" / "sub-00_t1_preproc.nii.gz"
    target.write_bytes((tmp_path / "data" / "sub-00" / "t1.nii.gz").read_bytes())
    sheet.write_text(sheet.read_text().replace("data/sub-00/seg.nii.gz",
                                               "data/sub-00/sub-00_t1_preproc.nii.gz"))
    result = _batch(runner, sheet, tmp_path / "data")
    assert result.exit_code == 2 and "overwrite" in result.output


@pytest.mark.parametrize("subject", ["..", "."])
def test_batch_refuses_subject_ids_that_leave_the_folder(runner, tmp_path, oblique, subject):
    sheet = _cohort(tmp_path, oblique, n=1)
    sheet.write_text(sheet.read_text().replace("sub-00,", f"{subject},", 1))
    result = _batch(runner, sheet, tmp_path / "out" / "results")
    assert result.exit_code == 65 and "row 2, column 'subject'" in result.output, result.output
    assert not list(tmp_path.rglob("*_preproc.nii.gz"))
