"""Adversarial augmentation chains (--augment adv-chain)."""

from __future__ import annotations

import json

import numpy as np
import torch

from medflow.segment import advchain
from medflow.segment.advchain import GEOMETRIC, PHOTOMETRIC, Chain
from medflow.segment.augment import zscore
from medflow.segment.cascade import Cascade
from medflow.segment.train import one_hot

from .conftest import train_tiny
from .test_model import tiny_config

torch.set_num_threads(1)
SPACING = (1.8, 1.8, 10.0)


def ring_image(shape=(24, 20, 4)):
    """Classes: a disc (1) inside a ring (2) on background, and the image = class index."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - 11.3, y - 9.6)
    plane = np.where(r < 4, 1, np.where(r < 7, 2, 0))
    classes = torch.from_numpy(np.repeat(plane[..., None], shape[2], 2)).long()
    return classes.float()[None], classes


def chain_with(order, seed=0, shape=(24, 20, 4), full_budget=True):
    chain = Chain(np.random.default_rng(seed), shape, SPACING, 1)
    chain.order = list(order)
    if full_budget:  # push every parameter to the edge of its budget: large, visible moves
        with torch.no_grad():
            for k, v in chain.params.items():
                if k != "noise":
                    v.copy_(torch.where(v >= 0, 1.0, -1.0) * advchain.BUDGET[k])
    return chain


def test_geometric_ops_move_labels_exactly_with_the_image():
    image, classes = ring_image()
    onehot = one_hot(classes[None], 3)
    for order in (GEOMETRIC, GEOMETRIC[::-1]):
        chain = chain_with(order)
        with torch.no_grad():
            out, (moved,) = chain.apply(image, [onehot])
        # the image is the class index: moved image = sum_c c * moved one-hot, z-scored
        expected = zscore((moved[0] * torch.arange(3.0).view(3, 1, 1, 1)).sum(0, keepdim=True))
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(moved.sum(1), torch.ones(1)), "soft labels stay a distribution"
        hard = moved.argmax(1)[0]
        assert (hard != classes).float().mean() > 0.02, "the geometry moved the anatomy"
        # thick slices never mix: the grids leave the through-plane coordinate alone
        for op in GEOMETRIC:
            g = chain.grid(op, classes.shape)
            z = (2 * torch.arange(4.0) + 1) / 4 - 1
            assert torch.allclose(g[..., 2], z.expand_as(g[..., 2]))


def test_photometric_ops_change_the_image_and_leave_labels_unchanged():
    image, classes = ring_image()
    onehot = one_hot(classes[None], 3)
    for op in PHOTOMETRIC:
        chain = chain_with([op])
        with torch.no_grad():
            out, (moved,) = chain.apply(image, [onehot])
        assert torch.equal(moved, onehot)
        assert (out - zscore(image)).abs().max() > 0.05, op
    with torch.no_grad():
        out, (moved,) = chain_with(PHOTOMETRIC).apply(image, [onehot])
    assert torch.equal(moved, onehot)


def test_chain_is_seeded_and_stays_inside_its_budgets():
    a, b, c = (Chain(np.random.default_rng(s), (24, 20, 4), SPACING, 1) for s in (5, 5, 6))
    assert a.order == b.order
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert any(not torch.equal(a.params[k], c.params[k]) for k in a.params)
    a.ascend([torch.randn_like(v) * 1e3 for v in a.params.values()])  # a huge step
    for k, v in a.params.items():
        v = v.detach()
        size = float(v.pow(2).mean().sqrt()) if k == "noise" else float(v.abs().max())
        assert size <= advchain.BUDGET[k] + 1e-6, k


def test_adversarial_step_increases_the_disagreement_it_maximises():
    image, classes = ring_image((16, 16, 4))
    image = zscore(image + 0.1 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0)))
    target = one_hot(classes[None], 4)
    starts = [(0, 0, 0), (8, 8, 0)]
    gains = []
    for seed in range(4):
        torch.manual_seed(seed)
        model = Cascade(tiny_config(spacing=SPACING)).eval()
        rng = np.random.default_rng(seed)
        _, _, _, _, hist = advchain.adversarial_copy(model, image, image, target, None, starts,
                                                     rng, steps=3)
        assert hist == sorted(hist), hist      # every step raised the KL ...
        gains.append(hist[-1] / hist[0])
    assert min(gains) > 1.5, gains          # ... by a margin (descent instead: 0.9-1.8)


def test_adversarial_copy_returns_moved_labels_and_references():
    image, classes = ring_image((16, 16, 4))
    torch.manual_seed(0)
    model = Cascade(tiny_config(spacing=SPACING))
    target = one_hot(classes[None], 4)
    weight = torch.ones(1, 1, 16, 16, 4)
    adv, tgt, w, (r1, r2), _ = advchain.adversarial_copy(
        model, zscore(image), zscore(image), target, weight, [(4, 4, 0)],
        np.random.default_rng(1))
    assert model.training, "the model's mode is restored"
    assert adv.shape == image.shape and tgt.shape == target.shape and w.shape == weight.shape
    assert r1.shape == (1, 4, 8, 8, 4) and r2.shape == (1, 4, 16, 16, 4)
    assert not (adv.requires_grad or tgt.requires_grad)
    assert torch.allclose(tgt.sum(1), torch.ones(1)) and torch.allclose(w, weight)


def test_train_cli_adv_chain_is_seeded_and_recorded(runner, cohort, tmp_path):

    outs = []
    for name, mode in (("a", "adv-chain"), ("b", "adv-chain"), ("g", "gin-ipa+adv-chain")):
        out = tmp_path / name
        res = train_tiny(runner, cohort, out, "1", "--augment", mode, "--adv-steps", "2")
        assert res.exit_code == 0, res.output
        outs.append(out)
    weights = [(o / "model.safetensors").read_bytes() for o in outs]
    assert weights[0] == weights[1], "same seed, same weights"
    assert weights[0] != weights[2]
    card = json.loads((outs[0] / "model.json").read_text())
    opts = card["training"]["options"]
    assert opts["augment"] == "adv-chain" and opts["adv_steps"] == 2
    assert opts["adv_chain"]["budget"] == advchain.BUDGET and opts["adv_chain"]["base"] == "standard"
    assert card["plan"]["train_step_estimate_bytes"] > 0
