"""The annotate stage: the next subjects to label among those without labels, in the
cohort table and the report; a samplesheet's subgroup column is a value, not a file."""

from __future__ import annotations

import pandas as pd

from medflow.cli import cli


def partly_labelled(sheet):
    """s2 loses its label; every subject gets a subgroup."""
    df = pd.read_csv(sheet, keep_default_na=False)
    df.loc[df["subject"] == "s2", "seg_sa"] = ""
    df["subgroup"] = ["common", "common", "rare"]
    df.to_csv(sheet, index=False)
    return sheet


def test_annotate_stage_ranks_the_unlabelled_subjects(runner, cohort, tiny_model, tmp_path):
    sheet = partly_labelled(cohort)
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--model", str(tiny_model), "--annotate-budget", "1",
                              "--stages", "preprocess,segment,annotate"])
    assert res.exit_code == 0, res.output
    ranked = pd.read_csv(out / "annotate" / "suggestions.csv")
    assert ranked["subject"].tolist() == ["s2"] and ranked["strategy"].tolist() == ["gradient"]
    assert (out / "annotate" / "suggestions.json").exists()
    assert sorted(p.name for p in (out / "preprocess" / "s0").glob("*.nii.gz")) == [
        "s0_sa_preproc.nii.gz", "s0_seg_sa_preproc.nii.gz"]  # subgroup is not an image
    table = pd.read_parquet(out / "cohort.parquet").set_index("subject")
    assert table.loc["s2", "annotation_rank"] == 1
    assert table.loc[["s0", "s1"], "annotation_rank"].isna().all()
    html = (out / "report" / "index.html").read_text()
    assert "<h2>annotate</h2>" in html and "1 of 1 unlabelled subject(s) suggested" in html
    # a budget larger than the pool: the annotate task fails with the numbers (65)
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--model", str(tiny_model), "--annotate-budget", "2",
                              "--stages", "annotate"])
    assert res.exit_code == 65
    log = (out / "pipeline_info" / "logs" / "annotate" / "cohort.log").read_text()
    assert "budget 2 subject(s) (2) is larger than the unlabelled pool: 1 of 3" in log
