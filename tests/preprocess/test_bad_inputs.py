"""Bad inputs: the right exit code, one line naming the file, and no output written."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from medflow.cli import cli
from medflow.io import write_nifti


def _nifti(path, data, affine=np.diag([1.0, 1.0, 1.0, 1.0])):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _check(runner, tmp_path, bad, code, *extra, input_file=None):
    out = tmp_path / "out" / "o.nii.gz"
    result = runner.invoke(cli, ["preprocess", "--input", str(input_file or bad),
                                 "--output", str(out), *map(str, extra)])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medflow: error: "), result.output
    assert str(bad) in lines[0]
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_missing_file_66(runner, tmp_path):
    _check(runner, tmp_path, tmp_path / "nope.nii.gz", 66)


def test_not_an_image_65(runner, tmp_path):
    bad = tmp_path / "text.nii.gz"
    bad.write_bytes(gzip.compress(b"not a NIfTI file" * 40))
    _check(runner, tmp_path, bad, 65)


def test_truncated_gzip_65(runner, tmp_path, image3d):
    good = write_nifti(image3d, tmp_path / "good.nii.gz").read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(good[: len(good) // 2])
    assert "gzip" in _check(runner, tmp_path, bad, 65)


def test_nan_voxels_65(runner, tmp_path):
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    assert "NaN" in _check(runner, tmp_path, _nifti(tmp_path / "nan.nii.gz", data), 65)


def test_2d_image_65(runner, tmp_path):
    bad = _nifti(tmp_path / "flat.nii.gz", np.ones((8, 9), np.float32))
    assert "2D" in _check(runner, tmp_path, bad, 65)


def _sform_file(path, affine):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def test_zero_spacing_65(runner, tmp_path):
    aff = np.diag([1.0, 0.0, 2.0, 1.0])
    bad = _sform_file(tmp_path / "zero.nii.gz", aff)
    assert "spacing" in _check(runner, tmp_path, bad, 65)


def test_non_orthonormal_direction_65(runner, tmp_path):
    aff = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # sheared
    bad = _sform_file(tmp_path / "shear.nii.gz", aff)
    assert "orthonormal" in _check(runner, tmp_path, bad, 65)


def test_bad_reference_geometry_65(runner, tmp_path, image_file):
    ref = _sform_file(tmp_path / "ref.nii.gz", np.diag([1.0, 0.0, 2.0, 1.0]))
    _check(runner, tmp_path, ref, 65, "--reference", ref, input_file=image_file)


def test_reference_elsewhere_in_space_65(runner, tmp_path, image_file):
    far = np.diag([1.0, 1.0, 1.0, 1.0])
    far[:3, 3] = 5000.0
    ref = _nifti(tmp_path / "far.nii.gz", np.zeros((5, 5, 5), np.float32), far)
    assert "overlap" in _check(runner, tmp_path, ref, 65, "--reference", ref,
                               input_file=image_file)


def test_missing_reference_66(runner, tmp_path, image_file):
    _check(runner, tmp_path, tmp_path / "noref.nii.gz", 66, "--reference",
           tmp_path / "noref.nii.gz", input_file=image_file)


def test_crop_mask_outside_the_image_65(runner, tmp_path, image_file):
    far = np.diag([1.0, 1.0, 1.0, 1.0])
    far[:3, 3] = -3000.0
    mask = _nifti(tmp_path / "mask.nii.gz", np.ones((5, 5, 5), np.uint8), far)
    assert "no voxel > 0" in _check(runner, tmp_path, mask, 65, "--crop-mask", mask,
                                    input_file=image_file)


def test_crop_mask_4d_65(runner, tmp_path, image_file):
    mask = _nifti(tmp_path / "mask4d.nii.gz", np.ones((5, 5, 5, 2), np.uint8))
    assert "3D" in _check(runner, tmp_path, mask, 65, "--crop-mask", mask,
                          input_file=image_file)


def test_crop_mask_bad_geometry_65(runner, tmp_path, image_file):
    mask = _sform_file(tmp_path / "mask.nii.gz", np.diag([1.0, 0.0, 2.0, 1.0]))
    _check(runner, tmp_path, mask, 65, "--crop-mask", mask, input_file=image_file)


def test_label_with_fractions_65(runner, tmp_path):
    bad = _nifti(tmp_path / "seg.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    _check(runner, tmp_path, bad, 65, "--role", "label")
