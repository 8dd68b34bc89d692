"""The simulated annotation loop: splits, Dice, the summary, and a tiny end-to-end run
with its resumable cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medflow.annotate.curves import summary
from medflow.annotate.simulate import dice_row, split_cohort
from medflow.cli import cli


def test_split_is_stratified_reproducible_and_disjoint():
    sheet = pd.DataFrame({"subject": [f"s{i}" for i in range(40)],
                          "subgroup": ["common"] * 30 + ["rare"] * 10})
    pool, test = split_cohort(sheet, 0.2, seed=1, repeat=0)
    assert not set(pool) & set(test) and len(pool) + len(test) == 40
    groups = dict(zip(sheet["subject"], sheet["subgroup"]))
    assert sorted(groups[s] for s in test) == ["common"] * 6 + ["rare"] * 2
    assert split_cohort(sheet, 0.2, 1, 0) == (pool, test)
    assert split_cohort(sheet, 0.2, 1, 1)[1] != test


def test_dice_row():
    truth = np.zeros((4, 4, 2), np.uint8)
    truth[:2] = 1
    truth[2:3] = 2
    pred = truth.copy()
    pred[0] = 2
    row = dice_row(pred, truth, (0, 1, 2))
    assert row["dice_1"] == pytest.approx(2 * 8 / (8 + 16))
    assert row["dice_2"] == pytest.approx(2 * 8 / (16 + 8))
    assert row["dice_wt"] == 1.0 and row["dice_mean"] == pytest.approx(2 / 3)
    assert np.isnan(dice_row(truth * 0, truth * 0, (0, 1))["dice_1"])


def test_summary_auc_and_the_fraction_reaching_full_data():
    rows = []
    for rep, noise in enumerate((0.0, 0.02)):
        for f, d in ((0.1, 0.6), (0.2, 0.8), (0.3, 0.9)):
            rows.append({"strategy": "s", "repeat": rep, "fraction_labelled": f,
                         "dice": d + noise})
    full = pd.DataFrame({"repeat": [0, 1], "dice": [0.905, 0.915]})
    out = summary(pd.DataFrame(rows), full).iloc[0]
    # trapezoid over 0.1-0.3 divided by the range: (0.7 + 0.85) / 2 = 0.775, +0.02
    assert out["auc_mean"] == pytest.approx(0.785) and out["auc_sd"] > 0
    assert out["reach_fraction"] == pytest.approx(0.3)  # 0.91 >= 0.91 - 0.01
    assert out["full_dice_mean"] == pytest.approx(0.91) and out["repeats"] == 2


def test_tiny_simulation_end_to_end_and_resume(runner, pool_writer, groups, tmp_path):
    sheet = pool_writer(tmp_path / "cohort", sum(groups.values(), []))
    out = tmp_path / "sim"
    args = ["suggest-annotation", "simulate", "--samplesheet", str(sheet), "--strategies",
            "random,gradient", "--rounds", "1", "--start", "2", "--step", "1", "--repeats",
            "1", "--train-steps", "3", "--vae-steps", "5", "--channels", "4", "--levels",
            "2", "--patch", "24,20,6", "--out", str(out)]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "random" in res.output and str(out / "curves.png") in res.output
    curves = pd.read_parquet(out / "curves.parquet")
    assert set(curves["strategy"]) == {"random", "gradient"}
    assert sorted(curves["labelled_subjects"].unique()) == [2, 3]
    assert curves["dice"].between(0, 1).all() and "dice_a" in curves
    assert {"labelled_a", "labelled_b"} <= set(curves.columns)
    full = pd.read_parquet(out / "full.parquet")
    assert full["labelled_subjects"].tolist() == [10] and (full["fraction_labelled"] == 1).all()
    picks = pd.read_parquet(out / "picks.parquet")
    assert len(picks) == 2 and set(picks["subgroup"]) <= {"a", "b"}
    assert (out / "curves.png").stat().st_size > 1000
    side = json.loads((out / "simulate.json").read_text())
    assert side["metric"] == "mean over labels" and side["pool_subjects"] == {"0": 10}
    # a rerun finds every round in the cache: no model is trained again
    models = sorted((out / "work").rglob("model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in models]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert [p.stat().st_mtime_ns for p in models] == stamps and len(models) == 4
    # one more round reuses the first: only the round-2 models are trained
    args[args.index("--rounds") + 1] = "2"
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert [p.stat().st_mtime_ns for p in models] == stamps
    assert len(sorted((out / "work").rglob("model.safetensors"))) == 6
    assert sorted(pd.read_parquet(out / "curves.parquet")["labelled_subjects"].unique()) == [
        2, 3, 4]


def _epochs(folder) -> int:
    return json.loads((folder / "model" / "model.json").read_text())["training"]["epochs_done"]


def test_full_data_model_gets_its_own_budget(runner, pool_writer, groups, tmp_path):
    """The full-data line is a ceiling only if that model is trained long enough: it gets
    --full-steps (default 4 x --train-steps), not the rounds' budget, and changing it
    retrains the full model only."""
    sheet = pool_writer(tmp_path / "cohort", sum(groups.values(), []))
    out = tmp_path / "sim"
    args = ["suggest-annotation", "simulate", "--samplesheet", str(sheet), "--strategies",
            "random", "--rounds", "1", "--start", "2", "--step", "1", "--repeats", "1",
            "--train-steps", "5", "--channels", "4", "--levels", "2", "--patch", "24,20,6",
            "--out", str(out)]
    assert runner.invoke(cli, args).exit_code == 0
    work = out / "work" / "repeat0"
    # pool of 10: the rounds' 5 steps are 1 epoch; the default 4 x 5 = 20 steps are 2
    assert _epochs(work / "full") == 2 and _epochs(work / "start") == 3  # ceil(5 / 2)
    assert json.loads((out / "simulate.json").read_text())["parameters"]["full_steps"] == 20
    rounds = [work / "start", work / "random" / "round1"]
    stamps = [(f / "model" / "model.safetensors").stat().st_mtime_ns for f in rounds]
    res = runner.invoke(cli, [*args, "--full-steps", "30"])
    assert res.exit_code == 0, res.output
    assert _epochs(work / "full") == 3
    assert [(f / "model" / "model.safetensors").stat().st_mtime_ns for f in rounds] == stamps


def test_simulation_needs_a_large_enough_pool(runner, pool_writer, groups, tmp_path):
    sheet = pool_writer(tmp_path / "cohort", sum(groups.values(), []))
    res = runner.invoke(cli, ["suggest-annotation", "simulate", "--samplesheet", str(sheet),
                              "--rounds", "3", "--start", "4", "--step", "3", "--out",
                              str(tmp_path / "sim")])
    assert res.exit_code == 65 and "= 13 subjects, but the pool has 10" in res.output
    res = runner.invoke(cli, ["suggest-annotation", "simulate", "--samplesheet", str(sheet),
                              "--strategies", "gradient,magic", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2
