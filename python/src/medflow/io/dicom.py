"""Read DICOM series from a folder, a single file or a zip into Volumes.

Files are grouped by SeriesInstanceUID and stacked by position along the slice normal,
never by file name or InstanceNumber. Several frames at one position make a cine series
(4D, time last). UK Biobank splits short-axis cines into one series per slice
(``CINE_segmented_SAX_b1``, ``_b2``, ...): parallel series that differ only by such a
``_b<N>`` suffix are stacked into one volume described by the stem.

Geometry (DICOM PS3.3 C.7.6.2): pixel (row r, column c) of a slice lies at
``IPP + c * PixelSpacing[1] * rowdir + r * PixelSpacing[0] * coldir`` in LPS millimetres,
so ``data[i=c, j=r, k]``; the affine is converted to RAS for :class:`Volume`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, MediaStorageDirectoryStorage as MEDIA_DIRECTORY

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io import safezip
from medflow.io.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Direction cosines are written with ~6 decimals; 1e-3 is ~0.06 degrees.
ORIENTATION_TOL = 1e-3
#: Positions within this fraction of a pixel are the same; spacing may vary by 1%.
POSITION_RTOL = 0.01
SPACING_RTOL = 0.01
_BLOCK = re.compile(r"^(?P<stem>.+)_b(?P<n>\d+)$")


@dataclass
class _Frame:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    index: int  # frame number within its file (0 for single-frame files)
    iop: np.ndarray  # (6,) row then column direction cosines, LPS
    ipp: np.ndarray  # (3,) LPS mm, centre of the first transmitted pixel
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    shape: tuple[int, int]  # (rows, columns)
    slope: float
    intercept: float
    order: tuple  # sort key among frames at one position: trigger time, instance, index
    thickness: float | None


@dataclass
class _Series:
    uid: str
    description: str
    number: int
    modality: str
    frames: list[_Frame] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (description, uid)


def read_dicom(path: str | os.PathLike, series: str | None = None) -> list[Volume]:
    """Read every DICOM series under a folder, in a zip or in one file.

    Args:
        path: a folder (searched recursively), a ``.zip`` of DICOM files, or one file.
        series: only stack the series matching this description, UID or 0-based index
            (see :func:`select_series`); None stacks them all.

    Returns:
        One float32 Volume per series (``_b<N>`` blocks merged), ordered by SeriesNumber,
        description and UID. ``meta`` holds ``series_description``, ``series_uid``,
        ``series_index``, ``modality``, ``n_files``, ``format``, ``source_series`` and,
        for cine, ``frame_times_ms`` of the first slice.

    Note:
        Rescale slope/intercept are applied. In folders and zips, files without the
        ``DICM`` preamble (manifests, READMEs) and DICOM without pixels are skipped; a
        file that claims to be DICOM but cannot be parsed raises :class:`InvalidDataError`
        naming it, as do non-parallel slices, gaps and uneven spacing. The slice axis k
        always runs along +normal (rowdir x coldir).

    Example:
        >>> vols = read_dicom("20209_2_0.zip")                   # doctest: +SKIP
        >>> [v.meta["series_description"] for v in vols]         # doctest: +SKIP
        ['CINE_segmented_SAX']
    """
    p = Path(path)
    if not p.exists():
        raise MissingInputError("no such file or folder", p)
    if p.is_dir():
        return _read_files(_walk(p), p, "dicom-folder", str, series, strict=False)
    if p.suffix.lower() == ".zip" or _magic(p, 0, 4) == b"PK\x03\x04":
        with safezip.extracted(p) as folder:
            def shown(f: Path) -> str:
                return f"{p}:{f.relative_to(folder).as_posix()}"
            return _read_files(_walk(folder), p, "dicom-zip", shown, series, strict=False)
    return _read_files([p], p, "dicom-file", str, series, strict=True)


def select_series(volumes: list[Volume], series: str | None,
                  path: str | os.PathLike | None = None) -> Volume:
    """Pick one series from :func:`read_dicom`'s result.

    Args:
        volumes: the series read from ``path``.
        series: a SeriesDescription (or one merged into it), a SeriesInstanceUID, or a
            0-based index; None is only allowed when there is exactly one series.
        path: the folder/zip/file, for error messages.

    Returns:
        The matching Volume.

    Note:
        Raises :class:`InvalidDataError` listing the available series when the choice
        is missing, matches nothing, or is ambiguous.
    """
    if not volumes:
        raise InvalidDataError("no DICOM series found", path)
    if series is None:
        if len(volumes) == 1:
            return volumes[0]
        raise InvalidDataError(f"holds {len(volumes)} DICOM series ({_listing(volumes)}); "
                               "pass --series with a description, series UID or index",
                               path)
    hits = [v for i, v in enumerate(volumes) if _matches(v.meta, str(series), i)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InvalidDataError(f"no DICOM series matches --series {series!r}; available: "
                               f"{_listing(volumes)}", path)
    raise InvalidDataError(f"--series {series!r} matches {len(hits)} series; pass the "
                           f"series UID or index instead: {_listing(volumes)}", path)


def _matches(meta: dict, key: str, position: int) -> bool:
    names = {meta.get("series_description")} | {d for d, _ in meta.get("source_series", [])}
    uids = {meta.get("series_uid")} | {u for _, u in meta.get("source_series", [])}
    index = meta.get("series_index", position)
    return key in names or key in uids or (key.isdigit() and int(key) == index)


def _listing(volumes: list[Volume]) -> str:
    return ", ".join(f"{v.meta.get('series_index', i)}: "
                     f"{v.meta.get('series_description') or '(no description)'} "
                     f"{'x'.join(str(s) for s in v.data.shape)}"
                     for i, v in enumerate(volumes))


def _walk(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file())


def _magic(f: Path, start: int, stop: int) -> bytes:
    with open(f, "rb") as fh:
        return fh.read(stop)[start:]


def _has_preamble(f: Path) -> bool:
    return _magic(f, 128, 132) == b"DICM"


def _read_files(files: list[Path], root: Path, fmt: str, shown: Callable[[Path], str],
                series: str | None, strict: bool) -> list[Volume]:
    groups: dict[str, _Series] = {}
    for f in files:
        if not strict and not _has_preamble(f):
            continue
        ds = _header(f, shown)
        if "Rows" not in ds:
            _check_no_image(ds, shown(f), strict)
            continue  # SR, RTSTRUCT, DICOMDIR, presentation states
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        s = groups.get(uid)
        if s is None:
            desc = str(ds.get("SeriesDescription", "") or "")
            s = groups[uid] = _Series(uid, desc, _int(ds.get("SeriesNumber")) or 0,
                                      str(ds.get("Modality", "") or ""), sources=[(desc, uid)])
        s.frames.extend(_frames_of(ds, f, shown))
    if not groups:
        raise InvalidDataError(f"no DICOM images found among {len(files)} files (files "
                               "without the DICM preamble are skipped)", root)
    ordered = sorted(_merge_blocks(list(groups.values())),
                     key=lambda s: (s.number, s.description, s.uid))
    vols = []
    for i, s in enumerate(ordered):
        meta = {"series_description": s.description, "series_uid": s.uid,
                "series_index": i, "source_series": s.sources}
        if series is None or _matches(meta, str(series), i):
            meta.update(modality=s.modality, format=fmt,
                        n_files=len({fr.file for fr in s.frames}))
            vols.append(_stack(s, meta, root, shown))
    return vols


def _header(f: Path, shown: Callable[[Path], str]) -> Dataset:
    try:
        return pydicom.dcmread(f, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes
        raise InvalidDataError(f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                               shown(f)) from None


def _check_no_image(ds: Dataset, shown: str, strict: bool) -> None:
    # Skip a file without Rows only when it says it is not an image (SR, RTSTRUCT,
    # DICOMDIR, vendor non-image objects); a cut-off image would otherwise leave a gap.
    meta = getattr(ds, "file_meta", None)
    declared = UID(str(meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if declared == MEDIA_DIRECTORY:
        return
    sop = UID(str(ds.get("SOPClassUID", "")))
    if not sop.is_valid:
        raise InvalidDataError("corrupt or truncated DICOM file (no valid SOP class)", shown)
    if strict or "Image" in sop.name or "Image" in declared.name:
        raise InvalidDataError(f"DICOM file holds no readable image ({sop.name}; "
                               "truncated?)", shown)


def _num(value) -> float | None:
    return None if value is None or value == "" else float(value)


def _int(value) -> int | None:
    return None if value is None or value == "" else int(value)


def _lookup(ds: Dataset, groups: list[Dataset], sequence: str, keyword: str):
    # Enhanced multi-frame files keep geometry in per-frame, then shared, functional groups.
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
            return items[0][keyword].value
    return ds.get(keyword)


def _frames_of(ds: Dataset, f: Path, shown: Callable[[Path], str]) -> list[_Frame]:
    try:
        n = _int(ds.get("NumberOfFrames")) or 1
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InvalidDataError("colour DICOM images are not supported", shown(f))
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared = list(ds.get("SharedFunctionalGroupsSequence", []))
        if n > 1 and (per is None or len(per) != n):
            raise InvalidDataError(f"multi-frame DICOM ({n} frames) without per-frame "
                                   "functional groups is not supported", shown(f))
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
            thick = _num(get("PixelMeasuresSequence", "SpacingBetweenSlices")) or \
                _num(get("PixelMeasuresSequence", "SliceThickness"))
            trigger = _num(get("CardiacSynchronizationSequence",
                               "NominalCardiacTriggerDelayTime")) or _num(ds.get("TriggerTime"))
            slope = _num(get("PixelValueTransformationSequence", "RescaleSlope"))
            intercept = _num(get("PixelValueTransformationSequence", "RescaleIntercept"))
            frames.append(_Frame(
                f, i, np.array([float(v) for v in iop]), np.array([float(v) for v in ipp]),
                (float(spacing[0]), float(spacing[1])), (int(ds.Rows), int(ds.Columns)),
                1.0 if slope is None else slope, intercept or 0.0,
                (trigger or 0.0, _int(ds.get("InstanceNumber")) or 0, i), thick))
            if frames[-1].iop.shape != (6,) or frames[-1].ipp.shape != (3,):
                raise ValueError("ImageOrientationPatient needs 6 values, "
                                 "ImagePositionPatient 3")
        return frames
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise InvalidDataError(f"malformed DICOM geometry ({exc})", shown(f)) from None


def _merge_blocks(series: list[_Series]) -> list[_Series]:
    """Join parallel series named ``<stem>_b<N>`` (UK Biobank short-axis slices)."""
    out, stems = [], {}
    for s in series:
        m = _BLOCK.match(s.description)
        if m is None:
            out.append(s)
            continue
        parts = stems.setdefault(m["stem"], [])
        part = next((p for p in parts if _parallel(p[0].frames[0], s.frames[0])), None)
        (part.append(s) if part is not None else parts.append([s]))
    for stem, parts in stems.items():
        for part in parts:
            if len(parts) > 1 and len(part) == 1:
                out.append(part[0])  # a lone block beside other stacks keeps its own name
                continue
            part.sort(key=lambda s: int(_BLOCK.match(s.description)["n"]))
            first = part[0]
            out.append(_Series(first.uid, stem, min(s.number for s in part), first.modality,
                               [fr for s in part for fr in s.frames],
                               [src for s in part for src in s.sources]))
    return out


def _parallel(a: _Frame, b: _Frame) -> bool:
    return a.shape == b.shape and np.abs(a.iop - b.iop).max() <= ORIENTATION_TOL


def _stack(s: _Series, meta: dict, root: Path, shown: Callable[[Path], str]) -> Volume:
    where = str(root)
    name = f"series {s.description or s.uid!r}"
    ref = s.frames[0]
    for fr in s.frames:
        if not _parallel(ref, fr):
            raise InvalidDataError(f"{name}: slices are not parallel or differ in size "
                                   f"({shown(ref.file)} vs {shown(fr.file)})", where)
        if not np.allclose(fr.pixel_spacing, ref.pixel_spacing, rtol=1e-4):
            raise InvalidDataError(f"{name}: slices differ in pixel spacing "
                                   f"({shown(ref.file)} vs {shown(fr.file)})", where)
    rowdir, coldir = ref.iop[:3] / np.linalg.norm(ref.iop[:3]), ref.iop[3:] / np.linalg.norm(ref.iop[3:])
    normal = np.cross(rowdir, coldir)
    tol = POSITION_RTOL * min(ref.pixel_spacing)
    pos = np.array([fr.ipp @ normal for fr in s.frames])
    slices: list[list[_Frame]] = []
    start = -np.inf
    for i in np.argsort(pos, kind="stable"):
        if pos[i] - start > tol:
            slices.append([])
            start = pos[i]
        slices[-1].append(s.frames[i])
    counts = sorted({len(g) for g in slices})
    if len(counts) > 1:
        raise InvalidDataError(f"{name}: slice positions hold different numbers of frames "
                               f"({counts[0]} to {counts[-1]}); a file may be missing", where)
    for g in slices:
        g.sort(key=lambda fr: fr.order)
    firsts = np.array([g[0].ipp for g in slices])
    inplane = (firsts - firsts[0]) @ np.stack([rowdir, coldir]).T
    if np.abs(inplane).max() > 5 * tol:
        raise InvalidDataError(f"{name}: slices are shifted in-plane against each other "
                               "(gantry tilt or sheared stack), not a regular grid", where)
    along = firsts @ normal
    if len(slices) > 1:
        gaps = np.diff(along)
        dz = float(along[-1] - along[0]) / (len(slices) - 1)
        if np.abs(gaps - dz).max() > max(tol, SPACING_RTOL * dz):
            raise InvalidDataError(f"{name}: uneven slice spacing (gaps from {gaps.min():.4g} "
                                   f"to {gaps.max():.4g} mm); a slice may be missing", where)
    else:
        dz = ref.thickness or 1.0
    lps = np.eye(4)
    lps[:3, 0] = rowdir * ref.pixel_spacing[1]
    lps[:3, 1] = coldir * ref.pixel_spacing[0]
    lps[:3, 2] = normal * dz
    lps[:3, 3] = firsts[0]
    rows, cols = ref.shape
    data = np.empty((cols, rows, len(slices), counts[0]), np.float32)
    where_in_file: dict[Path, list[tuple[_Frame, int, int]]] = {}
    for k, g in enumerate(slices):
        for t, fr in enumerate(g):
            where_in_file.setdefault(fr.file, []).append((fr, k, t))
    for f, placed in where_in_file.items():
        pixels = _pixels(f, shown)
        for fr, k, t in placed:
            plane = pixels[fr.index] if pixels.ndim == 3 else pixels
            data[:, :, k, t] = plane.T.astype(np.float32) * np.float32(fr.slope) + \
                np.float32(fr.intercept)
    if counts[0] > 1 and any(fr.order[0] for fr in slices[0]):
        meta["frame_times_ms"] = [fr.order[0] for fr in slices[0]]
    return Volume(data if counts[0] > 1 else data[..., 0], LPS_TO_RAS @ lps, meta=meta)


def _pixels(f: Path, shown: Callable[[Path], str]) -> np.ndarray:
    try:
        return pydicom.dcmread(f).pixel_array
    except Exception as exc:  # noqa: BLE001 - truncated data, missing codec, bad headers
        raise InvalidDataError(f"cannot decode DICOM pixel data ({type(exc).__name__}: "
                               f"{exc})", shown(f)) from None
