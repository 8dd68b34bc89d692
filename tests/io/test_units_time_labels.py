"""How geometry, units, time and label values travel from a header to a Volume and back
(issue 12, cases 1 and 2, and their neighbours)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from medflow.cli import cli
from medflow.io import Volume, make_affine, read_image, write_nifti
from medflow.io.dicom_write import write_dicom_series, write_ukbb_zip

from .conftest import oblique


def _nifti(path, data, affine, units=("mm", "sec"), step=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(*units)
    if step is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = step
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


# case 2: the time axis ------------------------------------------------------------------

@pytest.mark.parametrize("units,step,seconds", [("sec", 2.2, 2.2), ("msec", 28.6, 0.0286),
                                                ("usec", 40000.0, 0.04)])
def test_nifti_frame_interval_read_in_seconds_and_written_back(tmp_path, units, step, seconds):
    p = _nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 3, 5), np.int16), np.eye(4),
               ("mm", units), step)
    vol = read_image(p)
    assert vol.frame_interval_s == pytest.approx(seconds, rel=1e-6)
    out = write_nifti(vol, tmp_path / "b.nii.gz")
    hdr = nib.load(str(out)).header
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert float(hdr["pixdim"][4]) == pytest.approx(seconds, rel=1e-6)


def test_unknown_time_unit_is_not_invented(tmp_path):
    p = _nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 3, 5), np.int16), np.eye(4),
               ("mm", "unknown"), 1.0)
    vol = read_image(p)
    assert vol.frame_interval_s is None and vol.meta["nifti_pixdim4"] == 1.0
    hdr = nib.load(str(write_nifti(vol, tmp_path / "b.nii.gz"))).header
    assert hdr.get_xyzt_units()[1] == "unknown" and float(hdr["pixdim"][4]) == 0.0


def test_real_functional_scan_keeps_its_tr():
    p = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "functional.nii")
    if not os.path.exists(p):
        pytest.skip("nibabel test data not installed")
    assert read_image(p).frame_interval_s == pytest.approx(2.0)


@pytest.mark.parametrize("unit,factor", [("micron", 1e-3), ("meter", 1e3)])
def test_nifti_spatial_units_become_millimetres(tmp_path, unit, factor):
    affine = make_affine((5.0, 5.0, 8.0), origin=(100.0, -50.0, 20.0))
    vol = read_image(_nifti(tmp_path / "a.nii.gz", np.zeros((3, 3, 3), np.float32), affine,
                            (unit, "sec")))
    np.testing.assert_allclose(vol.spacing, np.array([5.0, 5.0, 8.0]) * factor)
    np.testing.assert_allclose(vol.origin, np.array([100.0, -50.0, 20.0]) * factor)


def test_dicom_cine_trigger_step_is_the_frame_interval(tmp_path, cine4d):
    cine = cine4d.with_data(cine4d.data, cine4d.affine)
    cine.meta.pop("frame_times_ms")
    cine.frame_interval_s = 0.0286
    zpath = write_ukbb_zip(tmp_path / "1000000_20209_2_0.zip", {"CINE_segmented_SAX": cine})
    vol = read_image(zpath)
    assert vol.frame_interval_s == pytest.approx(0.0286)
    assert vol.meta["frame_times_ms"] == pytest.approx([0, 28.6, 57.2, 85.8, 114.4, 143.0])
    hdr = nib.load(str(write_nifti(vol, tmp_path / "sa.nii.gz"))).header
    assert float(hdr["pixdim"][4]) == pytest.approx(0.0286)


def test_slices_with_their_own_trigger_times_are_all_listed(tmp_path, cine4d):
    files = write_dicom_series(cine4d, tmp_path / "c", "CINE", frame_interval_ms=30.0)
    import pydicom

    for f in files:  # the last slice was acquired at another heart rate (own breath-hold)
        ds = pydicom.dcmread(f)
        if ds.InstanceNumber > 24:
            ds.TriggerTime = f"{(ds.InstanceNumber - 25) * 33.0:g}"
            ds.save_as(f)
    vol = read_image(tmp_path / "c")
    assert vol.frame_interval_s == pytest.approx(0.030)
    per_slice = vol.meta["frame_times_ms_per_slice"]
    assert per_slice[0][:2] == [0.0, 30.0] and per_slice[-1][:2] == [0.0, 33.0]


def test_preprocess_keeps_time_and_lists_frame_times(tmp_path, runner, cine4d):
    write_dicom_series(cine4d.with_data(np.round(cine4d.data)), tmp_path / "c", "CINE",
                       frame_interval_ms=28.6)
    out = tmp_path / "sa.nii.gz"
    res = runner.invoke(cli, ["preprocess", "--input", str(tmp_path / "c"), "--output", str(out),
                              "--spacing", "1,1,keep"])
    assert res.exit_code == 0, res.output
    assert float(nib.load(str(out)).header["pixdim"][4]) == pytest.approx(0.0286)
    side = json.loads((tmp_path / "sa.json").read_text())
    assert side["meta"]["frame_times_ms"] == pytest.approx([0, 28.6, 57.2, 85.8, 114.4, 143.0])
    assert side["output_geometry"]["frame_interval_s"] == pytest.approx(0.0286)


# case 1: label values beyond int16 --------------------------------------------------------

@pytest.mark.parametrize("values,dtype", [([0, 17, 300, 40000, 65535], np.uint16),
                                          ([0, 3, 614454277], np.int32),
                                          ([0, 2, 614454277], np.float64),
                                          ([-5, 0, 70000], np.int64)])
@pytest.mark.parametrize("spacing", [None, "1,1,1"])
def test_label_values_survive_preprocess(tmp_path, runner, values, dtype, spacing):
    data = np.zeros((6, 5, 4), dtype)
    for i, v in enumerate(values):
        data[i, :, :] = v
    src = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique(), dtype=dtype), str(src))
    out = tmp_path / "out.nii.gz"
    args = ["preprocess", "--input", str(src), "--output", str(out), "--role", "label"]
    res = runner.invoke(cli, args + (["--spacing", spacing] if spacing else []))
    assert res.exit_code == 0, res.output
    back = np.asarray(nib.load(str(out)).dataobj)
    assert set(np.unique(back).tolist()) == set(values)


def test_integer_images_are_not_rounded_through_float32(tmp_path):
    data = np.array([0, 16777217, 2**31 - 1], np.int32).reshape(3, 1, 1)
    back = read_image(write_nifti(Volume(data, np.eye(4)), tmp_path / "i.nii.gz"))
    np.testing.assert_array_equal(back.data, data)


def test_nifti_without_geometry_codes_says_its_geometry_is_made_up(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((3, 3, 3))
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None, header=hdr),
             str(tmp_path / "a.nii.gz"))
    assert read_image(tmp_path / "a.nii.gz").meta["nifti_affine_from"].startswith("pixdim only")
    assert read_image(write_nifti(Volume(np.zeros((3, 3, 3)), np.eye(4)), tmp_path / "b.nii.gz")
                      ).meta["nifti_affine_from"] == "sform"
