"""The cardiac cohort as UK Biobank zips: the same voxels, geometry and time as the NIfTI
cohort, with the DICOM tags a scanner writes; a heart rate per subject."""

from __future__ import annotations

import json
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medflow.io import read_image
from medflow.io.samplesheet import load_samplesheet
from medflow.phantom.cardiac import write_cardiac_subject
from medflow.phantom.cli import DEFAULT_FRAMES, demo_cohort
from medflow.phantom.ukbb import HEART_RATE_BPM

SEED, FRAMES = 7, 3


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("ukbb")
    roles = {}
    for fmt in ("nifti", "ukbb"):
        (root / fmt).mkdir()
        roles[fmt] = write_cardiac_subject(root / fmt, "sub-x", SEED, frames=FRAMES,
                                           image_format=fmt, eid=1234567)
    return root, roles


def test_zips_read_back_voxel_equal_to_the_nifti_cohort(both):
    root, roles = both
    assert roles["ukbb"]["sa"] == "1234567_20209_2_0.zip#CINE_segmented_SAX"
    assert roles["ukbb"]["la_4ch"] == "1234567_20208_2_0.zip#CINE_segmented_LAX_4Ch"
    assert not (root / "ukbb" / "sa.nii.gz").exists()
    for role in ("sa", "la_2ch", "la_4ch"):
        nifti = read_image(root / "nifti" / roles["nifti"][role])
        dicom = read_image(root / "ukbb" / roles["ukbb"][role])
        assert dicom.data.dtype == nifti.data.dtype == np.int16
        np.testing.assert_array_equal(dicom.data, nifti.data)
        np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
        assert dicom.frame_interval_s == pytest.approx(nifti.frame_interval_s, rel=1e-6)
    for name in ("seg_sa.nii.gz", "gt_ed.nii.gz", "truth.json"):
        assert (root / "nifti" / name).read_bytes() != b"" and (root / "ukbb" / name).exists()


def test_heart_rate_and_frame_interval(both):
    root, _ = both
    truth = json.loads((root / "nifti" / "truth.json").read_text())
    assert HEART_RATE_BPM[0] <= truth["hr_bpm"] <= HEART_RATE_BPM[1]
    assert truth["frame_interval_s"] == pytest.approx(60.0 / (truth["hr_bpm"] * FRAMES))
    assert truth["lv_cardiac_output_l_min"] == pytest.approx(
        (truth["lvedv_ml"] - truth["lvesv_ml"]) * truth["hr_bpm"] / 1000)
    hdr = nib.load(str(root / "nifti" / "sa.nii.gz")).header
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert float(hdr["pixdim"][4]) == pytest.approx(truth["frame_interval_s"], rel=1e-6)
    assert json.loads((root / "ukbb" / "truth.json").read_text())["eid"] == 1234567


def test_zips_hold_the_series_and_tags_of_a_scanner(both):
    root, _ = both
    with zipfile.ZipFile(root / "ukbb" / "1234567_20209_2_0.zip") as zf:
        names = zf.namelist()
        assert "manifest.csv" in names
        headers = [pydicom.dcmread(zf.open(n), stop_before_pixels=True)
                   for n in names if n.endswith(".dcm")]
    blocks = sorted({h.SeriesDescription for h in headers})
    n_slices = read_image(root / "nifti" / "sa.nii.gz").shape3[2]
    assert blocks == sorted(f"CINE_segmented_SAX_b{k}" for k in range(1, n_slices + 1))
    assert len(headers) == n_slices * FRAMES
    h = headers[0]
    assert float(h.SliceThickness) == 8.0 and float(h.SpacingBetweenSlices) == 10.0
    assert h.PatientID == "1234567" and h.AcquisitionTime and h.SeriesInstanceUID
    assert len({x.SOPInstanceUID for x in headers}) == len(headers)
    assert sorted({x.InstanceNumber for x in headers}) == list(range(1, FRAMES + 1))
    assert int(h.CardiacNumberOfImages) == FRAMES
    with zipfile.ZipFile(root / "ukbb" / "1234567_20208_2_0.zip") as zf:
        manifest = zf.read("manifest.csv").decode()
    assert "CINE_segmented_LAX_4Ch" in manifest and "_3Ch" not in manifest


def test_demo_cohort_ukbb_samplesheet(tmp_path, runner):
    assert DEFAULT_FRAMES == {"nifti": 20, "ukbb": 50}
    res = runner.invoke(demo_cohort, ["--kind", "cardiac", "--format", "ukbb", "--subjects", "1",
                                      "--frames", "2", "--seed", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    sheet = load_samplesheet(tmp_path / "samplesheet.csv")
    assert sheet.loc[0, "sa"].endswith("sub-000/1000000_20209_2_0.zip#CINE_segmented_SAX")
    assert {"seg_sa", "gt_ed", "truth"} <= set(sheet.columns)
    res = runner.invoke(demo_cohort, ["--kind", "brats", "--format", "ukbb", "--out",
                                      str(tmp_path / "b")])
    assert res.exit_code == 2
