"""Views whose slices are not on the third axis (a stack reoriented to RAS, as the
Nextflow pipeline segments it) read as the same planes in the same world positions."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.io import Volume, read_image, write_nifti
from medflow.motion.inputs import read_inputs, slices_last


@pytest.mark.parametrize("order", [(2, 0, 1), (0, 2, 1), (2, 1, 0)])
def test_any_slice_axis_reads_as_the_acquired_stack(heart_segs, tmp_path, order):
    _, paths = heart_segs
    written = {}
    for view, path in paths.items():
        vol = read_image(path, kind="label")
        data = np.transpose(np.asarray(vol.data), (*order, 3))  # axis i of new = order[i]
        affine = np.asarray(vol.affine, np.float64).copy()
        affine[:3, :3] = affine[:3, list(order)]
        written[view] = tmp_path / f"{view}.nii.gz"
        write_nifti(Volume(data, affine, kind="label"), written[view])
    plain = read_inputs(paths["sa"], paths["la_2ch"], paths["la_4ch"])
    moved = read_inputs(written["sa"], written["la_2ch"], written["la_4ch"])
    for a, b in zip(plain.views, moved.views):
        assert b.labels.shape[2] == a.labels.shape[2]  # the slices are on the third axis
        # every labelled voxel at the same world position with the same label
        for view in (a, b):
            ijk = np.argwhere(view.labels[..., 0] > 0)
            view.world = np.round(ijk @ view.affine[:3, :3].T + view.affine[:3, 3], 3)
            view.values = view.labels[..., 0][tuple(ijk.T)]
        sort_a, sort_b = np.lexsort(a.world.T), np.lexsort(b.world.T)
        assert np.array_equal(a.world[sort_a], b.world[sort_b])
        assert np.array_equal(a.values[sort_a], b.values[sort_b])
        # a cyclic rotation keeps the handedness of the voxel axes
        assert np.sign(np.linalg.det(b.affine[:3, :3])) == np.sign(np.linalg.det(
            np.asarray(read_image(written[a.name], kind="label").affine)[:3, :3]))


def test_slices_already_last_untouched():
    data = np.zeros((8, 8, 3, 2), np.uint8)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    out, aff = slices_last(data, affine)
    assert out is data and aff is affine


def test_a_fit_without_long_axis_fails_qc():
    from medflow.motion.measures import quality

    lab = np.zeros((40, 40, 8), np.uint8)
    lab[10:30, 10:30, 1:7] = 2
    lab[14:26, 14:26, 1:7] = 1
    lab[30:36, 12:28, 1:7] = 3
    curves = {"lv_ml": np.array([120.0, 60.0, 110.0]), "rv_ml": np.array([130.0, 65.0, 120.0])}
    row = {"ed_frame": 0}
    alone = quality(row, curves, lab, {"sa": 0.5}, 1.0)
    both = quality(row, curves, lab, {"sa": 0.5, "la_4ch": 0.7}, 1.0)
    assert "short axis only" in alone["qc_reasons"] and not alone["qc_pass"]
    assert "short axis only" not in both["qc_reasons"]
