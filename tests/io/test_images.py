"""Reading every format into one Volume, and refusing bad files with the right error."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io import Volume, read_image, write_nifti
from medflow.io.images import LPS_TO_RAS


def _nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_round_trip_keeps_geometry(tmp_path, image3d):
    p = write_nifti(image3d, tmp_path / "a.nii.gz")
    back = read_image(p)
    np.testing.assert_allclose(back.affine, image3d.affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, image3d.data)
    assert back.meta["format"] == "nifti"


def test_labels_written_as_uint8(tmp_path, label3d):
    p = write_nifti(label3d, tmp_path / "l.nii.gz")
    assert nib.load(str(p)).get_data_dtype() == np.uint8
    assert read_image(p, kind="label").kind == "label"


def test_uncompressed_nifti_memory_maps(tmp_path, image3d):
    p = write_nifti(image3d, tmp_path / "a.nii")
    vol = read_image(p, mmap=True)
    assert isinstance(vol.data, np.memmap)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_formats_agree_with_simpleitk(tmp_path, image3d, suffix):
    p = tmp_path / f"a{suffix}"
    img = sitk.GetImageFromArray(np.transpose(image3d.data, (2, 1, 0)))
    lps = LPS_TO_RAS @ image3d.affine  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(img, str(p))
    vol = read_image(p)
    np.testing.assert_allclose(vol.affine, image3d.affine, atol=1e-5)
    np.testing.assert_array_equal(vol.data, image3d.data)
    # the world position of a voxel agrees with SimpleITK's own mapping
    ijk = (3, 7, 11)
    ras = vol.affine @ np.array([*ijk, 1.0])
    lps_pt = np.array(img.TransformIndexToPhysicalPoint(ijk))
    np.testing.assert_allclose(ras[:3] * [-1, -1, 1], lps_pt, atol=1e-4)


def test_4d_nifti(tmp_path):
    data = np.random.default_rng(1).random((6, 7, 3, 5)).astype(np.float32)
    p = _nifti(tmp_path / "cine.nii.gz", data, np.diag([1.8, 1.8, 10, 1]))
    vol = read_image(p)
    assert vol.n_frames == 5 and vol.shape3 == (6, 7, 3)


def test_missing_file_is_66(tmp_path):
    with pytest.raises(MissingInputError) as err:
        read_image(tmp_path / "nope.nii.gz")
    assert err.value.exit_code == 66 and "nope.nii.gz" in err.value.format_message()


def test_not_an_image_is_65(tmp_path):
    p = tmp_path / "text.nii.gz"
    p.write_bytes(gzip.compress(b"hello, I am not a NIfTI file" * 20))
    with pytest.raises(InvalidDataError) as err:
        read_image(p)
    assert err.value.exit_code == 65 and str(p) in err.value.format_message()


def test_truncated_gzip_is_65(tmp_path, image3d):
    p = write_nifti(image3d, tmp_path / "a.nii.gz")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InvalidDataError, match="truncated|corrupt"):
        read_image(p)


def test_unknown_suffix_is_65(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"x")
    with pytest.raises(InvalidDataError, match="unknown image format"):
        read_image(p)


def test_nan_voxels_are_65(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    with pytest.raises(InvalidDataError, match="NaN"):
        read_image(_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))


def test_2d_is_65(tmp_path):
    with pytest.raises(InvalidDataError, match="2D"):
        read_image(_nifti(tmp_path / "flat.nii.gz", np.ones((4, 4), np.float32), np.eye(4)))


def _nifti_with_sform(path, srows):
    # nibabel normalises affines on save; build the header by hand to keep a broken sform.
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4, 4, 4))
    hdr.set_data_dtype(np.float32)
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srows
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None, header=hdr), str(path))
    return path


def test_zero_spacing_is_65(tmp_path):
    p = _nifti_with_sform(tmp_path / "z.nii.gz", ([1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]))
    with pytest.raises(InvalidDataError, match="spacing"):
        read_image(p)


def test_sheared_direction_is_65(tmp_path):
    p = _nifti_with_sform(tmp_path / "s.nii.gz", ([1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]))
    with pytest.raises(InvalidDataError, match="orthonormal"):
        read_image(p)


def test_fractional_labels_are_65(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = 0.5
    with pytest.raises(InvalidDataError, match="non-integer"):
        read_image(_nifti(tmp_path / "l.nii.gz", data, np.eye(4)), kind="label")


def test_real_nibabel_scans_read_like_nibabel():
    from pathlib import Path

    data_dir = Path(nib.__file__).parent / "tests" / "data"
    for name in ("example4d.nii.gz", "anatomical.nii", "example_nifti2.nii.gz"):
        p = data_dir / name
        if not p.exists():
            continue
        vol = read_image(p)
        ref = nib.load(str(p))
        np.testing.assert_allclose(vol.affine, ref.affine)
        assert vol.data.shape[:3] == ref.shape[:3]


def test_volume_rejects_bad_affine_shape():
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), np.eye(3))


def test_channel_axis_read_only_when_asked(tmp_path):
    """A cine with a channel axis last (X, Y, Z, T, C: predict's class probabilities) is
    read with channels=True and refused otherwise; a 6D file is refused either way."""
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    data = np.random.default_rng(0).random((4, 5, 3, 2, 4)).astype(np.float32)
    path = _nifti(tmp_path / "prob.nii.gz", data, affine)
    vol = read_image(path, channels=True)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.shape3 == (4, 5, 3)
    with pytest.raises(InvalidDataError, match="5D image: only 3D and 3D.time are supported"):
        read_image(path)
    six = _nifti(tmp_path / "six.nii.gz", data[..., None].repeat(2, -1), affine)
    with pytest.raises(InvalidDataError, match="6D image: only 3D and 3D.time with a channel"):
        read_image(six, channels=True)
