"""Streaming slab stitching: equal to in-memory stitching, MONAI-compatible windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medflow.segment.cascade import Cascade
from medflow.segment.data import robust_stats
from medflow.segment.infer import (ArraySource, gaussian_importance, patch_starts,
                                   stitch_in_memory, stream_predict)
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
