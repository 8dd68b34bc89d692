"""`medflow pipeline --train`: train on the subjects that have labels, then segment all."""

from __future__ import annotations

import json

import pandas as pd

from medflow.cli import cli

from .conftest import affine


def test_train_on_labelled_subjects_then_segment_everyone(runner, tiny_cohort, tmp_path):
    sheet = tiny_cohort(tmp_path / "cohort", affine(), n=3, labelled=2)
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--train", "--jobs", "2", "--seed", "1"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "train" / "model" / "model.json").read_text())
    assert card["training"]["subjects"] == 2  # s2 has no labels
    assert card["training"]["image_roles"] == ["sa"]
    trained_on = pd.read_csv(out / "train" / "samplesheet.csv")
    assert list(trained_on["subject"]) == ["s0", "s1"]
    assert trained_on["sa"].str.endswith("/sa.nii.gz").all()  # the images as acquired
    for s in ("s0", "s1", "s2"):
        assert (out / "segment" / s / f"{s}_sa_seg.nii.gz").exists()
    scored = pd.read_parquet(out / "uncertainty" / "score-uncertainty.parquet")
    assert list(scored["subject"]) == ["s0", "s1"]
    table = pd.read_parquet(out / "cohort.parquet").set_index("subject")
    assert table.loc["s2", "lvedv_voxel_ml"] >= 0 and pd.isna(table.loc["s2", "uncertainty_score"])
    assert "<h2>train</h2>" in (out / "report" / "index.html").read_text()

    # only the cohort-level scoring again, with the model trained above
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--train", "--stages", "uncertainty", "--resume"])
    assert res.exit_code == 0, res.output
    trace = pd.read_parquet(out / "pipeline_info" / "trace.parquet")
    assert list(trace["task"]) == ["uncertainty:cohort"]
    assert list(trace["status"]) == ["cached"]


def test_train_needs_labels(runner, tiny_cohort, tmp_path):
    sheet = tiny_cohort(tmp_path / "cohort", affine(), n=2, labelled=0)
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--train"])
    assert res.exit_code == 65 and "no subject has a 'seg_sa' file" in res.output, res.output
    assert not out.exists()
