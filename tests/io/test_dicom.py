"""DICOM series: stacking, geometry against SimpleITK, cine, UK Biobank zips, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medflow.errors import EXIT_DATA, InvalidDataError
from medflow.io import Volume, read_image
from medflow.io.dicom import read_dicom, select_series
from medflow.io.dicom_write import write_dicom_series, write_ukbb_zip
from medflow.io.images import LPS_TO_RAS

from .conftest import oblique, write_enhanced_mr


def _tolerance(vol: Volume) -> float:
    # uint16 with slope (max - min) / 65535: half a step of rounding, plus float32 noise.
    return float(vol.data.max() - vol.data.min()) / 65535 * 0.51 + 1e-4


def _edit(path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _sitk_affine(img) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return LPS_TO_RAS @ lps


def test_round_trip_oblique_3d(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "T1 oblique")
    assert len(files) == image3d.shape3[2]
    (vol,) = read_dicom(tmp_path / "s")
    assert vol.data.dtype == np.float32 and vol.data.shape == image3d.data.shape
    np.testing.assert_allclose(vol.affine, image3d.affine, atol=1e-6)
    np.testing.assert_allclose(vol.data, image3d.data, atol=_tolerance(image3d))
    assert vol.meta["series_description"] == "T1 oblique"
    assert vol.meta["modality"] == "MR" and vol.meta["n_files"] == len(files)
    assert vol.meta["format"] == "dicom-folder" and vol.meta["series_uid"]


def test_geometry_and_values_agree_with_simpleitk(tmp_path, image3d):
    folder = tmp_path / "s"
    write_dicom_series(image3d, folder, "x")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    vol = read_image(folder)
    np.testing.assert_allclose(vol.affine, _sitk_affine(ref), atol=1e-5)
    ref_data = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)
    np.testing.assert_allclose(vol.data, ref_data, atol=1e-3)


def test_round_trip_cine_4d(tmp_path, cine4d):
    files = write_dicom_series(cine4d, tmp_path / "c", "CINE")
    assert len(files) == 5 * 6  # one file per slice per frame
    (vol,) = read_dicom(tmp_path / "c")
    assert vol.data.shape == cine4d.data.shape
    np.testing.assert_allclose(vol.affine, cine4d.affine, atol=1e-6)
    np.testing.assert_allclose(vol.data, cine4d.data, atol=_tolerance(cine4d))
    assert vol.meta["frame_times_ms"] == cine4d.meta["frame_times_ms"]


def test_cine_frames_ordered_by_trigger_time_not_instance(tmp_path, cine4d):
    files = write_dicom_series(cine4d, tmp_path / "c", "CINE")
    for f in files:  # reverse InstanceNumber inside each slice: trigger time must win
        ds = pydicom.dcmread(f)
        _edit(f, InstanceNumber=10_000 - ds.InstanceNumber)
    (vol,) = read_dicom(tmp_path / "c")
    np.testing.assert_allclose(vol.data, cine4d.data, atol=_tolerance(cine4d))


def test_shuffled_and_nested_files_stack_the_same(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    rng = np.random.default_rng(3)
    for n, i in enumerate(rng.permutation(len(files))):
        target = tmp_path / "shuffled" / f"sub{n % 3}" / f"{rng.integers(1e9):09d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[i], target)
    # Non-image DICOM and stray files beside the images are skipped.
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "shuffled" / "report.dcm")
    (tmp_path / "shuffled" / "manifest.csv").write_text("file,series\n")
    (vol,) = read_dicom(tmp_path / "shuffled")
    np.testing.assert_allclose(vol.affine, image3d.affine, atol=1e-6)
    np.testing.assert_allclose(vol.data, image3d.data, atol=_tolerance(image3d))


def test_non_parallel_slices_rejected(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    _edit(files[4], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(InvalidDataError, match="not parallel") as err:
        read_dicom(tmp_path / "s")
    assert str(tmp_path / "s") in str(err.value) and err.value.exit_code == EXIT_DATA


def test_missing_slice_rejected(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    files[7].unlink()
    with pytest.raises(InvalidDataError, match="uneven slice spacing.*missing"):
        read_dicom(tmp_path / "s")


def test_uneven_spacing_rejected(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    ds = pydicom.dcmread(files[5])
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    moved = np.array(ds.ImagePositionPatient, dtype=float) + np.cross(iop[:3], iop[3:]) * 1.0
    _edit(files[5], ImagePositionPatient=[f"{v:.6f}" for v in moved])
    with pytest.raises(InvalidDataError, match="uneven slice spacing"):
        read_dicom(tmp_path / "s")


def test_cine_with_missing_frame_rejected(tmp_path, cine4d):
    files = write_dicom_series(cine4d, tmp_path / "c", "CINE")
    files[8].unlink()
    with pytest.raises(InvalidDataError, match="different numbers of frames"):
        read_dicom(tmp_path / "c")


def test_single_slice_uses_slice_spacing(tmp_path, image3d):
    one = image3d.with_data(image3d.data[:, :, :1])
    write_dicom_series(one, tmp_path / "s", "x")
    vol = read_image(tmp_path / "s")
    assert vol.data.shape == (10, 20, 1)
    np.testing.assert_allclose(vol.affine, one.affine, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the garbage
@pytest.mark.parametrize("damage", ["garbage", "cut_header"])
def test_corrupt_dicom_in_folder_names_the_file(tmp_path, image3d, damage):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    raw = files[3].read_bytes()
    if damage == "garbage":
        raw = raw[:132] + b"\x08\x00\x05\x00CS\xff\xff" + b"garbage" * 20
    else:
        raw = raw[:400]
    files[3].write_bytes(raw)
    with pytest.raises(InvalidDataError) as err:
        read_image(tmp_path / "s")
    assert files[3].name in str(err.value) and err.value.exit_code == EXIT_DATA


def test_truncated_pixel_data_rejected(tmp_path, image3d):
    files = write_dicom_series(image3d, tmp_path / "s", "x")
    files[2].write_bytes(files[2].read_bytes()[:-50])
    with pytest.raises(InvalidDataError, match="pixel data") as err:
        read_dicom(tmp_path / "s")
    assert files[2].name in str(err.value)


def test_non_dicom_file_and_empty_folder(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_text("hello, not DICOM\n")
    with pytest.raises(InvalidDataError, match="not a readable DICOM") as err:
        read_image(bad)
    assert str(bad) in str(err.value) and err.value.exit_code == EXIT_DATA
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "README").write_text("no images here")
    with pytest.raises(InvalidDataError, match="no DICOM images"):
        read_image(folder)


def _ukbb_zip(path, cine4d):
    la = {name: Volume(cine4d.data[:, :, 2:3], oblique(angle=a), meta=cine4d.meta)
          for name, a in (("CINE_segmented_LAX_2Ch", 1.1), ("CINE_segmented_LAX_4Ch", -0.9))}
    return write_ukbb_zip(path, {"CINE_segmented_SAX": cine4d, **la}, per_slice_series=True)


def test_ukbb_zip_splits_and_merges_series(tmp_path, cine4d):
    zpath = _ukbb_zip(tmp_path / "20209_2_0.zip", cine4d)
    vols = read_dicom(zpath)
    assert [v.meta["series_description"] for v in vols] == [
        "CINE_segmented_SAX", "CINE_segmented_LAX_2Ch", "CINE_segmented_LAX_4Ch"]
    sa, la2, la4 = vols
    assert sa.data.shape == (8, 9, 5, 6) and la2.data.shape == la4.data.shape == (8, 9, 1, 6)
    np.testing.assert_allclose(sa.affine, cine4d.affine, atol=1e-6)
    np.testing.assert_allclose(sa.data, cine4d.data, atol=_tolerance(cine4d))
    assert [d for d, _ in sa.meta["source_series"]] == [f"CINE_segmented_SAX_b{k}"
                                                         for k in range(1, 6)]
    assert sa.meta["format"] == "dicom-zip" and sa.meta["n_files"] == 30


def test_blocks_that_are_not_parallel_stay_apart(tmp_path, cine4d):
    next_slice = cine4d.affine.copy()
    next_slice[:3, 3] += cine4d.affine[:3, 2]
    blocks = {"X_b1": cine4d.with_data(cine4d.data[:, :, :1]),
              "X_b2": Volume(cine4d.data[:, :, 1:2], next_slice),
              "X_b3": Volume(cine4d.data[:, :, :1], oblique(angle=1.2))}
    write_ukbb_zip(tmp_path / "z.zip", blocks, per_slice_series=False)
    names = sorted(v.meta["series_description"] for v in read_dicom(tmp_path / "z.zip"))
    assert names == ["X", "X_b3"]


def test_select_series(tmp_path, cine4d):
    zpath = _ukbb_zip(tmp_path / "u.zip", cine4d)
    vols = read_dicom(zpath)
    with pytest.raises(InvalidDataError, match="holds 3 DICOM series.*CINE_segmented_LAX_2Ch"
                                               ".*--series") as err:
        read_image(zpath)
    assert str(zpath) in str(err.value)
    assert select_series(vols, "CINE_segmented_LAX_4Ch", zpath) is vols[2]
    assert select_series(vols, "CINE_segmented_SAX_b3", zpath) is vols[0]
    assert select_series(vols, vols[1].meta["series_uid"], zpath) is vols[1]
    assert select_series(vols, "1", zpath) is vols[1]
    assert select_series(vols[:1], None, zpath) is vols[0]
    with pytest.raises(InvalidDataError, match="no DICOM series matches --series 'T2'"):
        select_series(vols, "T2", zpath)
    la = read_image(zpath, series="CINE_segmented_LAX_2Ch")
    assert la.data.shape == (8, 9, 1, 6) and la.meta["format"] == "dicom-zip"
    only = read_dicom(zpath, series="2")  # stacks just the chosen series
    assert len(only) == 1 and only[0].meta["series_index"] == 2
    assert select_series(only, "2", zpath) is only[0]


def test_zip_without_zip_suffix_is_detected(tmp_path, cine4d):
    zpath = _ukbb_zip(tmp_path / "u.zip", cine4d)
    plain = zpath.rename(tmp_path / "20209_2_0")  # extension-less: read_image says dicom-file
    assert len(read_dicom(plain)) == 3
    assert read_image(plain, series="0").data.shape == (8, 9, 5, 6)


def test_writers_are_byte_reproducible(tmp_path, cine4d):
    a = _ukbb_zip(tmp_path / "a.zip", cine4d).read_bytes()
    b = _ukbb_zip(tmp_path / "b.zip", cine4d).read_bytes()
    assert a == b
    one = write_dicom_series(cine4d, tmp_path / "s1", "x", seed=4)
    two = write_dicom_series(cine4d, tmp_path / "s2", "x", seed=4)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(one, two))


def test_enhanced_multiframe(tmp_path, image3d):
    vol = image3d.with_data(np.round(image3d.data[:, :, :6]), oblique())
    write_enhanced_mr(vol, tmp_path / "enh.dcm")
    back = read_image(tmp_path / "enh.dcm")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)
    np.testing.assert_allclose(back.data, vol.data, atol=1e-4)
    assert back.meta["series_description"] == "enhanced" and back.meta["n_files"] == 1


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm"])
def test_pydicom_real_data_matches_simpleitk(name):
    path = get_testdata_file(name)
    vol = read_image(path)
    ref = sitk.ReadImage(path)
    ref_affine = _sitk_affine(ref)
    # SimpleITK gives a single slice 1 mm; we use SliceThickness, so compare columns 0, 1, 3.
    np.testing.assert_allclose(vol.affine[:3, [0, 1, 3]], ref_affine[:3, [0, 1, 3]], atol=1e-5)
    normal = ref_affine[:3, 2] / np.linalg.norm(ref_affine[:3, 2])
    np.testing.assert_allclose(vol.direction[:, 2], normal, atol=1e-6)
    assert vol.spacing[2] == pytest.approx(float(pydicom.dcmread(path).SliceThickness))
    np.testing.assert_array_equal(vol.data[:, :, 0], sitk.GetArrayFromImage(ref)[0].T)
    assert vol.meta["format"] == "dicom-file" and vol.meta["modality"] in ("CT", "MR")


def test_pydicom_truncated_file_rejected():
    with pytest.raises(InvalidDataError, match="pixel data"):
        read_image(get_testdata_file("MR_truncated.dcm"))
