"""`medflow segment-cascaded train|predict` through CliRunner: outputs, bytes, errors."""

from __future__ import annotations

import json
import pickle
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medflow.cli import cli
from medflow.io import Volume, make_affine, write_nifti
from medflow.segment.cli import segment_cascaded

from .conftest import TINY, train_tiny

torch.set_num_threads(1)


def predict(runner, model, *args):
    return runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(model), *args])


def test_help_has_examples_and_verbosity(runner):
    for sub in ([], ["train"], ["predict"]):
        res = runner.invoke(cli, ["segment-cascaded", *sub, "--help"])
        assert res.exit_code == 0
        assert "Example" in res.output and "--verbose" in res.output and "--quiet" in res.output


def test_train_writes_model_card_weights_and_curve(tiny_model):
    card = json.loads((tiny_model / "model.json").read_text())
    assert card["labels"] == [0, 1, 2, 3]
    assert card["spacing_mm"] == pytest.approx([1.8, 1.8, 10.0])
    assert card["config"]["patch"] == [16, 16, 6]
    assert len(card["training"]["data_sha256"]) == 64
    assert set(card["validation"]["dice"]) == {"LV", "myocardium", "RV"}
    assert card["training"]["samples"] == 8             # 4 subjects x 2 labelled frames
    curve = pd.read_parquet(tiny_model / "training_curve.parquet")
    assert list(curve["epoch"]) == [1, 2] and "val_dice_mean" in curve
    assert (tiny_model / "training_curve.png").stat().st_size > 0


def test_same_seed_same_weights(runner, cohort, tiny_model, tmp_path):
    res = runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort),
                                           "--out", str(tmp_path / "again"), *TINY])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "again/model.safetensors").read_bytes() == \
        (tiny_model / "model.safetensors").read_bytes()


def test_resume_continues_to_the_same_weights(runner, cohort, tiny_model, tmp_path):
    args = ["train", "--samplesheet", str(cohort), "--out", str(tmp_path / "r"), *TINY]
    one = [a if a != "2" or i != 1 else "1" for i, a in enumerate(TINY)]
    assert one[1] == "1"
    res = runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort), "--out",
                                           str(tmp_path / "r"), *one])
    assert res.exit_code == 0, res.output
    res = runner.invoke(segment_cascaded, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r/model.safetensors").read_bytes() == \
        (tiny_model / "model.safetensors").read_bytes()


def test_predict_cine_keeps_geometry_and_is_reproducible(runner, cohort, tiny_model, tmp_path):
    image = cohort.parent / "s0/sa.nii.gz"
    outs = []
    for run in ("a", "b"):
        seg, prob, unc = (tmp_path / run / n for n in ("seg.nii.gz", "p.nii", "u.nii.gz"))
        res = predict(runner, tiny_model, "--input", str(image), "--output", str(seg),
                      "--probabilities", str(prob), "--uncertainty", str(unc), "--tta", "2",
                      "--mc-samples", "2", "--seed", "5")
        assert res.exit_code == 0, res.output
        outs.append([p.read_bytes() for p in (seg, prob, unc)])
    assert outs[0] == outs[1]
    src = nib.load(image)
    seg = nib.load(tmp_path / "a/seg.nii.gz")
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    prob = np.asarray(nib.load(tmp_path / "a/p.nii").dataobj)
    assert prob.shape == (*src.shape, 4) and np.allclose(prob.sum(-1), 1, atol=1e-4)
    unc = np.asarray(nib.load(tmp_path / "a/u.nii.gz").dataobj)
    assert unc.shape == src.shape and unc.max() <= 100
    sidecar = json.loads((tmp_path / "a/seg.json").read_text())
    assert sidecar["frames"] == 2 and sidecar["parameters"]["tta"] == 2


def test_predict_resamples_off_spacing_input_back(runner, tiny_model, tiny_heart, tmp_path):
    img, _ = tiny_heart(np.random.default_rng(9), frames=1)
    zoomed = np.repeat(img[..., 0], 2, axis=0)              # 0.9 mm along x
    affine = make_affine((0.9, 1.8, 10.0), origin=(3.0, -2.0, 1.0))
    write_nifti(Volume(zoomed, affine), tmp_path / "x.nii.gz")
    res = predict(runner, tiny_model, "--input", str(tmp_path / "x.nii.gz"), "--output",
                  str(tmp_path / "seg.nii"))
    assert res.exit_code == 0, res.output
    seg = nib.load(tmp_path / "seg.nii")
    assert seg.shape == zoomed.shape and np.allclose(seg.affine, affine)
    assert json.loads((tmp_path / "seg.json").read_text())["resampled_to_model_spacing"]


def test_batch_mode(runner, cohort, tiny_model, tmp_path):
    res = predict(runner, tiny_model, "--samplesheet", str(cohort), "--outdir",
                  str(tmp_path / "res"), "--save-uncertainty")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "res/s3/s3_sa_seg.nii.gz").exists()
    assert (tmp_path / "res/s3/s3_sa_unc.nii.gz").exists()
    assert predict(runner, tiny_model, "--samplesheet", str(cohort)).exit_code == 2


