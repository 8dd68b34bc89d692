"""`medflow cluster-unsupervised train|assign` through CliRunner on tiny synthetic
categories: pure clusters, reproducibility, the column check, and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medflow.cli import cli

@pytest.fixture(scope="module")
def cohort(tmp_path_factory, category_cohort) -> Path:
    return category_cohort(tmp_path_factory.mktemp("clusters"))


@pytest.fixture(scope="module")
def model(cohort, tmp_path_factory, cluster_fast) -> Path:
    import torch
    from click.testing import CliRunner

    torch.set_num_threads(1)  # tests share two cores

    out = tmp_path_factory.mktemp("model") / "model"
    result = CliRunner().invoke(cli, ["cluster-unsupervised", "train", "--samplesheet",
                                      str(cohort), "--k", "3", "--out", str(out), *cluster_fast])
    assert result.exit_code == 0, result.output
    return out


def assign(runner, *args):
    return runner.invoke(cli, ["cluster-unsupervised", "assign", *map(str, args)])


def test_clearly_different_categories_give_pure_clusters(runner, model, cohort, tmp_path):
    result = assign(runner, "--model", model, "--samplesheet", cohort.with_name("truth.csv"),
                    "--truth-column", "kind", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path / "clusters.parquet")
    assert len(df) == 15 and df["cluster"].nunique() == 3
    for column, group in df.groupby("column"):
        assert group["cluster"].nunique() == 1, column   # each kind is one cluster
    facts = json.loads((tmp_path / "clusters.json").read_text())
    assert facts["scores"]["purity"] == 1.0 and facts["scores"]["nmi"] == 1.0
    assert facts["column_check"]["flagged"] == 0 and not df["flagged"].any()
    assert "purity 1.0000" in result.output
    for name in ("montage.png", "map.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert (df["distance_cosine"] >= 0).all() and df[["map_x", "map_y"]].notna().all().all()
    card = json.loads((model / "model.json").read_text())
    assert card["tool"] == "cluster-unsupervised" and card["training"]["k"] == 3


def test_same_seed_same_bytes(runner, model, cohort, tmp_path, cluster_fast):
    # assign without --model trains first, with train's options: the same seed must give
    # the very model `train` wrote for the module, and the same table and pictures
    inline, given = tmp_path / "inline", tmp_path / "given"
    result = assign(runner, "--samplesheet", cohort, "--out", inline, "--k", "3", *cluster_fast)
    assert result.exit_code == 0, result.output
    result = assign(runner, "--model", model, "--samplesheet", cohort, "--out", given)
    assert result.exit_code == 0, result.output
    assert (inline / "model" / "model.safetensors").read_bytes() == \
        (model / "model.safetensors").read_bytes()
    for name in ("clusters.parquet", "montage.png", "map.png"):
        assert (inline / name).read_bytes() == (given / name).read_bytes(), name


def test_swapped_image_is_flagged(runner, model, cohort, tmp_path):
    sheet = pd.read_csv(cohort)
    sheet.loc[1, ["disk", "stripes"]] = sheet.loc[1, ["stripes", "disk"]].to_numpy()
    swapped = cohort.parent / "swapped.csv"
    sheet.to_csv(swapped, index=False)
    result = assign(runner, "--model", model, "--samplesheet", swapped, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path / "clusters.parquet")
    flagged = df[df["flagged"]]
    assert sorted(zip(flagged["subject"], flagged["column"])) == [("s1", "disk"),
                                                                 ("s1", "stripes")]
    assert dict(zip(flagged["column"], flagged["looks_like"])) == {"disk": "stripes",
                                                                   "stripes": "disk"}


def test_input_dir_skips_and_counts_unreadable_files(runner, model, cohort, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(cohort.parent / "s0", folder / "s0")
    shutil.copytree(cohort.parent / "s1", folder / "s1")
    (folder / "s1" / "broken.nii.gz").write_bytes(b"not a nifti")
    (folder / "s1" / "notes.txt").write_text("not an image, not counted")
    result = assign(runner, "--model", model, "--input-dir", folder, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "6 images" in result.output and "1 unreadable skipped" in result.output
    facts = json.loads((tmp_path / "o" / "clusters.json").read_text())
    assert facts["skipped"] == 1 and "broken.nii.gz" in facts["skipped_files"][0]["path"]
    df = pd.read_parquet(tmp_path / "o" / "clusters.parquet")
    assert set(df["subject"]) == {"s0", "s1"} and "flagged" not in df


def test_folder_without_readable_images_is_65_naming_it(runner, model, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(b"junk")
    (folder / "readme.txt").write_text("hello")
    for cmd in (["train", "--out", tmp_path / "m"], ["assign", "--model", model,
                                                     "--out", tmp_path / "o"]):
        result = runner.invoke(cli, ["cluster-unsupervised", cmd[0], "--input-dir",
                                     str(folder), *map(str, cmd[1:])])
        assert result.exit_code == 65, result.output
        assert f"{folder}: no readable image found" in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()  # no folder either


def test_input_dir_that_is_a_file_is_65_not_missing(runner, model, cohort, tmp_path):
    image = next(cohort.parent.rglob("*.nii.gz"))
    result = assign(runner, "--model", model, "--input-dir", image, "--out", tmp_path / "o")
    assert result.exit_code == 65, result.output
    assert f"{image}: not a folder" in result.output and not (tmp_path / "o").exists()


def test_k_larger_than_the_images_is_a_usage_error(runner, cohort, tmp_path, cluster_fast):
    result = runner.invoke(cli, ["cluster-unsupervised", "train", "--samplesheet", str(cohort),
                                 "--k", "16", "--out", str(tmp_path / "m"), *cluster_fast])
    assert result.exit_code == 2 and "--k 16 is more than the 15 image(s)" in result.output


def test_model_folder_of_another_tool_is_refused(runner, cohort, tmp_path):
    other = tmp_path / "seg"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format": "medflow-segment-cascaded"}))
    (other / "model.safetensors").write_bytes(b"")
    result = assign(runner, "--model", other, "--samplesheet", cohort, "--out", tmp_path / "o")
    assert result.exit_code == 65
    assert "not a cluster-unsupervised model (made by medflow-segment-cascaded)" in result.output


def test_usage_and_missing_inputs(runner, model, cohort, tmp_path):
    both = assign(runner, "--model", model, "--samplesheet", cohort, "--input-dir", tmp_path,
                  "--out", tmp_path / "o")
    assert both.exit_code == 2
    k_with_model = assign(runner, "--model", model, "--samplesheet", cohort, "--k", "3",
                          "--out", tmp_path / "o")
    assert k_with_model.exit_code == 2
    sheet = pd.read_csv(cohort)
    sheet.loc[0, "disk"] = "s0/nothere.nii.gz"
    bad = cohort.parent / "missing.csv"
    sheet.to_csv(bad, index=False)
    missing = assign(runner, "--model", model, "--samplesheet", bad, "--out", tmp_path / "o")
    assert missing.exit_code == 66 and "subject 's0', column 'disk'" in missing.output
    no_truth = assign(runner, "--model", model, "--samplesheet", cohort, "--truth-column",
                      "nope", "--out", tmp_path / "o")
    assert no_truth.exit_code == 2


def test_outputs_over_inputs_are_refused_before_any_work(runner, model, cohort, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(cohort.parent / "s0", images)
    before = sorted(p.name for p in images.iterdir())
    inside = assign(runner, "--model", model, "--input-dir", images, "--out", images / "res")
    assert inside.exit_code == 2 and "would overwrite the input" in inside.output
    into_model = assign(runner, "--model", model, "--samplesheet", cohort, "--out", model)
    assert into_model.exit_code == 2 and "would overwrite the input" in into_model.output
    train = runner.invoke(cli, ["cluster-unsupervised", "train", "--input-dir", str(images),
                                "--out", str(images / "m")])
    assert train.exit_code == 2, train.output
    assert sorted(p.name for p in images.iterdir()) == before
    assert not (model / "clusters.parquet").exists()


def test_corrupt_weights_are_65_naming_the_file(runner, model, cohort, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = assign(runner, "--model", broken, "--samplesheet", cohort, "--out", tmp_path / "o")
    assert result.exit_code == 65 and f"{weights}: corrupt weights file" in result.output
    assert not (tmp_path / "o" / "clusters.parquet").exists()
