"""The joint network's input: a shifted stack with its shifts undone is the unshifted
stack's input (what training and prediction with a prior rely on)."""

from __future__ import annotations

import numpy as np

from medflow.superres.joint import network_input
from medflow.superres.joint_net import JointConfig

from .conftest import heart_grid, stack_of


def test_undoing_the_shifts_gives_the_aligned_stacks_input():
    from medflow.phantom.heart import HeartModel

    heart = HeartModel.from_seed(2)

    def labels_at(points):
        return heart.labels_at(points, 0.0)
    grid_affine, grid_shape = heart_grid(heart, spacing=2.5)
    cfg = JointConfig()
    aligned, affine = stack_of(labels_at, heart, None)

    def inputs(stack, undo=None):
        image = 100.0 * (stack > 0)  # an image that shows the labels
        return network_input(image, stack, affine, grid_affine, grid_shape, cfg, 100.0,
                             None if undo is None else undo[:stack.shape[2]])

    target = inputs(aligned)
    assert np.array_equal(inputs(aligned, np.zeros((14, 2))), target)
    rng = np.random.default_rng(0)
    whole = 3.0 * rng.integers(-2, 3, size=(14, 2))  # whole 3 mm pixels: undone exactly
    shifted, affine_shifted = stack_of(labels_at, heart, whole)
    assert np.allclose(affine, affine_shifted) and np.abs(inputs(shifted) - target).max() > 0.5
    assert np.allclose(inputs(shifted, whole), target, atol=1e-6)
    # fractions of a pixel: in-plane interpolation is left, and the sign matters
    shifts = np.clip(rng.normal(0, 3, size=(14, 2)), -6, 6)
    shifted, _ = stack_of(labels_at, heart, shifts)
    as_acquired = np.abs(inputs(shifted) - target).mean()
    assert np.abs(inputs(shifted, shifts) - target).mean() < 0.6 * as_acquired
    assert np.abs(inputs(shifted, -shifts) - target).mean() > as_acquired


def test_remap_pair_puts_input_and_target_through_one_curve():
    from medflow.superres.joint import remap_pair

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2, (4, 4, 4)).astype(np.float32)
    target = np.concatenate([x.ravel(), [0.0, 2.5]]).astype(np.float32)  # 2.5: past the top
    knots = [0.0, 0.9, 0.1, 0.5, 0.3, 1.0]  # non-monotone: tissues swap order
    xr, tr = remap_pair(x, target, knots, alpha=1.0)
    assert np.allclose(tr[:-2], xr.ravel())          # the same curve on both
    assert tr[-2] == 0.0 and np.isclose(tr[-1], x.max())  # ends: knots 0 and 1
    ident = remap_pair(x, target, knots, alpha=0.0)  # no weight on the curve: unchanged
    assert np.allclose(ident[0], x) and np.allclose(ident[1][:-1], target[:-1])
