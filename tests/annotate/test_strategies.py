"""The strategies on constructed feature tables: who they pick, streaming in small
batches, Parquet vs memory, row order, budgets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medflow.annotate.strategies import STRATEGIES, rank_units
from medflow.annotate.suggest import parse_budget, resolve_budget
from medflow.annotate.table import FeatureSource, TopK, stable_keys
from medflow.errors import InvalidDataError


def table(seed=0, n_a=40, n_b=6, labelled_a=5, dims=4) -> pd.DataFrame:
    """Cluster a (labelled in part) around 0, cluster b (unlabelled) around 6; b has the
    larger uncertainty and gradient norms; one far outlier."""
    rng = np.random.default_rng(seed)
    emb = np.concatenate([rng.normal(0, 1, (n_a, dims)), rng.normal(6, 0.5, (n_b, dims)),
                          np.full((1, dims), -15.0)]).astype(np.float32)
    n = len(emb)
    group = ["a"] * n_a + ["b"] * n_b + ["outlier"]
    df = pd.DataFrame({"subject": [f"s{i:03d}" for i in range(n)], "slice": -1,
                       "labelled": [i < labelled_a for i in range(n)], "group": group,
                       "uncertainty": np.where(np.array(group) == "b", 60.0, 20.0)
                       + rng.uniform(0, 5, n),
                       "gradient_norm": np.where(np.array(group) == "b", 1.0, 0.1)
                       * rng.uniform(1, 2, n)})
    df.loc[df["labelled"], ["uncertainty", "gradient_norm"]] = np.nan
    return pd.concat([df, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(dims)])],
                     axis=1)


def groups_of(df, ranked):
    return df.set_index("subject").loc[ranked["subject"], "group"].tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_labelled_exact_budget_same_seed_same_list(strategy):
    df = table()
    a = rank_units(FeatureSource(df), strategy, 7, seed=3)
    b = rank_units(FeatureSource(df), strategy, 7, seed=3)
    assert len(a) == 7 and a.equals(b) and a["subject"].is_unique
    assert not set(a["subject"]) & set(df.loc[df["labelled"], "subject"])
    assert list(a["rank"]) == list(range(1, 8))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batches_row_order_and_parquet_do_not_change_the_list(strategy, tmp_path):
    df = table(1)
    whole = rank_units(FeatureSource(df), strategy, 6, seed=2)
    shuffled = df.sample(frac=1.0, random_state=0)
    small = rank_units(FeatureSource(shuffled, batch_rows=5), strategy, 6, seed=2)
    path = tmp_path / "f.parquet"
    shuffled.to_parquet(path, row_group_size=7)
    disk = rank_units(FeatureSource(path, batch_rows=9), strategy, 6, seed=2)
    if strategy == "typical":  # k-means sees its sample in another order
        assert set(groups_of(df, whole)) == set(groups_of(df, small))
        return
    assert whole["subject"].tolist() == small["subject"].tolist() == disk["subject"].tolist()


def test_model_strategies_find_the_unseen_cluster_and_random_does_not():
    df = table()
    for strategy in ("uncertainty", "gradient"):
        assert groups_of(df, rank_units(FeatureSource(df), strategy, 6)) == ["b"] * 6
    hits = [groups_of(df, rank_units(FeatureSource(df), "random", 6, seed=s)).count("b")
            for s in range(20)]
    assert np.mean(hits) < 2.5  # 6 of 42 unlabelled are b: about 0.9 expected


def test_coreset_covers_the_far_cluster_and_typical_avoids_the_outlier():
    df = table()
    first = groups_of(df, rank_units(FeatureSource(df), "coreset", 2))
    assert first == ["outlier", "b"]  # farthest from the labelled units first
    cold = df.assign(labelled=False)
    typical = groups_of(cold, rank_units(FeatureSource(cold), "typical", 3))
    assert sorted(typical[:2]) == ["a", "b"] and typical[2] == "outlier"


def test_gradient_keeps_diversity():
    df = table()
    b = df.index[df["group"] == "b"]
    twin = df.loc[[b[0]]].assign(subject="twin", gradient_norm=df.loc[b[0], "gradient_norm"])
    df = pd.concat([df, twin], ignore_index=True)  # a copy of a b unit, same latent code
    picks = rank_units(FeatureSource(df), "gradient", 6)
    both = {df.loc[b[0], "subject"], "twin"}
    assert len(both & set(picks["subject"])) == 1
    assert picks["reason"].str.contains("loss-gradient length").all()


def test_missing_columns_are_data_errors():
    df = table().drop(columns=["uncertainty"])
    with pytest.raises(InvalidDataError, match="needs the model's uncertainty"):
        rank_units(FeatureSource(df), "uncertainty", 3)
    with pytest.raises(InvalidDataError, match="needs embeddings"):
        rank_units(FeatureSource(table()[["subject", "slice", "labelled"]]), "coreset", 3)
    with pytest.raises(InvalidDataError, match="lacks column"):
        FeatureSource(table().drop(columns=["labelled"]))


def test_topk_and_keys():
    top = TopK(3)
    for start in range(0, 10, 4):
        scores = np.arange(start, min(start + 4, 10), dtype=float)
        top.push(scores, stable_keys(0, [f"u{int(s)}" for s in scores], [-1] * len(scores)),
                 [f"u{int(s)}" for s in scores], [-1] * len(scores))
    assert list(top.subject) == ["u9", "u8", "u7"]
    assert (stable_keys(1, ["a", "b"], [0, 0]) != stable_keys(2, ["a", "b"], [0, 0])).all()
    assert (stable_keys(1, ["a"], [0]) == stable_keys(1, ["a"], [0])).all()


def test_budget_parsing_and_resolution():
    assert parse_budget("10") == (10, None) and parse_budget(" 5% ") == (None, 5.0)
    for bad in ("0", "1.5", "abc", "0%", "101%", "-2", ""):
        with pytest.raises(ValueError):
            parse_budget(bad)
    assert resolve_budget("5%", 100, 60, "subject") == 5
    assert resolve_budget("5%", 8, 8, "subject") == 1      # rounded up, at least one
    assert resolve_budget("3", 100, 3, "slice") == 3
    with pytest.raises(InvalidDataError, match="budget 4 slice.*pool: 3 of 100 slice"):
        resolve_budget("4", 100, 3, "slice")
