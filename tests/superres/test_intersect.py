"""Shifts refined on the long-axis planes: a phantom heart whose shifts are known."""

from __future__ import annotations

import numpy as np

from medflow.phantom.cine_planes import grid_points, la_geometry
from medflow.phantom.heart import HeartModel
from medflow.superres.intersect import refine_shifts

from .conftest import stack_of


def _acquired(shifts, seed=4):
    heart = HeartModel.from_seed(seed)

    def labels_at(points):
        return heart.labels_at(points, 0.0)
    stack, affine = stack_of(labels_at, heart, shifts, pixel=1.5, size=(88, 80))
    views = []
    for view in ("2ch", "4ch"):
        la_affine, shape = la_geometry(heart, view)
        views.append((labels_at(grid_points(la_affine, shape).reshape(-1, 3))
                      .reshape(shape).astype(np.uint8), la_affine))
    return stack, affine, views


def test_shifts_are_recovered_from_the_long_axis_planes():
    true = np.clip(np.random.default_rng(5).normal(0, 2, size=(14, 2)), -4, 4)
    stack, affine, views = _acquired(true)
    true = true[:stack.shape[2]]
    start = true + np.random.default_rng(6).normal(0, 1.5, size=true.shape)  # a rough fit
    got, crossed = refine_shifts(stack, affine, views, start)
    has = (stack > 0).any(axis=(0, 1)) & crossed
    before = np.linalg.norm(start - true, axis=1)[has]
    after = np.linalg.norm(got - true, axis=1)[has]
    assert has.sum() >= 6
    assert np.median(after) < 0.4 and np.median(after) < 0.25 * np.median(before), (before, after)


def test_slices_no_plane_reaches_keep_their_shift():
    true = np.zeros((14, 2))
    stack, affine, views = _acquired(true)
    start = np.full((stack.shape[2], 2), 1.0)
    got, crossed = refine_shifts(stack, affine, [], start)
    assert not crossed.any() and np.array_equal(got, start)
    far = [(lab, affine_la.copy()) for lab, affine_la in views]
    for _, a in far:
        a[:3, 3] += 500.0 * a[:3, 2] / np.linalg.norm(a[:3, 2])  # 50 cm off: crosses nothing
    got, crossed = refine_shifts(stack, affine, far, start)
    assert not crossed.any() and np.array_equal(got, start)
