"""The networks, the cascade plumbing and the architecture planner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medflow.segment.cascade import Cascade, downsample, upsample_region
from medflow.segment.config import CascadeConfig, plan_levels, stage1_factors
from medflow.segment.unet import MeUNet

torch.set_num_threads(1)


def tiny_config(**kw) -> CascadeConfig:
    base = dict(channels1=(4, 8), channels2=(4, 8), pools1=((2, 2, 1),), pools2=((2, 2, 1),),
                kernels1=((3, 3, 3),) * 2, kernels2=((3, 3, 1), (3, 3, 3)), patch=(8, 8, 4),
                stage1_factor=(2, 2, 1))
    return CascadeConfig(**{**base, **kw})


def test_cardiac_plan_keeps_through_plane_axis():
    pools, kernels, div = plan_levels((96, 96, 10), (1.8, 1.8, 10.0), 4)
    assert pools == ((2, 2, 1), (2, 2, 1), (2, 2, 2))
    assert kernels[0] == (3, 3, 1)
    assert div == (8, 8, 2)
    # 11 slices (odd) are never pooled; an isotropic volume is pooled on every axis
    assert all(p[2] == 1 for p in plan_levels((96, 96, 11), (1.8, 1.8, 10.0), 4)[0])
    assert plan_levels((64, 64, 64), (1, 1, 1), 3)[0] == ((2, 2, 2), (2, 2, 2))


def test_stage1_factor_never_coarser_than_coarsest_axis():
    assert stage1_factors((1.8, 1.8, 10.0), 2) == (2, 2, 1)
    assert stage1_factors((1.0, 1.0, 1.0), 4) == (4, 4, 4)


def test_unet_shapes_and_level_checks():
    net = MeUNet(2, 3, (4, 8, 16), ((2, 2, 1), (2, 2, 2)), ((3, 3, 3),) * 3)
    logits, feats = net(torch.zeros(1, 2, 16, 8, 4))
    assert logits.shape == (1, 3, 16, 8, 4) and feats.shape == (1, 4, 16, 8, 4)
    with pytest.raises(ValueError, match="levels"):
        MeUNet(1, 2, (4, 8), (), ((3, 3, 3),) * 2)


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = MeUNet(1, 2, (4, 8), ((2, 2, 1),), ((3, 3, 3),) * 2, checkpoint=True)
    b = MeUNet(1, 2, (4, 8), ((2, 2, 1),), ((3, 3, 3),) * 2, checkpoint=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 8, 8, 4)
    for net in (a, b):
        net.train()
        net(x)[0].square().mean().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


def test_cascade_post_concatenates_stage1_features():
    model = Cascade(tiny_config()).eval()
    assert model.stage2.head.in_channels == 4 + 4       # stage-2 + stage-1 features
    assert model.stage2.enc[0][0].in_channels == 1 + 4  # image + stage-1 probabilities
    x = torch.randn(1, 1, 13, 11, 5)                    # odd sizes: padded inside
    logits1, feats1 = model.forward_stage1(x)
    assert logits1.shape[2:] == (7, 6, 5)
    probs, feats = model.stage1_context(logits1, feats1, (2, 1, 0), (8, 8, 4), (13, 11, 5))
    assert torch.allclose(probs.sum(1), torch.ones(1, 8, 8, 4), atol=1e-5)
    assert model.forward_stage2(x[..., 2:10, 1:9, 0:4], probs, feats).shape == (1, 4, 8, 8, 4)
    single = Cascade(tiny_config(stages=1))
    assert single.stage1 is None and single.stage2.head.in_channels == 4


def test_upsample_region_matches_trilinear_interpolation():
    low = torch.randn(1, 3, 5, 7, 3)
    full = F.interpolate(low, size=(20, 27, 6), mode="trilinear", align_corners=False)
    assert torch.allclose(upsample_region(low, (0, 0, 0), (20, 27, 6), (20, 27, 6)), full,
                          atol=1e-5)
    box = upsample_region(low, (4, 5, 1), (8, 8, 4), (20, 27, 6))
    assert torch.allclose(box, full[..., 4:12, 5:13, 1:5], atol=1e-5)


def test_downsample_slabs_equal_whole():
    x = torch.randn(1, 1, 9, 7, 10)
    whole = downsample(x, (2, 2, 2))
    slabs = torch.cat([downsample(x[..., z:z + 4], (2, 2, 2)) for z in range(0, 10, 4)], 4)
    assert torch.allclose(whole, slabs) and whole.shape[2:] == (5, 4, 5)


def test_config_round_trips_through_json_dict():
    import json

    cfg = tiny_config(regions={"WT": (1, 2, 4)})
    back = CascadeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="unknown"):
        CascadeConfig.from_dict({"nonsense": 1})


@pytest.mark.parametrize("fmt", [torch.channels_last_3d, torch.contiguous_format])
def test_inference_instance_norm_matches_the_training_one(fmt):
    """The in-place inference path (two-pass statistics, chunked) normalises exactly as
    torch's InstanceNorm3d does in training, for both memory layouts and activations far
    from zero mean (where a one-pass E[x^2] - E[x]^2 would cancel)."""
    from medflow.segment.blocks import InstanceNorm

    torch.manual_seed(0)
    norm = InstanceNorm(5, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(2, 5, 37, 20, 9) * 0.5 + 40.0).contiguous(memory_format=fmt)
    expected = norm(x.clone().requires_grad_()).detach()   # grad recorded: torch's path
    with torch.no_grad():
        got = norm(x.clone())                               # in-place inference path
    assert torch.allclose(got, expected, atol=2e-4, rtol=0)
