"""The pipeline's cluster stage: the samplesheet column check, in cohort.parquet and the
report; a --cluster-model from another tool stops the run before any task."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medflow.cli import cli


@pytest.fixture(scope="module")
def cluster_model(tmp_path_factory, category_cohort, cluster_fast):
    from click.testing import CliRunner

    import torch

    torch.set_num_threads(1)  # tests share two cores
    sheet = category_cohort(tmp_path_factory.mktemp("train"))  # the images the test checks
    out = tmp_path_factory.mktemp("cluster") / "model"
    res = CliRunner().invoke(cli, ["cluster-unsupervised", "train", "--samplesheet", str(sheet),
                                   "--k", "3", "--out", str(out), *cluster_fast])
    assert res.exit_code == 0, res.output
    return out


def test_swapped_columns_are_flagged_in_cohort_table_and_report(runner, category_cohort,
                                                               cluster_model, tmp_path):
    sheet = category_cohort(tmp_path / "cohort")
    table = pd.read_csv(sheet)
    table.loc[2, ["disk", "stripes"]] = table.loc[2, ["stripes", "disk"]].to_numpy()
    table.to_csv(sheet, index=False)
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--stages", "preprocess,cluster", "--cluster-model",
                              str(cluster_model)])
    assert res.exit_code == 0, res.output
    cohort = pd.read_parquet(out / "cohort.parquet").set_index("subject")
    assert cohort["cluster_flagged_n"].to_dict() == {"s0": 0, "s1": 0, "s2": 2, "s3": 0, "s4": 0}
    assert cohort.loc["s2", "cluster_flags"] == "disk looks like stripes; stripes looks like disk"
    assert cohort.loc["s2", "disk_cluster"] == cohort.loc["s0", "stripes_cluster"]
    # the stage read the preprocessed copies, one column per image role
    derived = pd.read_csv(out / "cluster" / "samplesheet.csv")
    assert list(derived.columns) == ["subject", "disk", "stripes", "speckle"]
    assert derived["disk"].str.endswith("_disk_preproc.nii.gz").all()
    sidecar = json.loads((out / "cluster" / "clusters.json").read_text())
    assert sidecar["column_check"]["flagged"] == 2
    html = (out / "report" / "index.html").read_text()
    assert "<h2>cluster</h2>" in html and "2 of 15 images flagged" in html
    assert (out / "cluster" / "montage.png").exists() and 'montage.png"' in html


def test_cluster_model_of_another_tool_stops_the_run(runner, category_cohort, tmp_path):
    sheet = category_cohort(tmp_path / "cohort", n=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format": "medflow-segment-cascaded"}))
    (other / "model.safetensors").write_bytes(b"")
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--stages", "preprocess,cluster", "--cluster-model", str(other)])
    assert res.exit_code == 65 and "not a cluster-unsupervised model" in res.output, res.output
    assert not out.exists()
