"""Resampling against SimpleITK itself, and the properties the convention promises."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medflow.io import Volume, make_affine, read_image, write_nifti
from medflow.preprocess import output_grid, resample, resample_to_grid, sitk_geometry


def _sitk_resample_file(path, spacing, interpolator=sitk.sitkLinear):
    """The same grid built independently from SimpleITK's own reading of the file."""
    img = sitk.ReadImage(str(path), sitk.sitkFloat32)
    old = np.array(img.GetSpacing())
    new = np.array(spacing, dtype=float)
    size = [max(1, int(np.floor(n * o / s + 0.5))) for n, o, s in zip(img.GetSize(), old, new)]
    d = np.array(img.GetDirection()).reshape(3, 3)
    origin = np.array(img.GetOrigin()) + d @ ((new - old) / 2)
    out = sitk.Resample(img, size, sitk.Transform(), interpolator, origin.tolist(),
                        new.tolist(), img.GetDirection(), 0.0, sitk.sitkFloat32)
    return out


def test_same_voxels_and_geometry_as_simpleitk(tmp_path, image3d):
    path = write_nifti(image3d, tmp_path / "a.nii.gz")
    vol = read_image(path)
    ours = resample(vol, (1.0, 1.3, 2.2))
    ref = _sitk_resample_file(path, (1.0, 1.3, 2.2))
    assert ours.shape3 == ref.GetSize()
    np.testing.assert_allclose(ours.data, sitk.GetArrayFromImage(ref).T, atol=1e-4)
    origin, spacing, direction = sitk_geometry(ours.affine)
    np.testing.assert_allclose(origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(direction, ref.GetDirection(), atol=1e-6)


def test_bspline_matches_simpleitk(tmp_path, image3d):
    path = write_nifti(image3d, tmp_path / "a.nii.gz")
    ours = resample(read_image(path), (1.9, 2.1, 2.3), "bspline")
    ref = _sitk_resample_file(path, (1.9, 2.1, 2.3), sitk.sitkBSpline)
    np.testing.assert_allclose(ours.data, sitk.GetArrayFromImage(ref).T, atol=1e-3)


def test_convention_geometry(image3d):
    shape, aff = output_grid(image3d.shape3, image3d.affine, (1.0, None, 2.0))
    assert shape == (15, 20, 45)  # 10*1.5/1, kept, 30*3/2
    d = image3d.direction
    expected = image3d.origin + d @ np.array([(1.0 - 1.5) / 2, 0.0, (2.0 - 3.0) / 2])
    np.testing.assert_allclose(aff[:3, 3], expected)
    np.testing.assert_allclose(aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0), d)

    # the outer corner of the field of view stays put
    def corner(shape, affine):
        return (affine @ np.array([-0.5, -0.5, -0.5, 1.0]))[:3]

    np.testing.assert_allclose(corner(shape, aff), corner(image3d.shape3, image3d.affine))
    assert output_grid((3, 3, 3), np.eye(4), (100, 100, 100))[0] == (1, 1, 1)


def test_identity_parameters_change_nothing(image3d, label3d):
    assert resample(image3d, image3d.spacing) is image3d
    assert resample(label3d, (None, None, None)) is label3d


def test_labels_stay_labels(label3d):
    out = resample(label3d, (0.7, 1.3, 2.1))
    assert out.kind == "label" and out.data.dtype == np.uint8
    assert set(np.unique(out.data)) <= {0, 1, 2}
    assert set(np.unique(out.data)) == {0, 1, 2}


def test_sphere_label_keeps_its_volume(oblique):
    n, r = 64, 20.0
    ijk = np.indices((n, n, n)).astype(float) - (n - 1) / 2
    aff = oblique(spacing=(1.0, 1.0, 1.0), origin=(3.0, -2.0, 7.0))
    sphere = Volume((np.sqrt((ijk ** 2).sum(0)) <= r).astype(np.uint8), aff, kind="label")
    true = 4 / 3 * np.pi * r ** 3
    assert abs(sphere.data.sum() - true) / true < 0.01
    coarse = resample(sphere, (1.7, 1.7, 1.7))
    assert abs(coarse.data.sum() * 1.7 ** 3 - true) / true < 0.01
    back = resample(coarse, (1.0, 1.0, 1.0))
    assert abs(back.data.sum() - true) / true < 0.02


def test_4d_frame_by_frame(oblique):
    rng = np.random.default_rng(5)
    data = rng.random((8, 9, 4, 3)).astype(np.float32)
    vol = Volume(data, oblique(spacing=(1.8, 1.8, 10.0)))
    out = resample(vol, (1.25, 1.25, None))
    assert out.data.shape == (12, 13, 4, 3)
    for t in range(3):
        one = resample(Volume(data[..., t].copy(), vol.affine), (1.25, 1.25, None))
        np.testing.assert_array_equal(out.data[..., t], one.data)


def test_reference_grid_keeps_a_labelled_point_in_place(oblique):
    # a single labelled voxel on a coarse oblique grid, moved onto a fine axis-aligned grid
    src = np.zeros((20, 20, 20), np.uint8)
    src[7, 11, 5] = 3
    src_aff = oblique(spacing=(2.0, 2.0, 2.0), origin=(-10.0, -15.0, -5.0))
    vol = Volume(src, src_aff, kind="label")
    ref_aff = make_affine((0.5, 0.5, 0.5), np.diag([-1.0, 1.0, 1.0]), (40.0, -40.0, -20.0))
    out = resample_to_grid(vol, (160, 160, 160), ref_aff)
    assert set(np.unique(out.data)) == {0, 3}
    centre_out = ref_aff @ np.append(np.argwhere(out.data == 3).mean(0), 1.0)
    centre_in = src_aff @ np.array([7, 11, 5, 1.0])
    np.testing.assert_allclose(centre_out[:3], centre_in[:3], atol=0.5)


def test_big_endian_and_integer_images(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=">i2").reshape(4, 5, 6)
    vol = Volume(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    out = resample(vol, (1.0, 1.0, 1.0))
    assert out.data.dtype == np.float32
    # linear interpolation between integer voxels at the preserved corners
    assert out.data.min() >= data.min() and out.data.max() <= data.max()


def test_bad_spacing():
    with pytest.raises(ValueError, match="positive"):
        output_grid((2, 2, 2), np.eye(4), (1.0, 0.0, 1.0))
