"""Silent wrong results DICOM users report (issue 12, cases 3-6 and 8-11), each with the
right value, plus their neighbours: how files become series, series become volumes, and
vendor layouts change where pixels lie."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medflow.errors import EXIT_DATA, InvalidDataError
from medflow.io import Volume, make_affine, read_image
from medflow.io.dicom import list_series, read_dicom
from medflow.io.dicom_write import write_dicom_series

from .conftest import oblique
from .dicom_makers import (edit, make_ge_pepolar, set_pixels, write_jpeg_lossless,
                           write_mosaic)


def _vol(shape, seed=0, affine=None, **kw) -> Volume:
    data = np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)
    return Volume(data, oblique() if affine is None else affine, **kw)


# case 3: the same export twice is not a cine ------------------------------------------

def test_export_present_twice_is_one_volume_with_copies_counted(tmp_path):
    vol = _vol((32, 32, 6))
    write_dicom_series(vol, tmp_path / "export" / "a", "T1")
    shutil.copytree(tmp_path / "export" / "a", tmp_path / "export" / "copy")
    back = read_image(tmp_path / "export")
    assert back.data.shape == (32, 32, 6)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.meta["duplicates_dropped"] == 6 and back.meta["n_files"] == 6


def test_one_file_present_twice_is_dropped_not_called_missing(tmp_path):
    files = write_dicom_series(_vol((32, 32, 6)), tmp_path / "s", "T1")
    shutil.copy(files[2], tmp_path / "s" / "again.dcm")
    back = read_image(tmp_path / "s")
    assert back.data.shape == (32, 32, 6) and back.meta["duplicates_dropped"] == 1
    assert back.meta["duplicate_files"] == [str(tmp_path / "s" / files[2].name)] or \
        back.meta["duplicate_files"] == [str(tmp_path / "s" / "again.dcm")]


def test_reexport_with_new_uids_is_a_copy_only_with_equal_pixels(tmp_path):
    files = write_dicom_series(_vol((8, 9, 4)), tmp_path / "s", "T1")
    twin = tmp_path / "s" / "reexport.dcm"
    shutil.copy(files[1], twin)
    edit(twin, SOPInstanceUID=pydicom.uid.generate_uid())
    assert read_image(tmp_path / "s").meta["duplicates_dropped"] == 1
    set_pixels(twin, pydicom.dcmread(twin).pixel_array + 1)
    with pytest.raises(InvalidDataError, match="claim the same image") as err:
        read_image(tmp_path / "s")
    assert "reexport.dcm" in str(err.value) and files[1].name in str(err.value)


def test_missing_frame_names_the_slice(tmp_path, cine4d):
    files = write_dicom_series(cine4d, tmp_path / "c", "CINE")
    files[8].unlink()  # slice 1, frame 2
    with pytest.raises(InvalidDataError, match=r"most hold 6, slice\(s\) 1 \(5\)"):
        read_image(tmp_path / "c")


# case 4: the _b<N> rule belongs to UK Biobank per-slice cines ---------------------------

def test_b_value_series_are_not_joined(tmp_path):
    b0, b1000 = _vol((24, 24, 8), 1), _vol((24, 24, 8), 2)
    write_dicom_series(b0, tmp_path / "d" / "b0", "ep2d_diff_b0", series_number=3)
    write_dicom_series(b1000, tmp_path / "d" / "b1000", "ep2d_diff_b1000", series_number=4)
    chosen = read_image(tmp_path / "d", series="ep2d_diff_b1000")
    assert chosen.data.shape == (24, 24, 8)
    np.testing.assert_array_equal(chosen.data, b1000.data)
    with pytest.raises(InvalidDataError, match="holds 2 DICOM series") as err:
        read_image(tmp_path / "d")
    assert err.value.exit_code == EXIT_DATA


def test_single_slice_b_values_at_one_position_stay_apart(tmp_path):
    one = _vol((12, 10, 1))
    for n, name in enumerate(("trace_b0", "trace_b500", "trace_b1000")):
        write_dicom_series(one, tmp_path / "d" / name, name, series_number=n + 1)
    names = [s["description"] for s in list_series(tmp_path / "d")]
    assert names == ["trace_b0", "trace_b500", "trace_b1000"]


# case 5: a UK Biobank slice acquired twice ----------------------------------------------

def _ukbb_with_repeat(tmp_path, cine4d):
    folder = tmp_path / "unzipped"
    for k in range(cine4d.shape3[2]):
        affine = cine4d.affine.copy()
        affine[:3, 3] = (cine4d.affine @ [0, 0, k, 1])[:3]
        block = cine4d.with_data(cine4d.data[:, :, k:k + 1], affine)
        write_dicom_series(block, folder / f"b{k + 1}", f"CINE_segmented_SAX_b{k + 1}",
                           series_number=10 + k)
        if k == 2:  # re-scanned later: new series, same description, other pixels
            write_dicom_series(block.with_data(block.data + 500), folder / "b3_again",
                               "CINE_segmented_SAX_b3", series_number=30, seed=1)
    zpath = tmp_path / "1000000_20209_2_0.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.rglob("*.dcm")):
            zf.write(f, f"{f.parent.name}_{f.name}")
    return zpath


def test_rescanned_ukbb_slice_keeps_the_last_acquired(tmp_path, cine4d):
    zpath = _ukbb_with_repeat(tmp_path, cine4d)
    sa = read_image(zpath, series="CINE_segmented_SAX")
    assert sa.data.shape == cine4d.data.shape
    expected = cine4d.data.copy()
    expected[:, :, 2] += 500
    np.testing.assert_allclose(sa.data, expected, atol=0.05)
    (replaced,) = sa.meta["replaced_series"]
    assert replaced["description"] == "CINE_segmented_SAX_b3" and replaced["series_number"] == 12
    assert replaced["rule"] == "last acquired kept"
    # the earlier acquisition can be chosen by its UID: that choice then works
    chosen = read_image(zpath, series=replaced["uid"])
    np.testing.assert_allclose(chosen.data, cine4d.data, atol=0.05)
    assert chosen.meta["replaced_series"][0]["rule"] == "preferred by --series"


# case 6: Siemens mosaic -----------------------------------------------------------------

def test_mosaic_is_unpacked_into_slices(tmp_path):
    affine = make_affine((2.0, 2.5, 3.0), oblique()[:3, :3] / [1.25, 1.5, 4.0], (10, -20, 5))
    vol = _vol((16, 16, 9, 4), 3, affine)
    files = write_mosaic(vol, tmp_path / "m")
    assert pydicom.dcmread(files[0]).Rows == 48
    back = read_image(tmp_path / "m")
    assert back.data.shape == (16, 16, 9, 4)
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.frame_interval_s == pytest.approx(2.0)  # AcquisitionTime steps (no trigger)


@pytest.mark.parametrize("what", ["csa", "both"])
def test_mosaic_that_cannot_be_placed_is_refused(tmp_path, what):
    write_mosaic(_vol((16, 16, 9, 1)), tmp_path / "m", count_tag=what == "csa", csa=False)
    with pytest.raises(InvalidDataError, match="mosaic.*cannot be placed") as err:
        read_image(tmp_path / "m")
    assert "MR0000.dcm" in str(err.value)


def test_real_siemens_mosaic_geometry_matches_nibabel(tmp_path):
    import gzip
    import os
    import warnings

    import nibabel

    src = os.path.join(os.path.dirname(nibabel.__file__), "nicom", "tests", "data",
                       "siemens_dwi_1000.dcm.gz")
    if not os.path.exists(src):
        pytest.skip("nibabel's mosaic test file is not installed")
    (tmp_path / "dwi.dcm").write_bytes(gzip.open(src).read())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom.dicomwrappers import wrapper_from_data
        ref = wrapper_from_data(pydicom.dcmread(tmp_path / "dwi.dcm"))
    vol = read_image(tmp_path / "dwi.dcm")
    assert vol.data.shape == ref.image_shape == (128, 128, 48)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    np.testing.assert_allclose(lps[:3, 3], ref.image_position, atol=1e-4)
    np.testing.assert_allclose(lps[:3, 2] / vol.spacing[2], ref.slice_normal, atol=1e-5)


# case 8: mixed image kinds in one series ------------------------------------------------

def _one_series_two_kinds(tmp_path, a: Volume, b: Volume, tags_a: dict, tags_b: dict):
    uid = pydicom.uid.generate_uid(entropy_srcs=["two kinds"])
    fa = write_dicom_series(a, tmp_path / "s" / "a", "fmap", uid)
    fb = write_dicom_series(b, tmp_path / "s" / "b", "fmap", uid)
    for f in fa:
        edit(f, **tags_a)
    for f in fb:
        ds = pydicom.dcmread(f)
        edit(f, SOPInstanceUID=pydicom.uid.generate_uid(), InstanceNumber=ds.InstanceNumber
             + 1000, **tags_b)
    return tmp_path / "s"


def test_magnitude_and_phase_are_two_series(tmp_path, cine4d):
    mag, phase = cine4d, cine4d.with_data(cine4d.data * 0 + 7)
    folder = _one_series_two_kinds(tmp_path, mag, phase,
                                   {"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
                                   {"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]})
    vols = read_dicom(folder)
    assert [v.meta["series_description"] for v in vols] == ["fmap_m", "fmap_p"]
    assert all(v.data.shape == (8, 9, 5, 6) for v in vols)  # a cine, not 12 frames
    np.testing.assert_allclose(vols[1].data, 7, atol=0.01)
    assert vols[0].meta["image_kind"]["image_type"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert read_image(folder, series="fmap_p").meta["series_description"] == "fmap_p"


def test_two_echoes_are_two_series(tmp_path):
    e1, e2 = _vol((8, 8, 4), 1), _vol((8, 8, 4), 2)
    folder = _one_series_two_kinds(tmp_path, e1, e2, {"EchoNumbers": 1, "EchoTime": "4.9"},
                                   {"EchoNumbers": 2, "EchoTime": "7.4"})
    vols = read_dicom(folder)
    assert [v.meta["series_description"] for v in vols] == ["fmap_e1", "fmap_e2"]
    np.testing.assert_array_equal(vols[1].data, e2.data)


def _private_tags(folder, manufacturer: str, tags: list[tuple]) -> None:
    for f in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.Manufacturer = manufacturer
        for tag, vr, value in tags:
            ds.add_new(tag, vr, value(ds) if callable(value) else value)
        ds.save_as(f)


def test_ge_field_map_and_magnitude_are_two_series(tmp_path):
    fmap, mag = _vol((8, 8, 4), 1), _vol((8, 8, 4), 2)
    folder = _one_series_two_kinds(tmp_path, fmap, mag, {}, {})
    _private_tags(folder, "GE MEDICAL SYSTEMS", [
        ((0x0019, 0x0010), "LO", "GEMS_ACQU_01"), ((0x0019, 0x109C), "LO", "3db0map"),
        ((0x0021, 0x0010), "LO", "GEMS_RELA_01"), ((0x0021, 0x104F), "SS", 4)])
    vols = {v.meta["series_description"]: v for v in read_dicom(folder)}
    assert set(vols) == {"fmap_fieldmap_hz", "fmap_magnitude"}
    np.testing.assert_array_equal(vols["fmap_fieldmap_hz"].data, fmap.data)
    np.testing.assert_array_equal(vols["fmap_magnitude"].data, mag.data)


def test_philips_derived_trace_is_not_a_diffusion_direction(tmp_path):
    dwi, trace = _vol((8, 8, 4, 3), 1), _vol((8, 8, 4), 2)
    folder = _one_series_two_kinds(tmp_path, dwi, trace, {}, {})
    _private_tags(folder, "Philips Medical Systems", [
        ((0x2001, 0x0010), "LO", "Philips Imaging DD 001"),
        ((0x2001, 0x1004), "CS", lambda ds: "I" if ds.InstanceNumber > 1000 else "M"),
        ((0x0018, 0x9087), "FD", 1000.0)])
    vols = {v.meta["series_description"]: v for v in read_dicom(folder)}
    assert set(vols) == {"fmap", "fmap_isotropic_trace"}  # the acquired kind keeps the name
    assert vols["fmap"].data.shape == (8, 8, 4, 3)
    np.testing.assert_array_equal(vols["fmap_isotropic_trace"].data, trace.data)


# case 9: GE epi_pepolar -----------------------------------------------------------------

def test_ge_pepolar_reversed_volumes_are_flipped_back(tmp_path):
    vol = _vol((8, 10, 3))
    files = write_dicom_series(vol, tmp_path / "s", "pepolar")
    make_ge_pepolar(files, mode=1, flipped=[True] * len(files))
    back = read_image(tmp_path / "s")
    np.testing.assert_array_equal(back.data, vol.data)
    assert "flipped" in back.meta["rows_flipped"]


def test_ge_pepolar_alternating_volumes_split_and_flipped(tmp_path):
    vol = _vol((8, 10, 3, 4), 5)
    files = write_dicom_series(vol, tmp_path / "s", "pepolar", frame_interval_ms=1000)
    positions = [(i % 4) + 1 for i in range(len(files))]  # files run k-major, t-minor
    for f, pos in zip(files, positions):
        edit(f, TemporalPositionIdentifier=pos)
    make_ge_pepolar(files, mode=2, flipped=[p % 2 == 1 for p in positions])
    vols = {v.meta["series_description"]: v for v in read_dicom(tmp_path / "s")}
    assert set(vols) == {"pepolar_fwd", "pepolar_rev"}
    np.testing.assert_array_equal(vols["pepolar_rev"].data, vol.data[..., [0, 2]])
    np.testing.assert_array_equal(vols["pepolar_fwd"].data, vol.data[..., [1, 3]])


# case 10: compressed transfer syntaxes ----------------------------------------------------

@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_RLE.dcm"])
def test_compressed_files_decode_like_the_uncompressed_one(name):
    ref = read_image(get_testdata_file("MR_small.dcm"))
    vol = read_image(get_testdata_file(name))
    np.testing.assert_array_equal(vol.data, ref.data)
    np.testing.assert_allclose(vol.affine, ref.affine)


def test_jpeg_lossless_decodes_like_simpleitk(tmp_path):
    path = tmp_path / "jpeg_lossless.dcm"
    pixels = write_jpeg_lossless(get_testdata_file("MR_small.dcm"), path)
    vol = read_image(path)
    np.testing.assert_array_equal(vol.data[:, :, 0], pixels.T)
    np.testing.assert_array_equal(vol.data[:, :, 0], sitk.GetArrayFromImage(
        sitk.ReadImage(str(path)))[0].T)


# case 11 and nothing skipped without a word -----------------------------------------------

def test_series_that_matches_nothing_lists_what_is_there(tmp_path):
    write_dicom_series(_vol((8, 8, 3)), tmp_path / "s" / "a", "T1 axial", series_number=1)
    write_dicom_series(_vol((8, 8, 3)), tmp_path / "s" / "b", "T2 axial", series_number=2)
    with pytest.raises(InvalidDataError, match=r"no DICOM series matches --series 'FLAIR'; "
                                               r"available: 0: T1 axial .*1: T2 axial"):
        read_image(tmp_path / "s", series="FLAIR")


def test_dicom_without_preamble_is_read_and_strays_are_listed(tmp_path):
    vol = _vol((8, 8, 3))
    files = write_dicom_series(vol, tmp_path / "s", "T1")
    bare = io.BytesIO()
    pydicom.dcmread(files[1]).save_as(bare, enforce_file_format=False)
    files[1].write_bytes(bare.getvalue()[132:] if bare.getvalue()[128:132] == b"DICM"
                         else bare.getvalue())
    (tmp_path / "s" / "README.txt").write_text("exported by a PACS\n")
    back = read_image(tmp_path / "s")
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.meta["skipped_files"] == [str(tmp_path / "s" / "README.txt")]


def test_integer_pixels_stay_exact_integers(tmp_path, cine4d):
    vol = cine4d.with_data(np.round(cine4d.data).astype(np.int16))
    write_dicom_series(vol, tmp_path / "c", "CINE")
    back = read_image(tmp_path / "c")
    assert back.data.dtype == np.int16
    np.testing.assert_array_equal(back.data, vol.data)


def test_unused_high_bits_are_masked_like_pydicom(tmp_path):
    files = write_dicom_series(_vol((6, 7, 1)), tmp_path / "s", "T1")
    ds = pydicom.dcmread(files[0])
    raw = ds.pixel_array.astype(np.uint16) | np.uint16(0xF000)  # overlay bits set
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    ds.PixelData = raw.tobytes()
    ds.save_as(files[0])
    back = read_image(tmp_path / "s")
    np.testing.assert_array_equal(back.data[:, :, 0], pydicom.dcmread(files[0]).pixel_array.T)
