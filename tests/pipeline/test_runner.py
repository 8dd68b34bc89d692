"""`medflow pipeline` end to end on a 3-subject cohort with a tiny model: layout, tables,
trace, --resume, changed inputs, a corrupt subject, and what stops a run before any task."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd

from medflow.cli import cli
from medflow.io import read_image, write_nifti

SUBJECTS = ["s0", "s1", "s2"]


def pipeline(runner, sheet, out, *args):
    return runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                               *args])


def trace(out) -> dict[str, str]:
    df = pd.read_parquet(out / "pipeline_info" / "trace.parquet")
    return dict(zip(df["task"], df["status"]))


def mtimes(out) -> dict[str, int]:
    """Modification times of the tasks' outputs (not the summary tables, rebuilt each run)."""
    files = [*(out / "preprocess").glob("*/*"), *(out / "segment").glob("*/*"),
             *(out / "uncertainty").glob("*")]
    return {str(p): p.stat().st_mtime_ns for p in files}


def test_end_to_end_resume_and_changed_input(runner, cohort, tiny_model, tmp_path):
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--jobs", "2")
    assert res.exit_code == 0, res.output
    assert "3 of 3 subjects done, 0 failed" in res.output
    for s in SUBJECTS:
        image = read_image(cohort.parent / s / "sa.nii.gz")  # what the model reads
        seg = read_image(out / "segment" / s / f"{s}_sa_seg.nii.gz", kind="label")
        assert seg.data.shape == image.data.shape and np.allclose(seg.affine, image.affine)
        pre = read_image(out / "preprocess" / s / f"{s}_sa_preproc.nii.gz")
        assert sorted(pre.data.shape) == sorted(image.data.shape)  # reoriented to RAS
        assert set(np.unique(seg.data)) <= {0, 1, 2, 3}
        assert (out / "segment" / s / f"{s}_sa_unc.nii.gz").exists()
        assert (out / "preprocess" / s / f"{s}_seg_sa_preproc.json").exists()
    for table in ("preprocess/preprocess.parquet", "segment/segment.parquet",
                  "uncertainty/score-uncertainty.parquet"):
        assert len(pd.read_parquet(out / table)["subject"].unique()) == 3, table
    cohort_table = pd.read_parquet(out / "cohort.parquet")
    assert list(cohort_table["subject"]) == SUBJECTS
    assert (cohort_table["status"] == "ok").all()
    for col in ("lvedv_voxel_ml", "lvesv_voxel_ml", "lvm_voxel_g", "lvef_voxel_pct",
                "uncertainty_score", "qc_pass", "lv_dice", "sa_spacing_x_mm"):
        assert cohort_table[col].notna().all(), col
    # volumes from the segmentation: voxel count x voxel volume at the ED frame
    s0 = read_image(out / "segment" / "s0" / "s0_sa_seg.nii.gz", kind="label")
    ed = int(cohort_table.loc[0, "ed_frame"])
    expected = (np.asarray(s0.data)[..., ed] == 1).sum() * np.prod(s0.spacing) / 1000
    assert cohort_table.loc[0, "lvedv_voxel_ml"] == np.round(expected, 3)
    # without --save-probabilities: no probability files, no calibration columns or diagram
    assert not list(out.glob("segment/*/*_prob.nii.gz"))
    assert not [c for c in cohort_table.columns if c.endswith(("_ece", "_brier"))]
    assert "prob" not in pd.read_csv(out / "uncertainty" / "samplesheet.csv")
    assert not (out / "uncertainty" / "curves_reliability.png").exists()
    info = out / "pipeline_info"
    assert json.loads((info / "versions.json").read_text())["medflow"]
    assert json.loads((info / "params.json").read_text())["jobs"] == 2
    first = pd.read_parquet(info / "trace.parquet")
    skipped = first[first["stage"] == "cluster"]  # one image column: nothing to compare
    assert list(skipped["status"]) == ["skipped"]
    first = first[first["stage"] != "cluster"]
    assert set(first["status"]) == {"done"} and len(first) == 8  # with annotate
    assert (first["seconds"] > 0).all() and (first["peak_rss_mb"] > 10).all()

    # a second run with --resume does no work: every task cached, no file rewritten
    before = mtimes(out)
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--resume")
    assert res.exit_code == 0, res.output
    # (the cluster stage is skipped again: one image column)
    assert {v for k, v in trace(out).items() if k != "cluster"} == {"cached"}
    assert mtimes(out) == before

    # one subject's image changes: its preprocess and segment tasks and the cohort-level
    # scoring run again; the other subjects' tasks are skipped and their files untouched
    sa = cohort.parent / "s1" / "sa.nii.gz"
    vol = read_image(sa)
    write_nifti(vol.with_data((np.asarray(vol.data) + 5).astype(np.int16)), sa)
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--resume")
    assert res.exit_code == 0, res.output
    status = trace(out)
    assert {k for k, v in status.items() if v == "done"} == {
        "preprocess:s1", "segment:s1", "uncertainty:cohort", "annotate:cohort"}
    after = mtimes(out)
    for s in ("s0", "s2"):
        for stage in ("preprocess", "segment"):
            for path in (out / stage / s).iterdir():
                assert after[str(path)] == before[str(path)], path
    # the report ran at the end: every image it references exists
    html = (out / "report" / "index.html").read_text()
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from a network
    images = [part.split('"')[0] for part in html.split('<img src="')[1:]]
    assert any(i.startswith("overlay_") for i in images) and len(images) >= 5
    for image in images:
        assert (out / "report" / image).is_file(), image


