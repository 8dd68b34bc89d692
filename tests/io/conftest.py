"""Fixtures for the DICOM and zip tests: a tiny oblique cine and an enhanced MR file."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medflow.io import Volume, make_affine

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def oblique(spacing=(1.25, 1.5, 4.0), origin=(30.0, -12.0, 7.5), angle=0.4) -> np.ndarray:
    """A right-handed oblique RAS affine (rotation about two axes)."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return make_affine(spacing, rz @ rx, origin)


@pytest.fixture
def cine4d() -> Volume:
    rng = np.random.default_rng(1)
    data = rng.normal(300, 50, size=(8, 9, 5, 6)).astype(np.float32)
    return Volume(data, oblique(), meta={"frame_times_ms": [0.0, 40, 80, 120, 160, 200]})


def write_enhanced_mr(vol: Volume, path) -> None:
    """One Enhanced MR file (NumberOfFrames = slices, geometry in functional groups)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    iop = [*(lps[:3, 0] / spacing[0]), *(lps[:3, 1] / spacing[1])]
    nk = vol.data.shape[2]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["enh"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["enh-series"])
    ds.SeriesDescription, ds.Modality, ds.NumberOfFrames = "enhanced", "MR", nk
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]
    measures.SliceThickness = f"{spacing[2]:.10g}"
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.10g}" for v in iop]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "0.5", "-10", "US"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for k in reversed(range(nk)):  # frames stored against the slice order on purpose
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.10g}" for v in (lps @ [0, 0, k, 1])[:3]]
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([position])
        per.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    stored = np.stack([(vol.data[:, :, k].T + 10) * 2 for k in reversed(range(nk))])
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.round(stored).astype("<u2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
