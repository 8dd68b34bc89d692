"""nibabel's small real scans through `medflow preprocess`, checked against nibabel and
SimpleITK reading the same files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medflow.cli import cli
from medflow.preprocess import sitk_geometry


def _run(runner, *args):
    result = runner.invoke(cli, ["preprocess", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def _corners(shape, affine):
    grid = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in shape[:3]], indexing="ij"))
    return (affine[:3, :3] @ grid.reshape(3, -1) + affine[:3, 3:4]).T


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "functional.nii"])
def test_lps_then_ras_reproduces_canonical(runner, tmp_path, real_scan, name):
    src = real_scan(name)
    lps, ras, direct = tmp_path / "lps.nii.gz", tmp_path / "ras.nii.gz", tmp_path / "d.nii.gz"
    _run(runner, "--input", src, "--output", lps, "--orientation", "LPS")
    _run(runner, "--input", lps, "--output", ras, "--orientation", "RAS")
    _run(runner, "--input", src, "--output", direct)
    assert nib.aff2axcodes(nib.load(str(lps)).affine) == ("L", "P", "S")
    a, b = nib.load(str(ras)), nib.load(str(direct))
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    canon = nib.as_closest_canonical(nib.load(src))
    ours = np.asarray(a.dataobj)
    # (scaled integer files, like functional.nii, come out as float32)
    np.testing.assert_array_equal(ours, np.asarray(canon.dataobj).astype(ours.dtype))
    np.testing.assert_allclose(a.affine, canon.affine, atol=1e-4)
    # back to the file's own orientation reproduces the original voxels exactly
    native = tmp_path / "native.nii.gz"
    code = "".join(nib.aff2axcodes(nib.load(src).affine))
    _run(runner, "--input", lps, "--output", native, "--orientation", code)
    np.testing.assert_array_equal(np.asarray(nib.load(str(native)).dataobj),
                                  np.asarray(nib.load(src).dataobj).astype(ours.dtype))
    np.testing.assert_allclose(nib.load(str(native)).affine, nib.load(src).affine, atol=1e-4)


def test_resampled_4d_agrees_with_simpleitk(runner, tmp_path, real_scan):
    src = real_scan("example4d.nii.gz")  # 128 x 96 x 24 x 2, oblique, LAS, 2 x 2 x 2.2 mm
    out = tmp_path / "r.nii.gz"
    _run(runner, "--input", src, "--output", out, "--orientation", "LAS",
         "--spacing", "4,3,4.4")
    ours = nib.load(str(out))
    data = np.asarray(ours.dataobj)
    assert data.shape == (64, 64, 12, 2)
    # world extent: the same field-of-view corners as the input
    orig = nib.load(src)
    np.testing.assert_allclose(_corners(data.shape, ours.affine),
                               _corners(orig.shape, orig.affine), atol=1e-3)
    # SimpleITK reads the same file and resamples each frame onto our grid
    img = sitk.ReadImage(src, sitk.sitkFloat32)
    origin, spacing, direction = sitk_geometry(ours.affine)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(4, 4)[:3, :3].ravel(),
                               direction, atol=1e-5)
    for t in range(2):
        frame = sitk.Extract(img, [*img.GetSize()[:3], 0], [0, 0, 0, t])
        ref = sitk.Resample(frame, data.shape[:3], sitk.Transform(), sitk.sitkLinear, origin,
                            spacing, direction, 0.0, sitk.sitkFloat32)
        # the two readers' float32 header rounding differs by ~1e-7 mm: tiny differences
        diff = np.abs(data[..., t] - sitk.GetArrayFromImage(ref).T).max()
        assert diff < 1e-5 * np.abs(data).max(), diff


def test_anatomical_resampled_keeps_extent(runner, tmp_path, real_scan):
    src = real_scan("anatomical.nii")  # 33 x 41 x 25 at 2 mm, big-endian int16
    out = tmp_path / "a.nii.gz"
    _run(runner, "--input", src, "--output", out, "--spacing", "1", "--normalise",
         "percentile")
    img = nib.load(str(out))
    assert img.shape == (66, 82, 50)
    np.testing.assert_allclose(_corners(img.shape, img.affine),
                               _corners(nib.load(src).shape, nib.as_closest_canonical(
                                   nib.load(src)).affine), atol=1e-3)
    data = np.asarray(img.dataobj)
    assert data.min() == 0 and data.max() == 1


def test_same_command_twice_same_bytes(runner, tmp_path, real_scan):
    src = real_scan("example4d.nii.gz")
    outs = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    for out in outs:
        _run(runner, "--input", src, "--output", out, "--spacing", "2.5,2.5,keep",
             "--normalise", "zscore", "--crop-to", "80,80,keep")
    assert outs[0].read_bytes() == outs[1].read_bytes()