def test_corrupt_subject_fails_alone(runner, cohort, tiny_model, tmp_path):
    out = tmp_path / "results"
    bad = cohort.parent / "s1" / "sa.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated gzip
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--jobs", "2")
    assert res.exit_code == 65, res.output
    assert "2 of 3 subjects done, 1 failed (s1)" in res.output
    assert "preprocess:s1: exit 65" in res.output
    status = trace(out)
    assert status["preprocess:s1"] == "failed" and status["segment:s1"] == "skipped"
    assert status["uncertainty:cohort"] == "done"
    for s in ("s0", "s2"):
        assert read_image(out / "segment" / s / f"{s}_sa_seg.nii.gz", kind="label")
    assert not (out / "segment" / "s1").exists()
    assert not list((out / "preprocess").glob("s1/*.nii.gz"))
    table = pd.read_parquet(out / "cohort.parquet").set_index("subject")
    assert table.loc["s1", "status"].startswith("failed in preprocess (exit 65)")
    assert np.isnan(table.loc["s1", "lvedv_voxel_ml"]) and table.loc["s0", "lvedv_voxel_ml"] > 0
    scored = pd.read_parquet(out / "uncertainty" / "score-uncertainty.parquet")
    assert list(scored["subject"]) == ["s0", "s2"]


def test_samplesheet_errors_stop_before_any_task(runner, cohort, tiny_model, tmp_path):
    text = cohort.read_text().splitlines()
    text[1] = text[1].replace("s0/sa.nii.gz", "s0/nope.nii.gz")
    text[3] = text[3].replace("s2,", "s 2,", 1)
    cohort.write_text("\n".join(text) + "\n")
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--model", str(tiny_model))
    assert res.exit_code == 65, res.output
    assert "row 2, column 'sa': file not found" in res.output
    assert "row 4, column 'subject'" in res.output
    assert not (out / "preprocess").exists()
    # a column the model needs is missing altogether
    pd.DataFrame({"subject": ["s0"], "seg_sa": ["s0/seg_sa.nii.gz"]}).to_csv(
        cohort, index=False)
    res = pipeline(runner, cohort, out, "--model", str(tiny_model))
    assert res.exit_code == 65 and "missing column 'sa'" in res.output, res.output
    assert not (out / "preprocess").exists()


def test_unreadable_model_stops_before_any_task(runner, cohort, tiny_model, tmp_path):
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--model", str(tmp_path / "none"))
    assert res.exit_code == 66 and "model folder not found" in res.output, res.output
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    res = pipeline(runner, cohort, out, "--model", str(broken))
    assert res.exit_code == 65 and "model.safetensors" in res.output, res.output
    assert not out.exists()


def test_usage_errors(runner, cohort, tiny_model, tmp_path):
    out = tmp_path / "results"
    assert pipeline(runner, cohort, out).exit_code == 2  # segment needs a model
    assert pipeline(runner, cohort, out, "--model", str(tiny_model), "--train").exit_code == 2
    res = pipeline(runner, cohort, out, "--stages", "preprocess,nope")
    assert res.exit_code == 2 and "nope" in res.output
    help_text = runner.invoke(cli, ["pipeline", "--help"]).output
    assert "Example" in help_text and "--resume" in help_text
