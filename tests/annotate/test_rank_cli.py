"""`medflow suggest-annotation [rank]` on a constructed pool with a subgroup the model has
never seen: who is suggested, budgets, units, reproducibility and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io import read_image, write_nifti

FAST = ["--vae-steps", "20"]


def rank(runner, *args):
    return runner.invoke(cli, ["suggest-annotation", *args])


def ranked(path) -> pd.DataFrame:
    return pd.read_csv(path)


@pytest.mark.parametrize("strategy", ["uncertainty", "gradient"])
def test_unseen_subgroup_is_picked_before_random_picks_it(runner, pool, pool_model, tmp_path,
                                                          strategy, groups):
    POOL_A, POOL_B = groups["a"], groups["b"]
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(pool_model), "--samplesheet", str(pool), "--budget", "8",
               "--strategy", strategy, "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    order = list(ranked(out)["subject"])
    assert sorted(order) == sorted(POOL_A + POOL_B)  # the whole pool, nothing labelled
    assert set(order[:2]) == set(POOL_B), order
    # random puts the first unseen subject at rank (8 + 1) / (2 + 1) = 3 on average
    firsts = []
    for seed in range(8):
        res = rank(runner, "--samplesheet", str(pool), "--image-role", "sa", "--label-role",
                   "seg_sa", "--budget", "8", "--strategy", "random", "--seed", str(seed),
                   "--out", str(out))
        assert res.exit_code == 0, res.output
        firsts.append(min(list(ranked(out)["subject"]).index(b) for b in POOL_B) + 1)
    assert np.mean(firsts) > 1.5 and max(firsts) > 1


@pytest.mark.parametrize("strategy", ["gradient", "uncertainty", "coreset", "typical", "random"])
def test_every_strategy_suggests_only_unlabelled_subjects(runner, pool, pool_model, tmp_path,
                                                          strategy, groups):
    LABELLED = groups["labelled"]
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(pool_model), "--samplesheet", str(pool), "--budget", "3",
               "--strategy", strategy, "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    table = ranked(out)
    assert list(table.columns) == ["rank", "subject", "strategy", "score", "reason"]
    assert list(table["rank"]) == [1, 2, 3] and set(table["strategy"]) == {strategy}
    assert not set(table["subject"]) & set(LABELLED)
    assert table["reason"].str.len().min() > 5
    side = json.loads((tmp_path / "s.json").read_text())
    assert side["tool"] == "suggest-annotation" and side["unlabelled_units"] == 8
    assert side["parameters"]["strategy"] == strategy and "model_weights" in side["inputs"]


def test_slices_and_percent_budget(runner, pool, pool_model, tmp_path, groups):
    LABELLED = groups["labelled"]
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(pool_model), "--samplesheet", str(pool), "--budget", "5%",
               "--unit", "slice", "--strategy", "gradient", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    table = ranked(out)
    # 12 subjects x 6 slices = 72 units: 5 % rounds up to 4 slices, all from the pool
    assert len(table) == 4 and table["slice"].between(0, 5).all()
    assert not set(table["subject"]) & set(LABELLED)
    assert len(set(zip(table["subject"], table["slice"]))) == 4


def test_budgets(runner, pool, tmp_path):
    out = tmp_path / "s.csv"
    common = ["--samplesheet", str(pool), "--image-role", "sa", "--label-role", "seg_sa",
              "--strategy", "random", "--out", str(out)]
    for budget, n in (("2", 2), ("25%", 3), ("1%", 1), ("8", 8), ("66%", 8)):
        res = rank(runner, *common, "--budget", budget)
        assert res.exit_code == 0, (budget, res.output)
        assert len(ranked(out)) == n, budget
    res = rank(runner, *common, "--budget", "9")
    assert res.exit_code == 65
    assert "budget 9 subject(s) (9) is larger than the unlabelled pool: 8 of 12" in res.output
    assert str(pool) in res.output
    res = rank(runner, *common, "--budget", "75%")
    assert res.exit_code == 65 and "budget 9" in res.output
    for bad in ("0", "abc", "1.5", "120%", "-3"):
        assert rank(runner, *common, "--budget", bad).exit_code == 2, bad


def test_same_seed_same_bytes(runner, pool, pool_model, tmp_path):
    outs = []
    for i, seed in enumerate((4, 4, 5)):
        out = tmp_path / f"s{i}.csv"
        res = rank(runner, "--model", str(pool_model), "--samplesheet", str(pool), "--budget",
                   "4", "--strategy", "coreset", "--seed", str(seed), "--out", str(out), *FAST)
        assert res.exit_code == 0, res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_stored_features_give_the_same_list(runner, pool, pool_model, tmp_path):
    first, again, feats = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "f.parquet"
    res = rank(runner, "--model", str(pool_model), "--samplesheet", str(pool), "--budget", "4",
               "--strategy", "gradient", "--out", str(first), "--save-features", str(feats),
               *FAST)
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(feats)
    assert len(table) == 12 and table.loc[~table["labelled"], "gradient_norm"].notna().all()
    res = rank(runner, "--features", str(feats), "--budget", "4", "--strategy", "gradient",
               "--out", str(again))
    assert res.exit_code == 0, res.output
    assert ranked(first)["subject"].tolist() == ranked(again)["subject"].tolist()
    res = rank(runner, "--features", str(feats), "--budget", "4", "--strategy", "uncertainty",
               "--out", str(again))
    assert res.exit_code == 65 and "needs the model's uncertainty" in res.output


def test_no_unlabelled_subject_is_an_empty_list(runner, tmp_path, pool_writer, pool_model,
                                                groups):
    sheet = pool_writer(tmp_path, sum(groups.values(), []))
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(pool_model), "--samplesheet", str(sheet), "--out",
               str(out))
    assert res.exit_code == 0, res.output
    assert "0 suggestions: every subject already has a label" in res.output
    assert out.read_text() == "rank,subject,strategy,score,reason\n"


def test_model_labels_must_match_the_samplesheet(runner, pool, pool_model, tmp_path):
    shutil.copytree(pool.parent, tmp_path / "pool")
    seg = tmp_path / "pool" / "a1" / "seg_sa.nii.gz"
    vol = read_image(seg, kind="label")
    data = np.asarray(vol.data).copy()
    data[data == 3] = 5
    write_nifti(vol.with_data(data), seg)
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(pool_model), "--samplesheet",
               str(tmp_path / "pool" / "samplesheet.csv"), "--strategy", "uncertainty",
               "--budget", "2", "--out", str(out))
    assert res.exit_code == 65 and not out.exists()
    assert "label values [5] are not the model's labels [0, 1, 2, 3]" in res.output
    assert str(seg) in res.output


def test_missing_or_foreign_model_and_usage(runner, pool, tmp_path):
    out = tmp_path / "s.csv"
    res = rank(runner, "--model", str(tmp_path / "nope"), "--samplesheet", str(pool),
               "--strategy", "uncertainty", "--out", str(out))
    assert res.exit_code == 66 and "model folder not found" in res.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.json").write_text('{"format": "some-other-tool"}')
    res = rank(runner, "--model", str(foreign), "--samplesheet", str(pool), "--out", str(out))
    assert res.exit_code == 65 and "not a segment-cascaded model (made by" in res.output
    res = rank(runner, "--samplesheet", str(pool), "--strategy", "gradient", "--out", str(out))
    assert res.exit_code == 2 and "needs --model" in res.output
    res = rank(runner, "--samplesheet", str(pool), "--features", "x.parquet", "--out", str(out))
    assert res.exit_code == 2
    res = rank(runner, "--features", str(tmp_path / "none.parquet"), "--out", str(out))
    assert res.exit_code == 66
    assert not out.exists()



def test_an_output_over_an_input_is_refused_before_any_work(runner, tmp_path, pool_writer,
                                                            groups):
    sheet = pool_writer(tmp_path / "c", groups["a"][:3])
    image = next((tmp_path / "c").rglob("sa.nii.gz"))
    kept = {p: p.read_bytes() for p in (sheet, image)}
    for out, features in ((sheet, None), (tmp_path / "s.csv", image)):
        args = ["--out", str(out)] + (["--save-features", str(features)] if features else [])
        res = rank(runner, "--samplesheet", str(sheet), "--image-role", "sa", "--label-role",
                   "seg_sa", "--strategy", "random", *args)
        assert res.exit_code == 2 and "would overwrite the input" in res.output, res.output
    assert all(p.read_bytes() == b for p, b in kept.items())
    assert not (tmp_path / "s.csv").exists()
    feats = tmp_path / "f.parquet"
    feats.write_bytes(b"not read")
    res = rank(runner, "--features", str(feats), "--out", str(tmp_path / "s.csv"),
               "--save-features", str(feats))
    assert res.exit_code == 2 and feats.read_bytes() == b"not read"
