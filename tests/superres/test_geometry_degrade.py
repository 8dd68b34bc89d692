"""The canonical frame from labels, the acquisition model against a direct resampling,
and the baselines on shapes whose answer is known."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from medflow.io import make_affine
from medflow.superres import baselines
from medflow.superres.degrade import degrade, plane_offsets
from medflow.superres.geometry import (canonical_frame, in_plane_units, output_grid,
                                       slice_normal, voxel_points)
from medflow.superres.prior import sample

from .conftest import heart_labels, stack_of


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(abs(float(a @ b)), -1, 1)))


def test_canonical_frame_follows_the_heart_from_labels_alone():
    labels, affine, heart = heart_labels(3, spacing=2.0)
    frame = canonical_frame(labels, affine)
    assert _angle(frame.rotation[:, 2], heart.rot[:, 2]) < 2.0   # long axis
    assert frame.rotation[:, 2] @ heart.rot[:, 2] > 0             # apex to base
    assert _angle(frame.rotation[:, 0], heart.rot[:, 0]) < 6.0   # towards the RV
    assert np.allclose(frame.rotation.T @ frame.rotation, np.eye(3), atol=1e-9)
    # a thick stack of the same heart with breath-hold shifts gives nearly the same frame
    shifts = np.random.default_rng(0).normal(0, 2, size=(12, 2)).clip(-5, 5)
    stack, stack_affine = stack_of(lambda p: heart.labels_at(p, 0.0), heart, shifts)
    frame2 = canonical_frame(stack, stack_affine)
    assert _angle(frame2.rotation[:, 2], frame.rotation[:, 2]) < 6.0


def test_degradation_matches_direct_resampling():
    labels, hr_affine, heart = heart_labels(1, spacing=2.0)
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    rng = np.random.default_rng(4)
    stack_shape_probe, stack_affine = stack_of(lambda p: heart.labels_at(p, 0.0), heart, None)
    k = stack_shape_probe.shape[2]
    shifts = rng.normal(0, 2, size=(k, 2))
    pts = voxel_points(stack_affine, stack_shape_probe.shape).reshape(-1, 3)
    kidx = np.broadcast_to(np.arange(k), stack_shape_probe.shape).reshape(-1)
    w2g = np.linalg.inv(hr_affine)
    vol = torch.from_numpy(onehot)
    prob_at = lambda p: sample(vol, p, torch.from_numpy(w2g.astype(np.float32)))  # noqa: E731
    units, normal = in_plane_units(stack_affine), slice_normal(stack_affine)
    for thickness in (0.0, 8.0):
        got = degrade(prob_at, torch.from_numpy(pts.astype(np.float32)), torch.from_numpy(kidx),
                      torch.from_numpy(shifts.astype(np.float32)),
                      torch.from_numpy(units.astype(np.float32)),
                      torch.from_numpy(normal.astype(np.float32)), thickness).numpy()
        # direct: each pixel looks at p - shift (+ offsets across the slab), scipy trilinear
        src = pts - shifts[kidx] @ units.T
        want = np.zeros_like(got)
        for d in plane_offsets(thickness):
            ijk = (src + d * normal) @ w2g[:3, :3].T + w2g[:3, 3]
            want += np.stack([map_coordinates(m, ijk.T, order=1, mode="grid-constant", cval=0.0)
                              for m in onehot], axis=1)
        want /= len(plane_offsets(thickness))
        assert np.abs(got - want).max() < 1e-4
        assert len(plane_offsets(thickness)) == (1 if thickness == 0 else 3)
    # the pixels really moved: without the shifts the degraded labels differ
    assert (np.abs(src - pts).max() > 1.0)


def _z_invariant_stack(k=4):
    x, y = np.meshgrid(np.arange(30), np.arange(26), indexing="ij")
    d = np.hypot(x - 12.3, y - 12.8)
    sl = np.zeros((30, 26), np.uint8)
    sl[(np.hypot(x - 21, y - 13) < 6) & (d >= 7)] = 3
    sl[(d >= 4.5) & (d < 7)] = 2
    sl[d < 4.5] = 1
    affine = make_affine((1.8, 1.8, 10.0), None, (5.0, -3.0, 2.0))
    return np.repeat(sl[..., None], k, axis=2), affine


def test_sdf_of_a_shape_constant_along_z_is_exact():
    stack, affine = _z_invariant_stack()
    # output: the stack's pixels in-plane, 1.25 mm through-plane across the middle slices
    out_affine = make_affine((1.8, 1.8, 1.25), None, affine[:3, 3] + [0, 0, 10.0])
    shape = (30, 26, 17)
    for method in (baselines.sdf_labels, baselines.linear_labels, baselines.nearest_labels):
        got = method(stack, affine, out_affine, shape)
        assert np.array_equal(got, np.repeat(stack[..., :1], shape[2], axis=2)), method.__name__


def test_sdf_undoes_known_slice_shifts():
    stack, affine = _z_invariant_stack()
    pixels = np.array([[0, 0], [2, -1], [-1, 2], [1, 1]])  # whole pixels: exact to undo
    moved = np.stack([np.roll(stack[..., k], tuple(pixels[k]), axis=(0, 1))
                      for k in range(stack.shape[2])], axis=2)
    shifts_mm = pixels * 1.8  # slice k shows at p the anatomy at p - s_k
    out_affine = make_affine((1.8, 1.8, 1.25), None, affine[:3, 3] + [0, 0, 10.0])
    shape = (30, 26, 17)
    want = np.repeat(stack[..., :1], shape[2], axis=2)
    got = baselines.sdf_labels(moved, affine, out_affine, shape, shifts_mm=shifts_mm)
    assert np.array_equal(got, want)
    assert not np.array_equal(baselines.sdf_labels(moved, affine, out_affine, shape), want)
    image = (moved * 100.0 + 50.0).astype(np.float32)
    back = baselines.undo_slice_shifts(image, affine, shifts_mm)
    assert np.array_equal(back[3:-3, 3:-3], (stack * 100.0 + 50.0)[3:-3, 3:-3])


def test_sdf_interpolates_a_shrinking_disc_between_slices():
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    d = np.hypot(x - 19.5, y - 19.5)
    stack = np.stack([(d < 12).astype(np.uint8), (d < 6).astype(np.uint8)], axis=2)
    affine = make_affine((1.0, 1.0, 10.0))
    mid = make_affine((1.0, 1.0, 1.0), None, (0.0, 0.0, 5.0))
    got = baselines.sdf_labels(stack, affine, mid, (40, 40, 1), values=(0, 1))[..., 0]
    radius = np.sqrt(got.sum() / np.pi)
    assert abs(radius - 9.0) < 0.7  # half-way between 12 and 6
    nearest = baselines.nearest_labels(stack, affine, mid, (40, 40, 1))[..., 0]
    assert abs(np.sqrt(nearest.sum() / np.pi) - 9.0) > 2.0  # the baseline jumps


def test_bspline_image_of_a_z_invariant_image_keeps_its_pixels():
    stack, affine = _z_invariant_stack()
    image = (stack * 100.0 + 50.0).astype(np.float32)
    out_affine = make_affine((1.8, 1.8, 2.5), None, affine[:3, 3] + [0, 0, 10.0])
    got = baselines.bspline_image(image, affine, out_affine, (30, 26, 5))
    assert np.abs(got - image[..., 1:2]).max() < 1e-2


def test_output_grid_covers_the_labels_and_the_whole_stack():
    stack, affine = _z_invariant_stack(5)
    out_affine, shape = output_grid(stack, affine)
    assert np.allclose(np.linalg.norm(out_affine[:3, :3], axis=0), 1.25)
    corners = voxel_points(out_affine, shape)[[0, -1], [0, -1], [0, -1]]
    inv = np.linalg.inv(affine)
    ijk = corners @ inv[:3, :3].T + inv[:3, 3]
    assert ijk[0, 2] < -0.4 and ijk[1, 2] > 4.4  # across every slice's slab
    fg = np.argwhere(stack[..., 0] > 0)
    assert ijk[0, 0] < fg[:, 0].min() and ijk[1, 0] > fg[:, 0].max()


def test_long_axis_at_gives_a_one_frame_map_to_ed_only():
    # training (_frame_pairs) and predict (predict_files) both take their frame's long
    # axis from here: a one-frame map (an ED-only segmentation) reused at ES would pull the
    # ES shifts towards the ED heart
    from medflow.io import Volume
    from medflow.superres.inputs import long_axis_at

    plane = np.zeros((8, 8, 1, 3), np.uint8)
    plane[2:5, 2:5, 0, :2] = 1                      # frame 2 left unlabelled
    cine, ed = Volume(plane, np.eye(4), kind="label"), Volume(plane[..., :1], np.eye(4),
                                                               kind="label")
    assert [len(long_axis_at([cine, ed], t)) for t in (0, 1, 2)] == [2, 1, 0]
    assert np.array_equal(long_axis_at([ed], 0)[0][0], plane[..., 0])
