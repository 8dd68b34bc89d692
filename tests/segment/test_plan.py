"""Planning from the data fingerprint, and memory estimates (no large array is allocated)."""

from __future__ import annotations

import json

import pytest

from medflow.segment.memory import (GiB, MiB, plan_layout, stage1_grid, stage1_window,
                                    training_bytes, windows_run)
from medflow.segment.plan import Fingerprint, plan_cascade
from medflow.segment.windows import auto_overlap

from .conftest import TINY

MICROCT_96 = Fingerprint((96, 96, 96), (96, 96, 96), (0.0200000005, 0.02, 0.0199999995), 2)
CINE = Fingerprint((184, 160, 11), (184, 160, 11), (1.8, 1.8, 10.0), 20)
MICROCT_640 = Fingerprint((640, 640, 640), (640, 640, 640), (0.02, 0.02, 0.02), 4)


def test_plan_for_the_96_cubed_demo_and_for_cine():
    cfg = plan_cascade(MICROCT_96).config
    assert cfg.patch == (96, 96, 96) and cfg.stage1_factor == (2, 2, 2)
    assert cfg.stage1_patch == (48, 48, 48) and cfg.channels2 == (8, 16, 32, 64, 128)
    cine = plan_cascade(CINE).config
    assert cine.stage1_factor == (2, 2, 1)                   # 10 mm axis never downsampled
    assert cine.patch[2] <= 11 and cine.kernels2[0] == (3, 3, 1)
    assert all(p % d == 0 for p, d in zip(cine.patch, (16, 16, 2)))


def test_plan_is_deterministic_and_respects_the_budget():
    assert plan_cascade(MICROCT_640).config == plan_cascade(MICROCT_640).config
    for budget in (16 * GiB, 700 * MiB, 250 * MiB):
        plan = plan_cascade(MICROCT_96, budget)
        assert plan.train_bytes <= budget and not plan.notes
        assert plan.train_bytes == training_bytes(plan.config, MICROCT_96.median_shape)
    small, big = plan_cascade(MICROCT_96, 250 * MiB), plan_cascade(MICROCT_96)
    assert small.config.patch < big.config.patch
    # large training images: stage 1 coarser, never more coarse voxels than a patch's
    big_img = plan_cascade(MICROCT_640).config
    assert big_img.stage1_factor == (8, 8, 8)
    # an impossible budget is said, not hidden
    assert plan_cascade(MICROCT_96, 10 * MiB).notes


def test_explicit_options_override_the_plan():
    plan = plan_cascade(CINE, patch=(96, 96, 16), channels=16, levels=3, stage1_factor=4)
    cfg = plan.config
    assert cfg.patch == (96, 96, 11)                          # clipped to the data only
    assert cfg.channels2 == (16, 32, 64) and cfg.stage1_factor == (4, 4, 1)
    assert plan.given == ["patch", "stage1_factor", "channels", "levels"]
    over = plan_cascade(MICROCT_96, 50 * MiB, patch=(96, 96, 96), channels=32)
    assert over.config.patch == (96, 96, 96) and "given" in over.line()


def test_train_records_the_plan_in_the_card_and_says_it(runner, cohort, tmp_path):
    from medflow.segment.cli import segment_cascaded

    out = tmp_path / "m"
    res = runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort), "--out",
                                           str(out), *TINY[:-2], "--epochs", "1",
                                           "--memory-budget", "1G"])
    assert res.exit_code == 0, res.output
    assert res.output.count("plan from 8 image(s)") == 1      # 4 subjects x 2 frames
    card = json.loads((out / "model.json").read_text())
    plan = card["plan"]
    assert plan["given"] == ["patch", "channels", "levels"] and plan["budget_bytes"] == GiB
    assert plan["patch"] == card["config"]["patch"]
    assert card["config"]["stage1_patch"] == plan["stage1_patch"]
    assert plan["train_step_estimate_bytes"] <= GiB
    bad = runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort), "--out",
                                           str(out), "--memory-budget", "lots"])
    assert bad.exit_code == 2 and "16G" in bad.output


def test_stage1_at_640_cubed_stays_at_its_training_window():
    """The 96^3-trained demo model on a 640^3 input: stage 1 runs 48^3 windows (the grid it
    was trained on), never the 320^3 grid; the whole plan fits 2 GiB without tiles."""
    cfg = plan_cascade(MICROCT_96).config
    shape = (640, 640, 640)
    assert stage1_grid(cfg, shape) == (320, 320, 320)
    assert stage1_window(cfg, stage1_grid(cfg, shape)) == (48, 48, 48)
    assert stage1_window(cfg, stage1_grid(cfg, (96, 96, 96))) is None  # as in training
    layout, cost = plan_layout(cfg, shape, in_itemsize=2)
    assert layout.stage1_window == (48, 48, 48) and layout.overlap == 0.125
    assert cost.total <= 2 * GiB
    assert windows_run(cfg, shape, layout) == 512


def test_peak_depends_on_patch_and_budget_not_volume():
    cfg = plan_cascade(MICROCT_96).config
    costs = []
    for n in (640, 1280, 2560):
        layout, cost = plan_layout(cfg, (n, n, n), in_itemsize=2, target=GiB)
        assert cost.total <= GiB, (n, layout)
        costs.append(cost.fixed)
    assert len(set(costs)) == 1
    tiled, _ = plan_layout(cfg, (2560, 2560, 640), in_itemsize=2, target=GiB)
    assert tiled.tiles[0] * tiled.tiles[1] > 1


def test_default_overlap_for_large_volumes():
    assert auto_overlap((184, 160, 11), (160, 160, 10), 0.5) == 0.5
    assert auto_overlap((240, 240, 155), (96, 96, 96), 0.5) == 0.5
    assert auto_overlap((640, 640, 640), (128, 128, 128), 0.5) == 0.25
    assert auto_overlap((640, 640, 640), (96, 96, 96), 0.5) == 0.125
    assert auto_overlap((640, 640, 640), (96, 96, 96), 0.1) == 0.1   # never raised