def test_loading_weights_never_unpickles(tiny_model, monkeypatch):
    from medflow.segment.modelio import load_model

    def refuse(*a, **k):
        raise AssertionError("unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model, card = load_model(tiny_model)
    assert card["format"] == "medflow-segment-cascaded" and model.cfg.patch == (16, 16, 6)


def test_bad_model_folders(runner, cohort, tiny_model, tmp_path):
    image = str(cohort.parent / "s0/sa.nii.gz")
    args = ["--input", image, "--output", str(tmp_path / "o.nii.gz")]
    assert predict(runner, tmp_path / "nothing", *args).exit_code == 66
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    assert predict(runner, broken, *args).exit_code == 66
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    res = predict(runner, broken, *args)
    assert res.exit_code == 65 and "corrupt weights" in res.output
    shutil.copy(tiny_model / "model.safetensors", broken / "model.safetensors")
    (broken / "model.json").write_text("{not json")
    assert predict(runner, broken, *args).exit_code == 65
    card = json.loads((tiny_model / "model.json").read_text())
    card["config"]["channels2"] = [8, 16]
    (broken / "model.json").write_text(json.dumps(card))
    res = predict(runner, broken, *args)
    assert res.exit_code == 65 and "do not fit" in res.output
    assert not (tmp_path / "o.nii.gz").exists()


def test_bad_images(runner, cohort, tiny_model, tmp_path):
    image = str(cohort.parent / "s0/sa.nii.gz")
    out = ["--output", str(tmp_path / "o.nii.gz")]
    res = predict(runner, tiny_model, "--input", image, "--input", image, *out)
    assert res.exit_code == 65 and "channel" in res.output
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii")
    assert predict(runner, tiny_model, "--input", str(tmp_path / "flat.nii"), *out).exit_code == 65
    assert predict(runner, tiny_model, "--input", str(tmp_path / "no.nii"), *out).exit_code == 66
    assert not (tmp_path / "o.nii.gz").exists()


def test_gpu_out_of_memory_exits_75(runner, cohort, tiny_model, tmp_path, monkeypatch):
    import medflow.segment.workflow as wf

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(wf, "predict_files", oom)
    res = predict(runner, tiny_model, "--input", str(cohort.parent / "s0/sa.nii.gz"),
                  "--output", str(tmp_path / "o.nii.gz"))
    assert res.exit_code == 75 and "out of memory" in res.output


def test_train_augment_modes_and_single_stage_run(runner, cohort, tmp_path):
    for extra in (["--augment", "gin-ipa"], ["--augment", "none", "--single-stage"]):
        res = train_tiny(runner, cohort, tmp_path / extra[1], "1", *extra)
        assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "none/model.json").read_text())
    assert card["config"]["stages"] == 1


def test_region_model_writes_one_uncertainty_map_per_region(runner, tmp_path):
    from medflow.segment.cascade import Cascade
    from medflow.segment.modelio import save_model

    from .test_model import tiny_config

    cfg = tiny_config(labels=(0, 1, 2, 4), in_channels=2, spacing=(1.0, 1.0, 1.0),
                      regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)})
    torch.manual_seed(0)
    save_model(tmp_path / "m", Cascade(cfg), {"labels": [0, 1, 2, 4], "training": {}})
    rng = np.random.default_rng(0)
    for name in ("t1", "flair"):
        write_nifti(Volume(rng.normal(size=(12, 10, 6)).astype(np.float32), np.eye(4)),
                    tmp_path / f"{name}.nii.gz")
    res = predict(runner, tmp_path / "m", "--input", str(tmp_path / "t1.nii.gz"), "--input",
                  str(tmp_path / "flair.nii.gz"), "--output", str(tmp_path / "seg.nii.gz"),
                  "--uncertainty", str(tmp_path / "unc.nii.gz"))
    assert res.exit_code == 0, res.output
    for region in ("wt", "tc", "et"):
        unc = np.asarray(nib.load(tmp_path / f"unc_{region}.nii.gz").dataobj)
        assert unc.shape == (12, 10, 6) and unc.max() <= 100
    assert set(np.unique(np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj))) <= {0, 1, 2, 4}


def test_sidecar_reports_windows_threads_and_memory(runner, cohort, tiny_model, tmp_path):
    from medflow.segment.memory import plan_layout, windows_run
    from medflow.segment.modelio import load_model

    image = cohort.parent / "s0/sa.nii.gz"
    res = predict(runner, tiny_model, "--input", str(image), "--output",
                  str(tmp_path / "seg.nii"), "--max-memory", "8G")
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "seg.json").read_text())
    cfg = load_model(tiny_model)[0].cfg
    shape = nib.load(image).shape[:3]
    per_frame = windows_run(cfg, shape, plan_layout(cfg, shape)[0])
    assert side["windows_per_frame"] == per_frame and side["windows"] == 2 * per_frame
    assert side["threads"] == torch.get_num_threads() and side["tiles"] == 1
    assert side["overlap"] == cfg.overlap and side["parameters"]["max_memory_bytes"] == 8 << 30
    assert 0 < side["memory_estimate_bytes"]["total"] < 8 << 30
    res = predict(runner, tiny_model, "--input", str(image), "--output",
                  str(tmp_path / "o.nii"), "--overlap", "0.25")
    assert json.loads((tmp_path / "o.json").read_text())["overlap"] == 0.25


