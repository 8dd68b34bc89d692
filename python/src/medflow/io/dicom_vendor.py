"""Vendor layouts that change where a DICOM file's pixels lie.

- Siemens mosaic (ImageType holds ``MOSAIC``): one file holds ``n`` slices as tiles of a
  square grid; each tile becomes a frame placed along the CSA ``SliceNormalVector``
  (positions as nibabel's ``MosaicWrapper`` and dcm2niix derive them). A mosaic without
  the number of tiles or the slice normal is refused: its slices cannot be placed.
- GE ``epi_pepolar`` (private (0019,109C) pulse sequence, (0019,10B3) user data 12): the
  reversed-polarity volumes are stored with their rows flipped (dcm2niix issue 532,
  heudiconv issue 479); those frames are flipped back, and as their phase encoding differs
  they are a different kind of image from the forward ones (kept apart).

Private ways of saying what an image is, where ImageType does not (:func:`vendor_kind`):
GE field-map series (pulse sequence ``b0map``, or internal sequence ``B0map``) hold the
field map (Hz) in the first volume and the magnitude in the second (dcm2niix issue 501:
instance numbers up to (0021,104F) locations in acquisition);
Philips diffusion series end with the derived isotropic trace image, marked ``I`` in
(2001,1004) with b > 0.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
from pydicom.dataset import Dataset

from medflow.errors import InvalidDataError

GE_PULSE_SEQUENCE = (0x0019, 0x109C)
GE_INTERNAL_SEQUENCE = (0x0019, 0x109E)
GE_USER_DATA_12 = (0x0019, 0x10B3)
GE_LOCATIONS = (0x0021, 0x104F)
PHILIPS_DIFFUSION_DIRECTION = (0x2001, 0x1004)
PHILIPS_B_VALUE = (0x2001, 0x1003)
SIEMENS_MOSAIC_COUNT = (0x0019, 0x100A)


def _private(ds: Dataset, tag) -> str:
    element = ds.get(tag)
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value or "").strip("\0 ")


def _number(ds: Dataset, tag, fmt: str = "<h") -> float | None:
    """A private number, whether the file gave its VR (a value) or not (raw bytes)."""
    if tag not in ds:
        return None
    value = ds[tag].value
    try:
        if isinstance(value, bytes):
            return float(struct.unpack(fmt, value[:struct.calcsize(fmt)])[0])
        return float(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, struct.error, IndexError):
        return None


def _count(ds: Dataset) -> int | None:
    count = _number(ds, SIEMENS_MOSAIC_COUNT, "<H")
    return int(count) if count else None


def _manufacturer(ds: Dataset) -> str:
    return str(ds.get("Manufacturer", "")).upper()


def vendor_kind(ds: Dataset) -> str:
    """What a vendor's private tags say an image is ("" when they say nothing)."""
    if _manufacturer(ds).startswith("GE") and (
            "b0map" in _private(ds, GE_PULSE_SEQUENCE).lower()
            or _private(ds, GE_INTERNAL_SEQUENCE) == "B0map"):
        locations = _number(ds, GE_LOCATIONS)
        instance = int(ds.get("InstanceNumber") or 0)
        if locations and instance:
            return "FIELDMAP_HZ" if instance <= locations else "MAGNITUDE"
    if _manufacturer(ds).startswith("PHILIPS") and \
            _private(ds, PHILIPS_DIFFUSION_DIRECTION).upper() == "I":
        b = ds.get("DiffusionBValue")
        b = float(b) if b not in (None, "") else _number(ds, PHILIPS_B_VALUE, "<f")
        if b and b > 0:
            return "ISOTROPIC_TRACE"
    return ""


def pepolar_flip(ds: Dataset) -> bool | None:
    """Whether a GE ``epi_pepolar`` frame is stored with rows flipped; None when not pepolar.

    User data 12 (0019,10B3): 1 every volume reversed; 2 reversed then forward (odd
    temporal positions reversed); 3 forward then reversed (even positions reversed).
    """
    if not _manufacturer(ds).startswith("GE"):
        return None
    if "epi_pepolar" not in _private(ds, GE_PULSE_SEQUENCE).lower():
        return None
    try:
        mode = int(round(float(_private(ds, GE_USER_DATA_12) or 0)))
    except ValueError:
        mode = 0
    try:
        volume = int(ds.get("TemporalPositionIdentifier") or 0)
    except (TypeError, ValueError):
        volume = 0
    return (mode == 1 or (mode == 2 and volume > 0 and volume % 2 == 1)
            or (mode == 3 and volume > 0 and volume % 2 == 0))


def mosaic_geometry(ds: Dataset, shown: str) -> tuple[int, np.ndarray]:
    """(number of tiles, CSA slice normal in LPS) of a Siemens mosaic, or refuse."""
    with warnings.catch_warnings():  # nibabel.nicom warns that its *readers* are experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader

    try:
        csa = csareader.get_csa_header(ds, "image")
    except Exception:  # noqa: BLE001 - a damaged private header is just "missing"
        csa = None
    count = _count(ds)
    normal = None
    if csa is not None:
        try:
            count = count or csareader.get_n_mosaic(csa)
            normal = csareader.get_slice_normal(csa)
        except (KeyError, ValueError, TypeError):
            pass
    if not count or normal is None:
        raise InvalidDataError("Siemens mosaic without the number of tiles or the CSA slice "
                               "normal: its slices cannot be placed (convert it with dcm2niix)",
                               shown)
    return int(count), np.asarray(normal, dtype=np.float64)


def mosaic_tiles(base: dict, ipp: np.ndarray, rows: int, cols: int, thickness: float | None,
                 count: int, normal: np.ndarray, sop: str) -> list[dict]:
    """Per tile of one mosaic: its ``ipp``, ``shape``, ``sop`` and ``tile`` (first row and
    column). The mosaic's ImagePositionPatient is that of the whole grid, as if it were one
    large slice, so the first tile's lies half the grid's excess size further in."""
    grid = int(np.ceil(np.sqrt(count)))
    if rows % grid or cols % grid:
        raise ValueError(f"mosaic of {rows} x {cols} pixels cannot hold a {grid} x {grid} grid")
    r, c = rows // grid, cols // grid
    rowdir, coldir = base["iop"][:3], base["iop"][3:]
    dr, dc = base["pixel_spacing"]
    first = ipp + rowdir * dc * (cols - c) / 2 + coldir * dr * (rows - r) / 2
    step = (thickness or 1.0) * normal / np.linalg.norm(normal)
    return [dict(ipp=first + k * step, shape=(r, c), sop=f"{sop}#tile{k}",
                 tile=((k // grid) * r, (k % grid) * c)) for k in range(count)]
