"""Write a Volume as a DICOM MR series, or several as a UK Biobank-style zip.

Used by the tests and by ``medflow demo-cohort`` to make DICOM inputs with known ground
truth. Output is deterministic: UIDs derive from the series description and a seed, no
dates are written, and times (SeriesTime, AcquisitionTime, one breath-hold a minute) are
derived from the series number, so the same inputs give the same bytes.

The tags are the ones a scanner writes and readers use: ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices, SliceLocation,
TriggerTime (the cine's frame times), CardiacNumberOfImages, SeriesDescription,
SeriesNumber, SeriesInstanceUID, SOPInstanceUID, InstanceNumber, AcquisitionTime, rescale.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medflow.io.atomic import atomic_outputs, atomic_path
from medflow.io.volume import Volume, geometry_problem

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_TYPE2_EMPTY = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "AccessionNumber", "ReferringPhysicianName", "PositionReferenceIndicator",
                "ScanOptions", "MRAcquisitionType", "EchoTrainLength", "RepetitionTime",
                "EchoTime")
#: Fixed zip timestamp (the earliest a zip can hold) keeps archives byte-reproducible.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: UK Biobank's manifest columns (its own spelling); the date is left empty.
MANIFEST_COLUMNS = ("filename", "patientid", "studyid", "aet", "date", "seriesid",
                    "series discription")
#: Synthetic scan start: 09:00:00, one series (breath-hold) a minute after it.
_SCAN_START_S = 9 * 3600


def write_dicom_series(vol: Volume, folder: str | os.PathLike,
                       series_description: str = "medflow", series_uid: str | None = None,
                       *, series_number: int = 1, seed: int = 0, patient_id: str = "ANON",
                       frame_interval_ms: float | None = None,
                       slice_thickness_mm: float | None = None) -> list[Path]:
    """Write one MR DICOM file per slice (and per frame for 4D cine).

    Args:
        vol: 3D or 4D (time last) volume with an orthonormal affine.
        folder: output folder (created); files are named ``IM<instance>.dcm``.
        series_description: SeriesDescription; also seeds the UIDs.
        series_uid: SeriesInstanceUID; None derives one from description and seed.
        series_number: SeriesNumber.
        seed: changes every derived UID (one subject vs another).
        patient_id: PatientID and PatientName.
        frame_interval_ms: TriggerTime step between cine frames; default
            ``vol.frame_interval_s``, else ``vol.meta["frame_times_ms"]``, else 1000 /
            number of frames.
        slice_thickness_mm: SliceThickness; default the slice spacing (which is always
            written as SpacingBetweenSlices).

    Returns:
        The files written, in InstanceNumber order.

    Note:
        Voxels are stored as int16 (whole numbers that fit) or uint16 with a
        RescaleSlope/RescaleIntercept spanning the data range, so non-integer values come
        back to within (max - min) / 131070. The k axis is written along the slice normal
        when the affine is right-handed in LPS; a left-handed one reads back with k
        reversed (same voxels in space). All files appear at once (atomic write).

    Example:
        >>> write_dicom_series(vol, "sa_dicom", "CINE_segmented_SAX")  # doctest: +SKIP
    """
    folder = Path(folder)
    files = []
    with atomic_outputs() as out:
        for name, ds in _series_datasets(vol, series_description, series_uid, series_number,
                                         seed, patient_id, frame_interval_ms,
                                         slice_thickness_mm):
            final = folder / name
            ds.save_as(out.path(final), enforce_file_format=True)
            files.append(final)
    return files


def write_ukbb_zip(path: str | os.PathLike, series: dict[str, Volume],
                   per_slice_series: bool = True, *, seed: int = 0,
                   patient_id: str = "ANON",
                   slice_thickness_mm: dict[str, float] | None = None) -> Path:
    """Write a zip laid out like a UK Biobank imaging field: flat DICOM files, a manifest.

    Args:
        path: the zip to write (atomically).
        series: SeriesDescription -> volume, e.g. ``{"CINE_segmented_SAX": sa,
            "CINE_segmented_LAX_4Ch": la4}``.
        per_slice_series: split every multi-slice volume into one series per slice named
            ``<description>_b1`` .. ``_bN`` (how UK Biobank stores short-axis cines);
            single-slice volumes (long-axis views) stay one series.
        seed: seeds the UIDs (use the subject's number for a cohort).
        patient_id: PatientID and PatientName (a UK Biobank eid).
        slice_thickness_mm: SliceThickness per description (default: the slice spacing).

    Returns:
        The zip path.

    Note:
        Member names are ``<series number>_<instance>.dcm`` plus ``manifest.csv`` (the
        columns UK Biobank's manifest has, including its spelling ``series discription``),
        which the reader skips (it has no DICM preamble). Same arguments give the same
        bytes.
    """
    parts: list[tuple[str, Volume]] = []
    for desc, vol in series.items():
        nk = vol.shape3[2]
        if per_slice_series and nk > 1:
            for k in range(nk):
                affine = vol.affine.copy()
                affine[:3, 3] = (vol.affine @ [0, 0, k, 1])[:3]
                parts.append((f"{desc}_b{k + 1}", vol.with_data(vol.data[:, :, k:k + 1], affine)))
        else:
            parts.append((desc, vol))
    thickness = slice_thickness_mm or {}
    manifest = [",".join(MANIFEST_COLUMNS)]
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for number, (desc, vol) in enumerate(parts, start=1):
            stem = desc.rsplit("_b", 1)[0] if desc not in thickness else desc
            for name, ds in _series_datasets(vol, desc, None, number, seed, patient_id, None,
                                             thickness.get(desc, thickness.get(stem))):
                member = f"{number:03d}_{name[2:]}"
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                _add(zf, member, buf.getvalue())
                manifest.append(f"{member},{patient_id},{ds.StudyInstanceUID},medflow,,"
                                f"{ds.SeriesInstanceUID},{desc}")
        _add(zf, "manifest.csv", ("\n".join(manifest) + "\n").encode())
    return Path(path)


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    info.create_system = 3
    zf.writestr(info, data)


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _encoding(data: np.ndarray) -> tuple[np.dtype, float, float]:
    """Stored dtype, slope and intercept so that value = stored * slope + intercept."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if np.array_equal(data, np.round(data)) and -32768 <= lo and hi <= 32767:
        return np.dtype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535 if hi > lo else 1.0
    # DS holds 16 characters: round slope/intercept to what is written, then quantise.
    slope, lo = float(f"{slope:.10g}"), float(f"{lo:.10g}")
    return np.dtype(np.uint16), slope, lo


def _tm(seconds: float) -> str:
    """Seconds of the day as DICOM TM (HHMMSS.FFFFFF)."""
    h, rest = divmod(float(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


def _series_datasets(vol: Volume, description: str, series_uid: str | None, number: int,
                     seed: int, patient_id: str, frame_interval_ms: float | None,
                     thickness_mm: float | None = None) -> Iterator[tuple[str, Dataset]]:
    problem = geometry_problem(vol.affine)
    if problem or vol.data.ndim not in (3, 4):
        raise ValueError(f"cannot write DICOM: {problem or f'{vol.data.ndim}D data'}")
    lps = LPS_TO_RAS @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    rowdir, coldir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    data = vol.data if vol.data.ndim == 4 else vol.data[..., None]
    nk, nt = data.shape[2], data.shape[3]
    times = vol.meta.get("frame_times_ms")
    if frame_interval_ms is None and vol.frame_interval_s is not None:
        frame_interval_ms = vol.frame_interval_s * 1000.0
    if frame_interval_ms is not None or times is None or len(times) != nt:
        step = frame_interval_ms if frame_interval_ms is not None else 1000.0 / nt
        times = [t * step for t in range(nt)]
    started = _SCAN_START_S + 60.0 * number
    dtype, slope, intercept = _encoding(np.asarray(data))
    study_uid = _uid("study", patient_id, seed)
    series_uid = series_uid or _uid("series", description, number, patient_id, seed)
    frame_uid = _uid("frame", patient_id, seed)
    for k in range(nk):
        ipp = (lps @ [0, 0, k, 1])[:3]
        for t in range(nt):
            instance = k * nt + t + 1
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = _uid(series_uid, instance)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PatientName, ds.PatientID = patient_id, patient_id
            ds.Modality, ds.SeriesDescription = "MR", description
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"  # research mode
            # Type 2 attributes of the MR IOD: present, deliberately empty (no dates).
            for keyword in _TYPE2_EMPTY:
                setattr(ds, keyword, "")
            ds.Manufacturer = "medflow"
            ds.SeriesNumber, ds.InstanceNumber = number, instance
            ds.ImageOrientationPatient = [_ds(v) for v in (*rowdir, *coldir)]
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, columns
            ds.SliceThickness = _ds(thickness_mm or spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.SeriesTime = ds.AcquisitionTime = _tm(started)
            ds.ContentTime = _tm(started + times[t] / 1000.0)
            ds.SliceLocation = _ds(float(ipp @ np.cross(rowdir, coldir)))
            ds.TriggerTime = _ds(times[t])
            ds.CardiacNumberOfImages = nt
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
            ds.RescaleType = "US"
            plane = np.asarray(data[:, :, k, t], dtype=np.float64).T  # rows = j, columns = i
            stored = np.round((plane - intercept) / slope)
            info = np.iinfo(dtype)
            stored = np.clip(stored, info.min, info.max).astype(dtype.newbyteorder("<"))
            ds.Rows, ds.Columns = stored.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1 if dtype == np.int16 else 0
            ds.PixelData = stored.tobytes()
            yield f"IM{instance:05d}.dcm", ds


def _ds(value: float) -> str:
    # DS strings are at most 16 characters; 10 significant digits always fit.
    text = f"{float(value):.10g}"
    return "0" if text == "-0" else text
