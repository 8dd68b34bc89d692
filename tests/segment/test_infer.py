"""Streaming slab stitching: equal to in-memory stitching, MONAI-compatible windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medflow.segment.cascade import Cascade
from medflow.segment.data import robust_stats
from medflow.segment.infer import (ArraySource, gaussian_importance, patch_starts,
                                   stage1_outputs, stitch_in_memory, stream_predict)
from medflow.segment.uncertainty import uncertainty_maps

from .test_model import tiny_config

torch.set_num_threads(1)


def _stream(model, src, **kw):
    out = torch.full((model.cfg.n_classes, *src.shape), float("nan"))
    calls = []

    def keep(z0, z1, probs, dis):
        assert torch.isnan(out[..., z0:z1]).all(), "slice finalised twice"
        out[..., z0:z1] = probs
        calls.append((z0, z1))

    stream_predict(model, src, keep, **kw)
    return out, calls


@pytest.mark.parametrize("stages", [2, 1])
@pytest.mark.parametrize("shape", [(13, 11, 9), (5, 11, 3), (16, 8, 4)])
def test_slab_stitching_equals_in_memory(stages, shape):
    torch.manual_seed(0)
    model = Cascade(tiny_config(stages=stages)).eval()
    vol = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    src = ArraySource([vol], [robust_stats(vol)])
    ref = stitch_in_memory(model, src)
    out, calls = _stream(model, src)
    assert torch.allclose(out, ref, atol=1e-5)
    assert calls[0][0] == 0 and calls[-1][1] == shape[2]
    assert torch.allclose(out.sum(0), torch.ones(shape), atol=1e-5)


def test_slab_stitching_with_tta_equals_in_memory():
    torch.manual_seed(0)
    model = Cascade(tiny_config()).eval()
    vol = np.random.default_rng(2).normal(size=(12, 10, 9)).astype(np.float32)
    src = ArraySource([vol], [robust_stats(vol)])
    out, _ = _stream(model, src, tta=4)
    assert torch.allclose(out, stitch_in_memory(model, src, tta=4), atol=1e-5)


def test_windows_and_weights_match_monai():
    monai_utils = pytest.importorskip("monai.data.utils")
    from monai.inferers.utils import _get_scan_interval

    for n, p, o in [(640, 96, 0.5), (100, 32, 0.25), (10, 16, 0.5), (33, 33, 0.5)]:
        interval = _get_scan_interval((n,), (p,), 1, (o,))
        padded = max(n, p)
        slices = monai_utils.dense_patch_slices((padded,), (p,), interval)
        offset = (padded - n) // 2
        assert [s[0].start - offset for s in slices] == patch_starts(n, p, o)
    ref = monai_utils.compute_importance_map((8, 6, 4), mode="gaussian", sigma_scale=0.125)
    assert torch.allclose(gaussian_importance((8, 6, 4), 0.125), ref)


def test_uncertainty_scaled_0_100_and_regions():
    probs = torch.tensor([[1.0, 0.25], [0.0, 0.25], [0.0, 0.25], [0.0, 0.25]])
    ent = uncertainty_maps(probs, None, "entropy", (0, 1, 2, 4), {}, 1)[""]
    assert ent.tolist() == pytest.approx([0.0, 100.0], abs=1e-4)
    regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    maps = uncertainty_maps(probs, None, "entropy", (0, 1, 2, 4), regions, 1)
    assert set(maps) == {"WT", "TC", "ET"}
    assert maps["TC"][1] == pytest.approx(100.0)  # P(TC) = 0.5
    dis = uncertainty_maps(probs, torch.tensor([0.0, 0.5]), "disagreement", (0, 1, 2, 4), {}, 2)
    assert dis[""].tolist() == [0.0, 100.0]


def _windowed_model(stages=2):
    torch.manual_seed(0)
    return Cascade(tiny_config(stages=stages, stage1_patch=(8, 8, 4))).eval()


def _stage1_reference(model, vol, overlap):
    """Stage 1 window by window on the whole downsampled volume, blended in memory."""
    from medflow.segment.cascade import downsample
    from medflow.segment.windows import window_starts

    cfg = model.cfg
    low = downsample(torch.from_numpy(vol)[None, None], cfg.stage1_factor)
    w = cfg.stage1_patch
    acc = torch.zeros(cfg.n_classes + cfg.channels1[0], *low.shape[2:])
    wsum = torch.zeros(low.shape[2:])
    g = gaussian_importance(w, cfg.sigma_scale)
    for s in itertools.product(*window_starts(low.shape[2:], w, overlap)):
        box = tuple(slice(max(a, 0), a + k) for a, k in zip(s, w))
        x = torch.zeros(1, 1, *w)
        part = low[(..., *box)]
        x[(..., *[slice(b.start - a, b.start - a + n) for b, a, n in
                  zip(box, s, part.shape[2:])])] = part
        logits, feats = model.stage1(x)
        out = torch.cat([torch.softmax(logits, 1), feats], 1)[0]
        inner = tuple(slice(b.start - a, b.start - a + n) for b, a, n in
                      zip(box, s, part.shape[2:]))
        acc[(slice(None), *box)] += out[(slice(None), *inner)] * g[inner]
        wsum[box] += g[inner]
    return acc / wsum


def test_stage1_windows_stay_at_the_trained_size_and_match_a_reference():
    from medflow.segment.memory import plan_layout

    model = _windowed_model()
    vol = np.random.default_rng(3).normal(size=(30, 26, 9)).astype(np.float32)
    src = ArraySource([vol], [(-np.inf, np.inf, 0.0, 1.0)])
    seen = []
    model.stage1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2:]))
    layout, _ = plan_layout(model.cfg, vol.shape, target=2**62)
    assert layout.stage1_window == (8, 8, 4)
    coarse = stage1_outputs(model, src, layout=layout)
    assert seen and all(tuple(s) == (8, 8, 4) for s in seen)   # never the 15x13x9 grid
    ref = _stage1_reference(model, vol, layout.overlap1)
    assert torch.allclose(coarse[0], ref, atol=1e-5)


@pytest.mark.parametrize("stages", [2, 1])
def test_tiles_give_the_same_probabilities_as_one_plane(stages):
    from medflow.segment.infer import predict_regions
    from medflow.segment.memory import Layout, plan_layout

    model = _windowed_model(stages)
    vol = np.random.default_rng(4).normal(size=(26, 22, 7)).astype(np.float32)
    src = ArraySource([vol], [robust_stats(vol)])
    base, _ = plan_layout(model.cfg, vol.shape, target=2**62)
    ref = stitch_in_memory(model, src, tta=2, layout=base)
    out = torch.full((model.cfg.n_classes, *vol.shape), float("nan"))
    layout = Layout(base.overlap, base.overlap1, base.stage1_window, (3, 2))

    def keep(box, probs, dis):
        assert torch.isnan(out[(slice(None), *box)]).all(), "voxel written twice"
        out[(slice(None), *box)] = probs
        assert dis is not None and dis.shape == probs.shape[1:]

    facts = predict_regions(model, src, keep, layout, tta=2)
    assert facts["tiles"] == 6
    assert torch.allclose(out, ref, atol=1e-5)