def test_max_memory_refuses_with_the_estimate(runner, cohort, tiny_model, tmp_path,
                                              monkeypatch):
    from medflow.io import read_image
    from medflow.segment import memory
    from medflow.segment.modelio import load_model
    from medflow.segment.predict import plan_prediction

    image = cohort.parent / "s0/sa.nii.gz"
    out = tmp_path / "seg.nii.gz"
    res = predict(runner, tiny_model, "--input", str(image), "--output", str(out),
                  "--max-memory", "100M")
    assert res.exit_code == 2 and "--max-memory" in res.output and "MiB" in res.output
    assert not out.exists()
    # the model fits (no interpreter counted), the whole-volume arrays do not: 65
    monkeypatch.setattr(memory, "BASE_BYTES", 0)
    vol = read_image(image, mmap=True)
    model = load_model(tiny_model)[0]
    _, cost, grid = plan_prediction(model, [vol], outputs_in_memory=vol.data.size)
    assert cost.in_memory > 0
    _, least = memory.plan_layout(model.cfg, grid, in_itemsize=vol.data.dtype.itemsize,
                                  in_memory=cost.in_memory, target=0)   # smallest tiles
    limit = least.fixed + least.streaming + least.in_memory // 2
    res = predict(runner, tiny_model, "--input", str(image), "--output", str(out),
                  "--max-memory", str(limit))
    assert res.exit_code == 65 and "whole-volume arrays" in res.output
    assert str(image) in res.output and not out.exists()
    res = predict(runner, tiny_model, "--input", str(image), "--output", str(out),
                  "--max-memory", "1.5x")
    assert res.exit_code == 2


def test_predict_never_writes_over_an_input(runner, cohort, tiny_model, tmp_path):
    image = tmp_path / "sa.nii.gz"
    shutil.copy(cohort.parent / "s0/sa.nii.gz", image)
    before = image.read_bytes()
    for args in (["--output", str(image)],
                 ["--output", str(tmp_path / "seg.nii.gz"), "--uncertainty", str(image)],
                 ["--output", str(tmp_path / "seg.nii.gz"), "--probabilities", str(image)]):
        res = predict(runner, tiny_model, "--input", str(image), *args)
        assert res.exit_code == 2 and "would overwrite the input" in res.output, res.output
        assert image.read_bytes() == before
    # the model's card: no image output can take its name (NIfTI only), also exit 2
    card = (tiny_model / "model.json").read_bytes()
    res = predict(runner, tiny_model, "--input", str(image), "--output",
                  str(tiny_model / "model.json"))
    assert res.exit_code == 2 and "NIfTI" in res.output, res.output
    assert (tiny_model / "model.json").read_bytes() == card
    assert not (tmp_path / "seg.nii.gz").exists()
    # batch mode: an image stored where a subject's output would go
    sheet = tmp_path / "sheet.csv"
    target = tmp_path / "res" / "s0" / "s0_sa_seg.nii.gz"
    target.parent.mkdir(parents=True)
    shutil.copy(image, target)
    sheet.write_text(f"subject,sa\ns0,{target}\n")
    res = predict(runner, tiny_model, "--samplesheet", str(sheet), "--outdir",
                  str(tmp_path / "res"))
    assert res.exit_code == 2 and "would overwrite the input" in res.output, res.output
    assert target.read_bytes() == before


def test_train_never_writes_over_an_input(runner, cohort, tmp_path):
    shutil.copytree(cohort.parent, tmp_path / "c")
    sheet = tmp_path / "c" / "samplesheet.csv"
    sheet.write_text(sheet.read_text().replace("s0/sa.nii.gz", "model.json", 1))
    shutil.copy(tmp_path / "c" / "s0" / "sa.nii.gz", tmp_path / "c" / "model.json")
    res = runner.invoke(cli, ["segment-cascaded", "train", "--samplesheet", str(sheet),
                              "--out", str(tmp_path / "c"), *TINY])
    assert res.exit_code == 2 and "would overwrite the input" in res.output, res.output


@pytest.mark.parametrize("subject", ["..", "."])
def test_batch_refuses_subject_ids_that_leave_the_folder(runner, cohort, tiny_model, tmp_path,
                                                         subject):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"subject,sa\n{subject},{cohort.parent / 's0/sa.nii.gz'}\n")
    res = predict(runner, tiny_model, "--samplesheet", str(sheet), "--outdir",
                  str(tmp_path / "res" / "deep"))
    assert res.exit_code == 65 and "row 2, column 'subject'" in res.output, res.output
    assert not list(tmp_path.rglob("*_seg.nii.gz"))
