"""The motion stage: only with --motion, after segment; its task fits the mesh to the
segment stage's short-axis output; its phenotypes land in motion.parquet and, with the
plain names beside the ``_voxel`` twins and ``truth.json``, in cohort.parquet; the report
shows mesh against truth beside voxel counting, and the QC table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io.tables import write_table
from medflow.pipeline.stages import get_stage

CARDIAC = {"labels": [0, 1, 2, 3], "label_names": ["background", "LV", "myocardium", "RV"]}


def test_motion_only_with_the_flag_and_after_segment(cohort, tiny_model, tmp_path):
    from medflow.pipeline.plan import motion_task
    from medflow.pipeline.runner import Options, absolute_paths, prepare, selected_stages

    opts = absolute_paths(Options(cohort, tmp_path / "r", tiny_model))
    assert "motion" not in [s.name for s in selected_stages(opts)]
    sheet = pd.read_csv(cohort)
    sheet["seg_la_4ch"] = [sheet["seg_sa"][0], None, None]  # any label file will do here
    sheet.to_csv(cohort, index=False)
    opts = absolute_paths(Options(cohort, tmp_path / "r", tiny_model, motion=True))
    names = [s.name for s in selected_stages(opts)]
    assert names.index("segment") < names.index("motion")
    ctx = prepare(opts)
    rows = ctx.sheet.to_dict("records")
    task = motion_task(ctx, rows[0])
    seg = tmp_path / "r" / "segment" / "s0" / "s0_sa_seg.nii.gz"
    la = Path(rows[0]["seg_la_4ch"])
    assert task.inputs == [seg, la]
    (command,) = task.commands
    assert command[:2] == ["estimate-motion-mesh", "fit"]
    assert command[command.index("--sa") + 1] == str(seg)
    assert command[command.index("--la-4ch") + 1] == str(la) and "--la-2ch" not in command
    assert command[command.index("--prefix") + 1] == "s0_sa"
    assert command[command.index("--device") + 1] == "cpu"
    names = {p.name for p in task.outputs}
    assert names == {"s0_sa_phenotypes.parquet", "s0_sa_frames.parquet",
                     "s0_sa_vertices.parquet", "s0_sa_displacements.npy", "s0_sa_motion.json"}
    assert all(p.parent == tmp_path / "r" / "motion" / "s0" for p in task.outputs)
    # the command line is one Click accepts
    group = cli.get_command(None, "estimate-motion-mesh")
    fit = group.get_command(None, "fit")
    fit.make_context("fit", command[2:])
    # without a long-axis segmentation the subject is skipped, with the reason
    reason = motion_task(ctx, rows[1])
    assert isinstance(reason, str) and "no long-axis segmentation" in reason


def test_motion_model_makes_the_stage_predict(cohort, tiny_model, tmp_path):
    """--motion-model turns the stage on and swaps the fit for `predict --model`; the
    model's files are task inputs (a new model re-runs the stage under --resume); a bad
    model folder stops the run before any task."""
    from medflow.errors import InvalidDataError
    from medflow.motion.fit import FitOptions
    from medflow.motion.modelio import save_model
    from medflow.motion.network import MotionNet, NetConfig
    from medflow.pipeline.plan import motion_task
    from medflow.pipeline.runner import Options, absolute_paths, prepare, selected_stages

    net_dir = save_model(tmp_path / "motion_model", MotionNet(NetConfig()),
                         {"fit_options": FitOptions().to_dict()})
    sheet = pd.read_csv(cohort)
    sheet["seg_la_2ch"] = [sheet["seg_sa"][0], None, None]
    sheet.to_csv(cohort, index=False)
    opts = absolute_paths(Options(cohort, tmp_path / "r", tiny_model, motion_model=net_dir))
    assert "motion" in [s.name for s in selected_stages(opts)]
    ctx = prepare(opts)
    task = motion_task(ctx, ctx.sheet.to_dict("records")[0])
    (command,) = task.commands
    assert command[:4] == ["estimate-motion-mesh", "predict", "--model", str(net_dir)]
    assert net_dir / "model.safetensors" in task.inputs and net_dir / "model.json" in task.inputs
    group = cli.get_command(None, "estimate-motion-mesh")
    group.get_command(None, "predict").make_context("predict", command[2:])
    (net_dir / "model.json").write_text("{")
    with pytest.raises(InvalidDataError, match="model.json"):
        prepare(opts)


def _phenotype_row(lvef: float, qc: bool) -> dict:
    return {"lvedv_ml": 120.0, "lvesv_ml": 120.0 * (1 - lvef / 100), "lvsv_ml": 1.2 * lvef,
            "lvef_pct": lvef, "lvm_g": 110.0, "rvedv_ml": 130.0, "rvesv_ml": 65.0,
            "rvsv_ml": 65.0, "rvef_pct": 50.0, "ecc_global_pct": -15.0,
            "err_global_pct": 30.0, "ell_global_pct": -12.0, "wt_global_mm": 8.0,
            "ecc_aha01_pct": -14.0, "lvef_voxel_pct": 20.0, "fit_rms_sa_mm": 0.8,
            "qc_pass": qc, "qc_reasons": "" if qc else "lvef_pct 30.0 outside 40-80"}


def _results_with_motion(tmp_path: Path) -> tuple[Path, Path]:
    """A results folder with the motion stage's per-subject phenotype tables (two
    subjects) and a samplesheet whose truth.json files the cohort table reads."""
    results, rows = tmp_path / "results", []
    for subject, lvef, qc in (("s0", 55.0, True), ("s1", 30.0, False)):
        folder = results / "motion" / subject
        folder.mkdir(parents=True)
        write_table(pd.DataFrame([_phenotype_row(lvef, qc)]),
                    folder / f"{subject}_sa_phenotypes.parquet")
        write_table(pd.DataFrame({"frame": [0, 1, 2], "lv_ml": [120.0, 80.0, 110.0],
                                  "myo_ml": [100.0] * 3, "rv_ml": [130.0, 70.0, 120.0]}),
                    folder / f"{subject}_sa_frames.parquet")
        truth = tmp_path / f"{subject}_truth.json"
        truth.write_text(json.dumps({"lvef_pct": 50.0, "lvedv_ml": 100.0,
                                     "ecc_global_pct": -18.0, "wt_global_mm": 9.0}))
        rows.append(f"{subject},{truth},{truth}")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,sa,truth\n" + "\n".join(rows) + "\n")
    return results, sheet


def test_cohort_table_carries_mesh_phenotypes_qc_and_truth(tmp_path):
    from medflow.pipeline.tables import collect

    results, sheet = _results_with_motion(tmp_path)
    cohort = collect(results, {"s0": "ok", "s1": "ok"}, sheet)
    motion = pd.read_parquet(results / "motion" / get_stage("motion").table)
    assert list(motion["subject"]) == ["s0", "s1"] and "ecc_aha01_pct" in motion
    assert list(cohort["lvef_pct"]) == [55.0, 30.0]
    assert list(cohort["motion_qc_pass"]) == [True, False]
    assert cohort.loc[1, "motion_qc_reasons"] == "lvef_pct 30.0 outside 40-80"
    assert list(cohort["lvef_true_pct"]) == [50.0, 50.0]
    assert list(cohort["ecc_global_true_pct"]) == [-18.0, -18.0]
    assert list(cohort["wt_global_true_mm"]) == [9.0, 9.0]
    # per-segment columns stay in motion.parquet; no second qc_pass column
    assert "ecc_aha01_pct" not in cohort and "qc_pass" not in cohort
    # a failed subject keeps its row, without values
    cohort = collect(results, {"s0": "ok", "s1": "failed in motion (exit 65): x"}, sheet)
    assert cohort["lvef_pct"].isna().tolist() == [False, True]


def test_report_section_mesh_against_truth_and_qc(tmp_path):
    from medflow.pipeline.tables import collect
    from medflow.report.motion import truth_table
    from medflow.report.render import render_report

    results, sheet = _results_with_motion(tmp_path)
    cohort = collect(results, {"s0": "ok", "s1": "ok"}, sheet)
    cohort["lvef_voxel_pct"] = [20.0, 20.0]  # as the segment stage writes it
    errors = truth_table(cohort).set_index("phenotype")
    assert errors.loc["lvef_pct", "mesh mean error"] == pytest.approx(-7.5)  # +5, -20
    assert errors.loc["lvef_pct", "mesh mean absolute error"] == pytest.approx(12.5)
    assert errors.loc["lvef_pct", "voxel mean absolute error"] == pytest.approx(30.0)
    assert errors.loc["lvedv_ml", "mesh mean absolute error %"] == pytest.approx(20.0)
    assert errors.loc["ecc_global_pct", "mesh mean error"] == pytest.approx(3.0)
    html = (render_report(results)).read_text()
    section = html[html.index("<h2>motion</h2>"):]
    assert "measured against truth" in section and "1 of 2 meshes fail QC" in section
    assert "lvef_pct 30.0 outside 40-80" in section
    for png in ("motion_truth.png", "motion_phenotypes.png", "motion_volumes.png"):
        assert f'src="{png}"' in section and (results / "report" / png).is_file()


def test_no_motion_results_no_section(tmp_path):
    from medflow.report.motion import motion_section

    assert motion_section(tmp_path, tmp_path, pd.DataFrame({"subject": []}), str, str) == []


@pytest.mark.slow
def test_motion_stage_runs_on_the_segment_output(runner, heart, tmp_path):
    """End to end through the runner: the mesh fitted to a 2-frame phantom short-axis
    segmentation standing where the segment stage writes it and the samplesheet's
    4-chamber segmentation (about 15 s CPU)."""
    heart_sa, heart_la = heart
    out = tmp_path / "results"
    seg = out / "segment" / "s0" / "s0_sa_seg.nii.gz"
    seg.parent.mkdir(parents=True)
    shutil.copy(heart_sa, seg)
    seg.with_name("s0_sa_seg.json").write_text(json.dumps(CARDIAC))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"lvef_pct": 40.0}))
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(f"subject,sa,seg_la_4ch,truth\ns0,{heart_sa},{heart_la},{truth}\n")
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--motion", "--stages", "motion"])
    assert res.exit_code == 0, res.output
    folder = out / "motion" / "s0"
    assert len(list((folder / "s0_sa_meshes").glob("frame_*.ply"))) == 2
    cohort = pd.read_parquet(out / "cohort.parquet")
    row = cohort.iloc[0]
    assert 60 < row["lvedv_ml"] < 200 and np.isfinite(row["lvef_pct"])
    assert np.isfinite(row["lvef_voxel_pct"]) and row["lvef_true_pct"] == 40.0
    assert "fit_rms_sa_mm" in cohort and "fit_rms_la_4ch_mm" in cohort
    assert "motion_qc_pass" in cohort
    assert "<h2>motion</h2>" in (out / "report" / "index.html").read_text()


@pytest.fixture
def heart(tmp_path):
    """2-frame short-axis and 4-chamber cine segmentations of the phantom heart."""
    import importlib.util

    path = Path(__file__).parents[1] / "motion" / "conftest.py"  # tests/motion's writer
    spec = importlib.util.spec_from_file_location("motion_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, paths = module.write_heart(tmp_path, frames=2, drop="la_2ch")
    return paths["sa"], paths["la_4ch"]
