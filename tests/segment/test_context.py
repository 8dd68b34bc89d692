"""Temporal context: which frames feed the network, in which order, at training and at
prediction; models that need a cine refuse a 3D frame; phase-weighted frame sampling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medflow.cli import cli
from medflow.errors import InvalidDataError
from medflow.io import Volume, write_nifti
from medflow.segment.augment import apply_gin, sample_gin
from medflow.segment.cascade import Cascade
from medflow.segment.config import CascadeConfig
from medflow.segment.context import check_cine, context_index, frame_sources, parse_context
from medflow.segment.data import Sample, load_training_samples
from medflow.segment.modelio import load_model, save_model
from medflow.segment.train import epoch_order, phase_weights

from .conftest import affine

torch.set_num_threads(1)


def test_parse_context_and_frame_indices():
    assert parse_context("ed, -1,+2") == ("ed", "-1", "+2")
    assert parse_context("1") == ("+1",) and parse_context("none") == () == parse_context("")
    for bad in ("es", "0", "ed,ed", "-1,-1"):
        with pytest.raises(ValueError):
            parse_context(bad)
    assert context_index("-1", 0, 10) == 9 and context_index("+2", 9, 10) == 1
    assert frame_sources(("ed", "+1"), 4, 10) == [4, 0, 5]
    check_cine((), 1)
    with pytest.raises(InvalidDataError, match="whole 3D\\+time cine"):
        check_cine(("ed",), 1, "x.nii.gz")


def test_config_counts_context_channels_and_round_trips():
    cfg = CascadeConfig(in_channels=2, context_frames=("ed",), channels1=(4, 8),
                        channels2=(4, 8), pools1=((2, 2, 1),), pools2=((2, 2, 1),),
                        kernels1=((3, 3, 3),) * 2, kernels2=((3, 3, 3),) * 2, patch=(8, 8, 4))
    assert cfg.net_channels == 4
    back = CascadeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.context_frames == ("ed",)
    old = cfg.to_dict()
    del old["context_frames"]                  # a card written before context existed
    assert CascadeConfig.from_dict(old).context_frames == ()
    model = Cascade(cfg)
    logits, _ = model.forward_stage1(torch.zeros(1, 4, 16, 16, 4))
    assert logits.shape[1] == 4


def cine(frames=4):
    """(12, 10, 4, frames) cine whose frame t holds the value 10 t (+ a gradient)."""
    base = np.arange(12 * 10 * 4, dtype=np.float32).reshape(12, 10, 4) / 480
    return np.stack([base + 10 * t for t in range(frames)], axis=-1)


def test_training_samples_hold_the_frame_then_its_context(tmp_path):
    img, lab = cine(), np.ones((12, 10, 4, 4), np.uint8)
    write_nifti(Volume(img, affine()), tmp_path / "sa.nii.gz")
    write_nifti(Volume(lab, affine(), "label"), tmp_path / "seg.nii.gz")
    df = pd.DataFrame({"subject": ["s"], "sa": [str(tmp_path / "sa.nii.gz")],
                       "seg": [str(tmp_path / "seg.nii.gz")]})
    samples, _, _ = load_training_samples(df, ["sa"], "seg", context=("ed", "-1"))
    assert [s.image.shape[0] for s in samples] == [3] * 4
    s2 = samples[2].image                       # frame 2: channels frame 2, frame 0, frame 1
    step = s2[0].mean() - s2[1].mean()
    assert s2[2].mean() - s2[1].mean() == pytest.approx(step / 2, rel=1e-3)
    assert np.allclose(samples[0].image[0], samples[0].image[1])   # ED's context is itself
    write_nifti(Volume(img[..., 0], affine()), tmp_path / "f0.nii.gz")
    write_nifti(Volume(lab[..., 0], affine(), "label"), tmp_path / "l0.nii.gz")
    flat = pd.DataFrame({"subject": ["s"], "sa": [str(tmp_path / "f0.nii.gz")],
                         "seg": [str(tmp_path / "l0.nii.gz")]})
    with pytest.raises(InvalidDataError, match="cine"):
        load_training_samples(flat, ["sa"], "seg", context=("ed",))


def context_model(folder):
    cfg = CascadeConfig(context_frames=("ed",), channels1=(4, 8), channels2=(4, 8),
                        pools1=((2, 2, 1),), pools2=((2, 2, 1),), kernels1=((3, 3, 3),) * 2,
                        kernels2=((3, 3, 3),) * 2, patch=(8, 8, 4), spacing=(1.8, 1.8, 10.0))
    torch.manual_seed(0)
    save_model(folder, Cascade(cfg), {"training": {"image_roles": ["sa"]}})
    return folder


def test_predict_feeds_each_frame_with_its_context(tmp_path, monkeypatch):
    import medflow.segment.predict as predict

    seen = []

    def spy(model, src, on_box, *args, **kwargs):
        seen.append([np.asarray(c).mean() for c in src.channels])
        on_box((slice(None),) * 3, torch.full((4, *src.shape), 0.25), None)
        return {"windows": 0, "stage1_windows": 0, "tiles": 1, "overlap": 0.5,
                "stage1_overlap": 0.5, "stage1_window": None}

    monkeypatch.setattr(predict, "predict_regions", spy)
    model, _ = load_model(context_model(tmp_path / "m"))
    img = Volume(cine(3), affine())
    out = np.zeros(img.data.shape, np.uint8)
    predict.segment(model, [img], out)
    means = [img.data[..., t].mean() for t in range(3)]
    assert seen == [pytest.approx([means[t], means[0]]) for t in range(3)]


def test_a_context_model_refuses_a_3d_frame(runner, tmp_path):
    folder = context_model(tmp_path / "m")
    write_nifti(Volume(cine(2)[..., 0], affine()), tmp_path / "f.nii.gz")
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(folder), "--input",
                              str(tmp_path / "f.nii.gz"), "--output", str(tmp_path / "o.nii.gz")])
    assert res.exit_code == 65 and "f.nii.gz" in res.output and "cine" in res.output
    assert not (tmp_path / "o.nii.gz").exists()
    write_nifti(Volume(cine(2), affine()), tmp_path / "c.nii.gz")
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(folder), "--input",
                              str(tmp_path / "c.nii.gz"), "--output", str(tmp_path / "o.nii.gz")])
    assert res.exit_code == 0, res.output


def test_gin_re_textures_every_frame_of_a_sample_alike():
    p = sample_gin(np.random.default_rng(0), 1)
    frame = torch.randn(1, 8, 8, 4)
    out = apply_gin(torch.cat([frame, frame]), p)    # a frame and its (identical) context
    assert torch.allclose(out[0], out[1], atol=1e-5)


def test_phase_weights_favour_frames_far_from_ed():
    ed = np.zeros((4, 4, 2), np.int64)
    ed[:2] = 1
    frames = [ed, ed.copy(), ed.copy()]
    frames[1][0] = 0          # 8 voxels changed
    frames[2][:2] = 0         # 16 voxels changed: the "ES" frame
    samples = [Sample("s", t, np.zeros((1, 4, 4, 2), np.float32), c)
               for t, c in enumerate(frames)]
    assert phase_weights(samples, 0.0) is None
    assert phase_weights(samples, 3.0).tolist() == [1.0, 2.5, 4.0]
    rng = np.random.default_rng(0)
    draws = np.concatenate([epoch_order(rng, 3, phase_weights(samples, 3.0))
                            for _ in range(400)])
    assert np.bincount(draws)[2] > 3 * np.bincount(draws)[0]
    assert sorted(epoch_order(rng, 3)) == [0, 1, 2]


def test_a_model_card_from_before_temporal_context_still_predicts(runner, cohort, tiny_model,
                                                                  tmp_path):
    """Cards written before ``context_frames`` and ``input`` existed load as models without
    context and segment exactly as before."""
    import shutil


    from medflow.segment.cli import segment_cascaded

    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    card = json.loads((old / "model.json").read_text())
    card["config"].pop("context_frames")
    card.pop("input", None)
    (old / "model.json").write_text(json.dumps(card))
    image = cohort.parent / pd.read_csv(cohort)["sa"].iloc[0]
    for name, model in (("new", tiny_model), ("old", old)):
        res = runner.invoke(segment_cascaded, ["predict", "--model", str(model), "--input",
                                               str(image), "--output",
                                               str(tmp_path / f"{name}.nii.gz")])
        assert res.exit_code == 0, res.output
    assert ((tmp_path / "old.nii.gz").read_bytes() == (tmp_path / "new.nii.gz").read_bytes())
