"""Builders of the DICOM layouts scanners write and users meet: edited series, Siemens
mosaics with a CSA header, GE pepolar files, JPEG Lossless pixel data."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def edit(path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def set_pixels(path, plane: np.ndarray) -> None:
    """Replace a file's stored pixels (rows x columns, its own dtype)."""
    ds = pydicom.dcmread(path)
    ds.PixelData = np.ascontiguousarray(plane, dtype=ds.pixel_array.dtype).tobytes()
    ds.save_as(path)


def csa2(tags: dict[str, tuple[str, list[str]]]) -> bytes:
    """A Siemens CSA2 ("SV10") header holding ``name -> (VR, values)``."""
    out = b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77)
    for name, (vr, values) in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0,
                           len(values), 77)
        for value in values:
            item = value.encode() + b"\0"
            pad = (4 - len(item) % 4) % 4
            out += struct.pack("<4i", len(item), len(item), 77, len(item)) + item + b"\0" * pad
    return out


def write_mosaic(vol, folder: Path, count_tag: bool = True, csa: bool = True,
                 tr_s: float = 2.0) -> list[Path]:
    """One Siemens mosaic file per frame of a 4D volume (X, Y, Z, T), tiles on a square grid.

    The mosaic's ImagePositionPatient is that of the whole grid, as Siemens writes it; the
    CSA header holds NumberOfImagesInMosaic and SliceNormalVector.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    rowdir, coldir, normal = (lps[:3, a] / spacing[a] for a in range(3))
    nx, ny, nz, nt = vol.data.shape
    grid = int(np.ceil(np.sqrt(nz)))
    rows, cols = grid * ny, grid * nx
    ipp = lps[:3, 3] - rowdir * spacing[0] * (cols - nx) / 2 - coldir * spacing[1] * (rows - ny) / 2
    series = generate_uid(entropy_srcs=["mosaic", str(folder)])
    files = []
    for t in range(nt):
        mosaic = np.zeros((rows, cols), np.uint16)
        for k in range(nz):
            r0, c0 = (k // grid) * ny, (k % grid) * nx
            mosaic[r0:r0 + ny, c0:c0 + nx] = vol.data[:, :, k, t].T
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series, str(t)])
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SOPClassUID = pydicom.uid.MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series, "ep2d_bold", 5
        ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.InstanceNumber = t + 1
        ds.AcquisitionTime = f"{10:02d}{0:02d}{t * tr_s:09.6f}"
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*rowdir, *coldir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        if count_tag:
            ds.add_new((0x0019, 0x0010), "LO", "SIEMENS MR HEADER")
            ds.add_new((0x0019, 0x100A), "US", nz)
        if csa:
            ds.add_new((0x0029, 0x0010), "LO", "SIEMENS CSA HEADER")
            ds.add_new((0x0029, 0x1010), "OB", csa2({
                "NumberOfImagesInMosaic": ("US", [str(nz)]),
                "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal])}))
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = mosaic.tobytes()
        files.append(folder / f"MR{t:04d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def make_ge_pepolar(files: list[Path], mode: int, flipped: list[bool]) -> None:
    """Turn a written series into GE epi_pepolar files: private tags, rows flipped where the
    acquisition reversed the phase encoding (how the scanner stores them)."""
    for f, flip in zip(files, flipped):
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.add_new((0x0019, 0x0010), "LO", "GEMS_ACQU_01")
        ds.add_new((0x0019, 0x109C), "LO", "epi_pepolar")
        ds.add_new((0x0019, 0x10B3), "DS", str(mode))
        if flip:
            ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()
        ds.save_as(f)


def _huffman_table() -> tuple[dict[int, tuple[int, int]], bytes]:
    """A valid JPEG Huffman table for the 17 lossless categories: all codes 5 bits."""
    codes = {s: (s, 5) for s in range(17)}  # canonical: symbol s gets code s on 5 bits
    counts = [0] * 16
    counts[4] = 17
    return codes, bytes(counts) + bytes(range(17))


def jpeg_lossless(image: np.ndarray, precision: int = 16) -> bytes:
    """Encode a 2D unsigned image as JPEG Lossless, Process 14, Selection Value 1 (ITU T.81
    Annex H): prediction from the left (from above in the first column), Huffman coded."""
    rows, cols = image.shape
    img = image.astype(np.int64)
    pred = np.empty_like(img)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    pred[1:, 1:] = img[1:, :-1]
    diff = (img - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)
    codes, table = _huffman_table()
    bits, nbits = 0, 0
    out = bytearray()

    def put(value: int, n: int) -> None:
        nonlocal bits, nbits
        bits = (bits << n) | (value & ((1 << n) - 1))
        nbits += n
        while nbits >= 8:
            byte = (bits >> (nbits - 8)) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
            nbits -= 8

    for d in diff.ravel().tolist():
        ssss = 0 if d == 0 else int(abs(d)).bit_length()
        code, length = codes[ssss]
        put(code, length)
        if 0 < ssss < 16:
            put(d if d > 0 else d - 1, ssss)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)
    header = b"\xff\xd8"
    header += b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, rows, cols, 1) + b"\x01\x11\x00"
    header += b"\xff\xc4" + struct.pack(">H", 2 + 1 + len(table)) + b"\x00" + table
    header += b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + bytes([1, 0, 0])
    return header + bytes(out) + b"\xff\xd9"


def write_jpeg_lossless(source: str, path: Path) -> np.ndarray:
    """A copy of a 16-bit DICOM file with its pixels JPEG Lossless encoded; its pixels."""
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array
    stored = pixels.astype(np.uint16) if ds.PixelRepresentation == 0 else \
        (pixels.astype(np.int64) % 65536).astype(np.uint16)
    ds.PixelData = encapsulate([jpeg_lossless(stored, int(ds.BitsAllocated))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path, enforce_file_format=True)
    return pixels
