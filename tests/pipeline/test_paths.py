"""Paths that cross a file boundary mean the same file wherever they are read from
(issue: `make demo` failed on a fresh clone). The pipeline is run with relative --input,
--outdir and --model from a working directory other than the samplesheet's, then resumed
from another working directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io.paths import absolute, inside
from medflow.io.samplesheet import load_samplesheet

from .conftest import affine


@pytest.fixture
def chdir():
    old = os.getcwd()
    yield os.chdir
    os.chdir(old)


def test_absolute_expands_home_and_normalises(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert absolute("~/a/../b.nii.gz") == tmp_path / "b.nii.gz"
    assert absolute("x/y.csv", base=tmp_path / "d") == tmp_path / "d" / "x" / "y.csv"
    assert absolute("/abs/f", base=tmp_path) == Path("/abs/f")


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "/etc", "a\\b"])
def test_inside_refuses_parts_that_leave_the_folder(tmp_path, part):
    with pytest.raises(ValueError):
        inside(tmp_path, part)


def test_samplesheet_cells_resolve_against_its_folder_from_any_cwd(cohort, chdir, tmp_path):
    chdir(cohort.parent.parent)
    rel = Path(cohort.parent.name) / cohort.name
    sheet = load_samplesheet(rel)
    for value in sheet["sa"]:
        assert Path(value).is_absolute() and Path(value).exists()


def test_relative_input_outdir_model_then_resume_elsewhere(runner, cohort, tiny_model,
                                                           tmp_path, chdir):
    # Everything below a folder whose name has a space and non-ASCII characters.
    work = tmp_path / "wörk dir"
    shutil.copytree(cohort.parent, work / "data" / "cohort")
    shutil.copytree(tiny_model, work / "models" / "m")
    chdir(work)
    res = runner.invoke(cli, ["pipeline", "--input", "data/cohort/samplesheet.csv",
                              "--outdir", "out/results", "--model", "models/m"])
    assert res.exit_code == 0, res.output
    results = work / "out" / "results"
    # The derived cohort samplesheet names files that exist when read against its folder.
    derived = results / "uncertainty" / "samplesheet.csv"
    for column, values in pd.read_csv(derived).items():
        if column != "subject":
            for value in values:
                assert Path(value).is_absolute() and absolute(value, derived.parent).exists()
    params = json.loads((results / "pipeline_info" / "params.json").read_text())
    for key in ("input", "outdir", "model"):
        assert Path(params[key]).is_absolute(), (key, params[key])
    sidecar = json.loads((results / "segment" / "s0" / "s0_sa_seg.json").read_text())
    for entry in sidecar["inputs"].values():
        assert Path(entry["path"]).is_absolute()
    # --resume from another working directory, the same folders named relative to it.
    chdir(work / "out")
    res = runner.invoke(cli, ["pipeline", "--input", "../data/cohort/samplesheet.csv",
                              "--outdir", "results", "--model", "../models/m", "--resume"])
    assert res.exit_code == 0, res.output
    trace = pd.read_parquet(results / "pipeline_info" / "trace.parquet")
    trace = trace[trace["stage"] != "cluster"]  # skipped: one image column to compare
    assert set(trace["status"]) == {"cached"}, trace[["task", "status"]]


def test_train_with_relative_paths(runner, tiny_cohort, tmp_path, chdir):
    """The failing case of the issue: with a relative --input, --train wrote cells into
    results/train/samplesheet.csv that only meant something from the working directory."""
    tiny_cohort(tmp_path / "demo" / "cohort", affine(), n=2, labelled=2)
    chdir(tmp_path)
    res = runner.invoke(cli, ["pipeline", "--input", "demo/cohort/samplesheet.csv",
                              "--outdir", "demo/results", "--train", "--seed", "1"])
    assert res.exit_code == 0, res.output
    trained_on = tmp_path / "demo" / "results" / "train" / "samplesheet.csv"
    for value in pd.read_csv(trained_on)["sa"]:
        assert absolute(value, trained_on.parent).exists()
    assert (tmp_path / "demo" / "results" / "cohort.parquet").exists()
