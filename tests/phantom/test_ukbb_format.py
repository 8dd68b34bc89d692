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
from medflow.phantom.cli import DEFAULT_FRAMES, demo_cohort, subject_seed
from medflow.phantom.ukbb import HEART_RATE_BPM

SEED, FRAMES = 7, 3


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same subject written by `demo-cohort --format ukbb` and as NIfTI."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("ukbb")
    res = CliRunner().invoke(demo_cohort, ["--kind", "cardiac", "--format", "ukbb",
                                           "--subjects", "1", "--frames", str(FRAMES),
                                           "--seed", str(SEED), "--out", str(root / "ukbb")])
    assert res.exit_code == 0, res.output
    (root / "nifti").mkdir()
    nifti = write_cardiac_subject(root / "nifti", "sub-000", subject_seed(SEED, 0),
                                  frames=FRAMES)
    ukbb = {k: v for k, v in load_samplesheet(
        root / "ukbb" / "samplesheet.csv", check_files=False).iloc[0].items() if k != "subject"}
    return root, {"nifti": nifti, "ukbb": ukbb}


def test_zips_read_back_voxel_equal_to_the_nifti_cohort(both):
    root, roles = both
    assert roles["ukbb"]["sa"].endswith("sub-000/1000000_20209_2_0.zip#CINE_segmented_SAX")
    assert roles["ukbb"]["la_4ch"].endswith("1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch")
    assert not (root / "ukbb" / "sub-000" / "sa.nii.gz").exists()
    for role in ("sa", "la_2ch", "la_4ch"):
        nifti = read_image(root / "nifti" / roles["nifti"][role])
        dicom = read_image(roles["ukbb"][role])
        assert dicom.data.dtype == nifti.data.dtype == np.int16
        np.testing.assert_array_equal(dicom.data, nifti.data)
        np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
        assert dicom.frame_interval_s == pytest.approx(nifti.frame_interval_s, rel=1e-6)
    for name in ("seg_sa.nii.gz", "gt_ed.nii.gz", "truth.json"):
        assert (root / "ukbb" / "sub-000" / name).exists()
    assert (root / "nifti" / "seg_sa.nii.gz").read_bytes() == \
        (root / "ukbb" / "sub-000" / "seg_sa.nii.gz").read_bytes()


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
    assert json.loads((root / "ukbb" / "sub-000" / "truth.json").read_text())["eid"] == 1000000


def test_zips_hold_the_series_and_tags_of_a_scanner(both):
    root, _ = both
    with zipfile.ZipFile(root / "ukbb" / "sub-000" / "1000000_20209_2_0.zip") as zf:
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
    assert h.PatientID == "1000000" and h.AcquisitionTime and h.SeriesInstanceUID
    assert len({x.SOPInstanceUID for x in headers}) == len(headers)
    assert sorted({x.InstanceNumber for x in headers}) == list(range(1, FRAMES + 1))
    assert int(h.CardiacNumberOfImages) == FRAMES
    with zipfile.ZipFile(root / "ukbb" / "sub-000" / "1000000_20208_2_0.zip") as zf:
        manifest = zf.read("manifest.csv").decode()
    assert "CINE_segmented_LAX_4Ch" in manifest and "_3Ch" not in manifest


def test_demo_cohort_ukbb_samplesheet(both, tmp_path, runner):
    assert DEFAULT_FRAMES == {"nifti": 20, "ukbb": 50}
    root, _ = both
    sheet = load_samplesheet(root / "ukbb" / "samplesheet.csv")  # series checked to exist
    assert {"seg_sa", "gt_ed", "truth"} <= set(sheet.columns)
    res = runner.invoke(demo_cohort, ["--kind", "brats", "--format", "ukbb", "--out",
                                      str(tmp_path / "b")])
    assert res.exit_code == 2
