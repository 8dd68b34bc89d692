"""Reorientation is an exact permutation/flip of voxels with the affine to match."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medflow.io import Volume
from medflow.preprocess import orientation_of, parse_orientation, reorient


def _world(vol: Volume, ijk) -> np.ndarray:
    return (vol.affine @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize("code", ["RAS", "LPS", "PIR", "SLA", "ail"])
def test_every_voxel_keeps_its_world_position(image3d, code):
    out = reorient(image3d, code)
    assert orientation_of(out.affine) == code.upper()
    assert sorted(out.shape3) == sorted(image3d.shape3)
    # the voxel of the output nearest a world point holds the same value as the input's
    inv = np.linalg.inv(out.affine)
    for ijk in [(0, 0, 0), (9, 19, 29), (3, 7, 11), (9, 0, 29)]:
        o = np.round(inv @ np.array([*_world(image3d, ijk), 1.0]))[:3].astype(int)
        assert out.data[tuple(o)] == image3d.data[ijk]


def test_round_trip_is_exact(image3d):
    back = reorient(reorient(image3d, "LPS"), orientation_of(image3d.affine))
    np.testing.assert_array_equal(back.data, image3d.data)
    np.testing.assert_allclose(back.affine, image3d.affine, atol=1e-12)


def test_same_orientation_is_a_no_op(image3d):
    code = orientation_of(image3d.affine)
    assert reorient(image3d, code) is image3d


def test_matches_nibabel_canonical():
    rng = np.random.default_rng(3)
    aff = np.array([[0, 0, -2.0, 10], [-1.5, 0, 0, 5], [0, 3.0, 0, -4], [0, 0, 0, 1]])
    img = nib.Nifti1Image(rng.random((4, 5, 6)).astype(np.float32), aff)
    canon = nib.as_closest_canonical(img)
    out = reorient(Volume(np.asarray(img.dataobj), aff), "RAS")
    np.testing.assert_array_equal(out.data, canon.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(out.affine, canon.affine)


def test_4d_time_untouched():
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    vol = Volume(data, np.diag([-1.0, -1.0, 2.0, 1.0]))
    out = reorient(vol, "RAS")
    assert out.data.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(out.data[..., 3], data[::-1, ::-1, :, 3])


def test_reorient_is_a_view(image3d):
    assert np.shares_memory(reorient(image3d, "LPS").data, image3d.data)


@pytest.mark.parametrize("bad", ["RA", "RASL", "RRS", "XYZ", "LRS", ""])
def test_bad_codes(bad):
    with pytest.raises(ValueError, match="axis"):
        parse_orientation(bad)
