"""segment-cascaded under a memory budget, through the CLI: size options, tiles chosen by
--max-memory, explicit overlap, older model folders, the plan kept on --resume."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medflow.cli import cli
from medflow.segment.cli import segment_cascaded

from .conftest import TINY

torch.set_num_threads(1)

BAD_SIZES = ["0", "-1G", "inf", "nan", "", "12 apples", "1.5x", "G"]


def predict(runner, model, *args):
    return runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(model), *args])


@pytest.mark.parametrize("value", BAD_SIZES)
def test_size_options_refuse_bad_values(runner, cohort, tiny_model, tmp_path, value):
    out = tmp_path / "seg.nii"
    res = predict(runner, tiny_model, "--input", str(cohort.parent / "s0/sa.nii.gz"),
                  "--output", str(out), "--max-memory", value)
    assert res.exit_code == 2 and "--max-memory" in res.output, res.output
    assert not out.exists() and not list(tmp_path.iterdir())
    res = runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort), "--out",
                                           str(tmp_path / "m"), "--memory-budget", value])
    assert res.exit_code == 2 and "--memory-budget" in res.output, res.output
    assert not (tmp_path / "m").exists()


def test_size_units():
    from medflow.segment.cli import ByteSize

    size = ByteSize()
    assert [size.convert(v, None, None) for v in ("16G", "1500M", "2GiB", "512kb", "1024")] \
        == [16 << 30, 1500 << 20, 2 << 30, 512 << 10, 1024]


def test_max_memory_cuts_the_plane_into_tiles_with_the_same_labels(runner, cohort,
                                                                    tiny_model, tmp_path):
    """A --max-memory between the tiled and the untiled estimate makes prediction tile the
    plane (recorded in the sidecar) and the label map is the same as without the limit."""
    from medflow.io import read_image
    from medflow.segment import memory
    from medflow.segment.modelio import load_model
    from medflow.segment.predict import plan_prediction

    image = cohort.parent / "s0/sa.nii.gz"
    model = load_model(tiny_model)[0]
    vol = read_image(image, mmap=True)
    whole, cost = plan_prediction(model, [vol])[:2]
    assert whole.tiles == (1, 1)
    limit = cost.total - 1
    tiled, tiled_cost = memory.plan_layout(model.cfg, vol.shape3,
                                           in_itemsize=vol.data.dtype.itemsize,
                                           in_memory=cost.in_memory, target=limit)
    assert tiled.tiles != (1, 1) and tiled_cost.total <= limit      # the premise
    for name, extra in (("one", []), ("tiled", ["--max-memory", str(limit)])):
        res = predict(runner, tiny_model, "--input", str(image), "--output",
                      str(tmp_path / f"{name}.nii"), *extra)
        assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "tiled.json").read_text())
    assert side["tiles"] == tiled.tiles[0] * tiled.tiles[1] > 1
    assert side["memory_estimate_bytes"]["total"] <= limit
    one = np.asarray(nib.load(tmp_path / "one.nii").dataobj)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "tiled.nii").dataobj), one)
    assert len(np.unique(one)) > 1


def test_an_explicit_overlap_is_kept_on_large_volumes():
    from medflow.segment.memory import plan_layout, windows_run
    from medflow.segment.plan import Fingerprint, plan_cascade

    cfg = plan_cascade(Fingerprint((96,) * 3, (96,) * 3, (0.02,) * 3, 2)).config
    auto, _ = plan_layout(cfg, (640,) * 3, in_itemsize=2)
    given, _ = plan_layout(cfg, (640,) * 3, in_itemsize=2, overlap=0.5)
    assert auto.overlap == 0.125 and (given.overlap, given.overlap1) == (0.5, 0.5)
    assert windows_run(cfg, (640,) * 3, given) == 13**3 > windows_run(cfg, (640,) * 3, auto)


def test_models_from_before_planning_still_window_stage1(runner, cohort, tiny_model,
                                                          tmp_path):
    """Cards without ``stage1_patch`` or ``plan`` (older model folders) still predict; on a
    large input their stage 1 runs bounded windows, never the whole coarse grid."""
    import shutil

    from medflow.segment.config import divisor_of
    from medflow.segment.memory import stage1_grid, stage1_window
    from medflow.segment.plan import Fingerprint, plan_cascade

    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    card = json.loads((old / "model.json").read_text())
    del card["config"]["stage1_patch"], card["plan"]
    (old / "model.json").write_text(json.dumps(card))
    image = str(cohort.parent / "s0/sa.nii.gz")
    for name, model in (("new", tiny_model), ("old", old)):
        res = predict(runner, model, "--input", image, "--output", str(tmp_path / f"{name}.nii"))
        assert res.exit_code == 0, res.output
    assert (tmp_path / "old.nii").read_bytes() == (tmp_path / "new.nii").read_bytes()

    cfg = plan_cascade(Fingerprint((96,) * 3, (96,) * 3, (0.02,) * 3, 2)).config
    cfg = dataclasses.replace(cfg, stage1_patch=None)
    low = stage1_grid(cfg, (640,) * 3)
    window = stage1_window(cfg, low)
    assert window is not None and all(k < n for k, n in zip(window, low))
    assert all(k % d == 0 for k, d in zip(window, divisor_of(cfg.pools1)))
    assert np.prod(window) <= 96**3


def test_resume_keeps_the_plan_it_started_with(runner, cohort, tmp_path):
    one = [a if a != "2" or i != 1 else "1" for i, a in enumerate(TINY)]
    args = ["train", "--samplesheet", str(cohort), "--out", str(tmp_path / "r"), *one,
            "--memory-budget", "1G"]
    res = runner.invoke(segment_cascaded, args)
    assert res.exit_code == 0, res.output
    first = json.loads((tmp_path / "r/model.json").read_text())["plan"]
    res = runner.invoke(segment_cascaded, [*args[:-2], "--resume"])
    assert res.exit_code == 0, res.output
    assert "plan from" not in res.output                  # nothing re-planned
    card = json.loads((tmp_path / "r/model.json").read_text())
    assert card["plan"] == first and card["plan"]["budget_bytes"] == 1 << 30
