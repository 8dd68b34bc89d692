"""DICOM headers to 2D frames: geometry, time, scaling, kind, and where the pixels lie.

One :class:`Frame` is one 2D image: a single-frame file, one frame of a multi-frame file,
or one tile of a Siemens mosaic. Everything later steps need is read here, once, from the
header (pixels are not decoded): ImagePositionPatient/ImageOrientationPatient/PixelSpacing
(or their enhanced functional-group twins), TriggerTime, AcquisitionTime, rescale,
SOPInstanceUID, and what *kind* of image it is (ImageType, echo, phase-encoding polarity),
so that a series holding magnitude and phase, or two echoes, is never stacked as time.

Vendor layouts that change where pixels lie (Siemens mosaics, GE pepolar) are read by
:mod:`.dicom_vendor`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medflow.errors import InvalidDataError
from medflow.io.dicom_vendor import mosaic_geometry, mosaic_tiles, pepolar_flip, vendor_kind

_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_NATIVE = {ImplicitVRLittleEndian: 8, ExplicitVRLittleEndian: 12}  # header bytes before value


@dataclass
class Frame:
    """One 2D image and everything needed to place it, order it and read its pixels."""

    file: Path
    index: int                      # frame number within its file (0: single-frame)
    iop: np.ndarray                 # (6,) row then column direction cosines, LPS
    ipp: np.ndarray                 # (3,) LPS mm, centre of the first pixel of this frame
    pixel_spacing: tuple[float, float]   # (between rows, between columns)
    shape: tuple[int, int]          # (rows, columns) of this frame (a tile for mosaics)
    slope: float
    intercept: float
    trigger_ms: float | None        # TriggerTime / NominalCardiacTriggerDelayTime
    acquisition_s: float | None     # AcquisitionTime as seconds of the day
    instance: int
    thickness: float | None         # SpacingBetweenSlices, else SliceThickness
    sop: str                        # SOPInstanceUID (+ frame index): the identity of a copy
    kind: tuple                     # (image type, echo, polarity): frames of one image share it
    tile: tuple[int, int] | None = None   # (first row, first column) inside a mosaic
    flip_rows: bool = False         # GE epi_pepolar reversed volume
    pixels_at: tuple | None = None  # native little-endian pixels: (offset, dtype, bits
    #                                 stored, (frames, rows, columns) of the whole file)

    @property
    def order(self) -> tuple:
        """Sort key among frames at one position: trigger time, instance, frame, time."""
        return (self.trigger_ms or 0.0, self.instance, self.index, self.acquisition_s or 0.0)


def read_header(f: Path, shown: Callable[[Path], str], force: bool = False
                ) -> tuple[Dataset, tuple | None]:
    """The header of ``f`` (no pixels) and, for native little-endian pixel data, where the
    pixel values start: ``(offset, length)``; InvalidDataError naming the file if it
    cannot be parsed."""
    try:
        with open(f, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=force)
            where = fh.tell()
            head = fh.read(12)
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes
        raise InvalidDataError(f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                               shown(f)) from None
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    skip = _NATIVE.get(syntax)
    if skip is None or head[:4] != _PIXEL_TAG or len(head) < skip:
        return ds, None
    length = struct.unpack("<I", head[skip - 4:skip])[0]
    if length == 0xFFFFFFFF:  # encapsulated: needs a decoder
        return ds, None
    return ds, (where + skip, length)


def _num(value) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value) -> int | None:
    return None if value is None or value == "" else int(value)


def seconds_of_day(value) -> float | None:
    """DICOM TM ``HHMMSS.FFFFFF`` -> seconds of the day (None if absent or malformed)."""
    text = str(value or "").strip()
    try:
        hh, mm, ss = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def _lookup(ds: Dataset, groups: list[Dataset], sequence: str, keyword: str):
    # Enhanced multi-frame files keep geometry in per-frame, then shared, functional groups.
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
            return items[0][keyword].value
    return ds.get(keyword)


def _kind(ds: Dataset, get) -> tuple:
    """What kind of image a frame is: frames of different kinds are different images."""
    image_type = get("MRImageFrameTypeSequence", "FrameType") or ds.get("ImageType") or ()
    image_type = tuple(str(v).strip().upper() for v in
                       (image_type if isinstance(image_type, (list, tuple, pydicom.multival.MultiValue))
                        else [image_type]))
    component = str(get("MRImageFrameTypeSequence", "ComplexImageComponent") or "").upper() \
        or vendor_kind(ds)
    echo = _int(ds.get("EchoNumbers")) if "EchoNumbers" in ds and \
        not isinstance(ds.EchoNumbers, pydicom.multival.MultiValue) else None
    if echo is None:
        echo = _num(get("MREchoSequence", "EffectiveEchoTime")) or _num(ds.get("EchoTime"))
    return (image_type, component, echo)


def frames_of(ds: Dataset, f: Path, shown: Callable[[Path], str],
              pixels_at: tuple | None = None) -> list[Frame]:
    """Every 2D frame of one file, with its geometry, time, scaling and kind."""
    try:
        n = _int(ds.get("NumberOfFrames")) or 1
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InvalidDataError("colour DICOM images are not supported", shown(f))
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared = list(ds.get("SharedFunctionalGroupsSequence", []))
        if n > 1 and (per is None or len(per) != n):
            raise InvalidDataError(f"multi-frame DICOM ({n} frames) without per-frame "
                                   "functional groups is not supported", shown(f))
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        mosaic = mosaic_geometry(ds, shown(f)) if "MOSAIC" in image_type else None
        flip = bool(pepolar_flip(ds))
        sop = str(ds.get("SOPInstanceUID", "") or "")
        instance = _int(ds.get("InstanceNumber")) or 0
        acquisition = seconds_of_day(ds.get("AcquisitionTime") or ds.get("ContentTime"))
        native = None
        if pixels_at is not None:
            bits, signed = int(ds.BitsAllocated), int(ds.get("PixelRepresentation", 0))
            whole = n * int(ds.Rows) * int(ds.Columns) * bits // 8
            if bits in (8, 16, 32) and pixels_at[1] >= whole and \
                    (int(ds.get("BitsStored", bits)) == bits or not signed):
                native = (pixels_at[0], np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"),
                          int(ds.get("BitsStored", bits)), (n, int(ds.Rows), int(ds.Columns)))
        frames = []
        for i in range(n):
            groups = ([per[i]] if per is not None else []) + shared

            def get(seq: str, key: str, groups=groups):
                return _lookup(ds, groups, seq, key)
            iop, ipp = get("PlaneOrientationSequence", "ImageOrientationPatient"), \
                get("PlanePositionSequence", "ImagePositionPatient")
            spacing = get("PixelMeasuresSequence", "PixelSpacing")
            if iop is None or ipp is None or spacing is None:
                raise InvalidDataError("image has no patient geometry (ImageOrientationPatient,"
                                       " ImagePositionPatient or PixelSpacing missing)", shown(f))
            iop = np.array([float(v) for v in iop])
            ipp = np.array([float(v) for v in ipp])
            if iop.shape != (6,) or ipp.shape != (3,):
                raise ValueError("ImageOrientationPatient needs 6 values, "
                                 "ImagePositionPatient 3")
            spacing = (float(spacing[0]), float(spacing[1]))
            thick = _num(get("PixelMeasuresSequence", "SpacingBetweenSlices")) or \
                _num(get("PixelMeasuresSequence", "SliceThickness"))
            trigger = _num(get("CardiacSynchronizationSequence",
                               "NominalCardiacTriggerDelayTime")) or _num(ds.get("TriggerTime"))
            slope = _num(get("PixelValueTransformationSequence", "RescaleSlope"))
            intercept = _num(get("PixelValueTransformationSequence", "RescaleIntercept"))
            base = dict(file=f, index=i, iop=iop, pixel_spacing=spacing,
                        slope=1.0 if slope is None else slope, intercept=intercept or 0.0,
                        trigger_ms=trigger, acquisition_s=acquisition, instance=instance,
                        thickness=thick, kind=(*_kind(ds, get), flip), flip_rows=flip,
                        pixels_at=native)
            rows, cols = int(ds.Rows), int(ds.Columns)
            if mosaic is None:
                frames.append(Frame(ipp=ipp, shape=(rows, cols), sop=f"{sop}#{i}", **base))
            else:
                frames += [Frame(**tile, **base) for tile in
                           mosaic_tiles(base, ipp, rows, cols, thick, *mosaic, sop)]
        return frames
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise InvalidDataError(f"malformed DICOM geometry ({exc})", shown(f)) from None
