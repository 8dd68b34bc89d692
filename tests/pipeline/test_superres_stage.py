"""The superres stage: with --superres-model it runs after segment on every subject and
fills superres.parquet, the cohort table and the report; without a prior it is not run;
a folder that is not a shape prior stops the run before any task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli


@pytest.fixture(scope="module")
def coarse_prior(tmp_path_factory):
    """A shape prior trained for one epoch on one phantom heart: the stage's plumbing is
    under test here, not the prior (tests/superres/ test the method)."""
    import torch

    from medflow.io import make_affine
    from medflow.phantom.heart import HeartModel
    from medflow.superres.geometry import voxel_points
    from medflow.superres.modelio import save_model
    from medflow.superres.prior import PriorConfig
    from medflow.superres.shapes import Shape
    from medflow.superres.train_prior import train_prior

    torch.set_num_threads(1)
    heart = HeartModel.from_seed(0)
    affine = make_affine((3.0,) * 3, heart.rot, heart.to_world(np.array([[-50.0, -70, -110]]))[0])
    shape = (60, 48, 45)
    labels = heart.labels_at(voxel_points(affine, shape).reshape(-1, 3), 0.0).reshape(shape)
    cfg = PriorConfig(shape=(16, 16, 16), spacing_mm=9.0, origin_mm=(-60.0, -70.0, -80.0),
                      latent=2, channels=(2, 2, 2), head_channels=2)
    net, _, _ = train_prior([Shape.from_labels(labels, affine, cfg.labels)], [], cfg,
                            epochs=1, batch=1, points=500)
    folder = tmp_path_factory.mktemp("prior") / "prior"
    save_model(folder, net, "latent", {"training": {}, "validation": {}})
    return folder


def test_superres_stage_after_segment(runner, cohort, tiny_model, coarse_prior, tmp_path):
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(cohort), "--outdir", str(out),
                              "--model", str(tiny_model), "--superres-model",
                              str(coarse_prior), "--stages", "segment,superres"])
    assert res.exit_code == 0, res.output
    for s in ("s0", "s1", "s2"):
        for frame in ("ed", "es"):
            assert (out / "superres" / s / f"{s}_sa_hr_{frame}.nii.gz").exists()
            meta = json.loads((out / "superres" / s / f"{s}_sa_hr_{frame}.json").read_text())
            assert meta["inputs"]["input"]["path"].endswith(f"segment/{s}/{s}_sa_seg.nii.gz")
            assert len(meta["result"]["slice_shifts_mm"]) == 6
    table = pd.read_parquet(out / "superres" / "superres.parquet")
    assert len(table) == 6 and set(table["frame"]) == {"ed", "es"}
    cohort_table = pd.read_parquet(out / "cohort.parquet")
    assert {"superres_lv_ed_ml", "superres_lv_ef_pct", "superres_shift_mean_mm"} <= set(
        cohort_table.columns)
    html = (out / "report" / "index.html").read_text()
    assert "<h2>superres</h2>" in html and 'src="superres_s0.png"' in html
    assert (out / "report" / "superres_s0.png").is_file()


def test_no_prior_no_stage_and_a_wrong_prior_stops_the_run(runner, cohort, tiny_model,
                                                           tmp_path):
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(cohort), "--outdir", str(out),
                              "--model", str(tiny_model), "--stages", "segment,superres"])
    assert res.exit_code == 0, res.output
    trace = pd.read_parquet(out / "pipeline_info" / "trace.parquet")
    assert not trace["stage"].eq("superres").any()
    res = runner.invoke(cli, ["pipeline", "--input", str(cohort), "--outdir",
                              str(tmp_path / "r2"), "--model", str(tiny_model),
                              "--superres-model", str(tiny_model)])
    assert res.exit_code == 65 and "not a shape prior" in res.output
    assert not (tmp_path / "r2").exists()


def test_missing_prior_folder_66_and_both_prior_options_2(runner, cohort, tiny_model,
                                                          coarse_prior, tmp_path):
    base = ["pipeline", "--input", str(cohort), "--model", str(tiny_model)]
    res = runner.invoke(cli, [*base, "--outdir", str(tmp_path / "r"), "--superres-model",
                              str(tmp_path / "nope")])
    assert res.exit_code == 66 and "shape prior folder not found" in res.output
    res = runner.invoke(cli, [*base, "--outdir", str(tmp_path / "r"), "--superres-model",
                              str(coarse_prior), "--train-prior"])
    assert res.exit_code == 2 and "not both" in res.output
    assert not (tmp_path / "r").exists()


def test_train_prior_needs_high_resolution_labels(runner, cohort, tiny_model, tmp_path):
    res = runner.invoke(cli, ["pipeline", "--input", str(cohort), "--outdir",
                              str(tmp_path / "r"), "--model", str(tiny_model),
                              "--train-prior"])
    assert res.exit_code == 65 and "gt_ed" in res.output and str(cohort) in res.output
    assert not (tmp_path / "r").exists()


def test_train_prior_plans_the_prior_then_superres_with_it(cohort, tiny_model, tmp_path):
    """--train-prior: the cohort task trains on the subjects with gt_ed and gt_es, and
    every subject's superres task reads the prior it writes (planned before it exists, so
    the output check covers the superres outputs too)."""
    from medflow.pipeline import guard
    from medflow.pipeline.runner import Options, absolute_paths, prepare, selected_stages

    sheet = pd.read_csv(cohort)
    sheet["gt_ed"] = sheet["seg_sa"]
    sheet["gt_es"] = [sheet["seg_sa"][0], None, sheet["seg_sa"][2]]
    sheet.to_csv(cohort, index=False)
    opts = absolute_paths(Options(cohort, tmp_path / "r", tiny_model,
                                  train_prior=True))
    stages = selected_stages(opts)
    names = [s.name for s in stages]
    assert names[names.index("train_prior"):][:2] == ["train_prior", "superres"]
    ctx = prepare(opts)
    tasks = guard.task_plan(ctx, stages)
    prior = [t for t in tasks if t.stage == "train_prior"]
    assert len(prior) == 1 and list(prior[0].sheet["subject"]) == ["s0", "s2"]
    superres = [t for t in tasks if t.stage == "superres"]
    assert len(superres) == 3
    assert all(str(tmp_path / "r" / "train_prior" / "prior") in t.commands[0]
               for t in superres)
    plain = [s.name for s in selected_stages(Options(cohort, tmp_path / "r", tiny_model))]
    assert "train_prior" not in plain and "superres" not in plain


def test_superres_task_passes_the_rows_long_axis_segmentations(cohort, tiny_model,
                                                                coarse_prior, tmp_path):
    """A row's seg_la_2ch / seg_la_4ch become --la-2ch / --la-4ch (the shifts are then
    absolute and refined on them) and task inputs (--resume re-runs on a new one); a row
    without them runs on the short axis alone."""
    from medflow.pipeline.plan import superres_task
    from medflow.pipeline.runner import Options, absolute_paths, prepare

    sheet = pd.read_csv(cohort)
    sheet["seg_la_4ch"] = [sheet["seg_sa"][0], None, None]  # any label file will do here
    sheet.to_csv(cohort, index=False)
    opts = absolute_paths(Options(cohort, tmp_path / "r", tiny_model,
                                  superres_model=coarse_prior))
    ctx = prepare(opts)
    rows = ctx.sheet.to_dict("records")
    with_la, without = superres_task(ctx, rows[0]), superres_task(ctx, rows[1])
    (command,) = with_la.commands
    la = Path(rows[0]["seg_la_4ch"])
    assert command[command.index("--la-4ch") + 1] == str(la) and "--la-2ch" not in command
    assert la in with_la.inputs
    (plain,) = without.commands
    assert not any(w.startswith("--la-") for w in plain)
    predict = cli.get_command(None, "super-resolve").get_command(None, "predict")
    predict.make_context("predict", command[2:])  # a command line Click accepts
