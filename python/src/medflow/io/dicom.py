"""Read DICOM series from a folder, a single file or a zip into Volumes.

Three steps, one module each: headers become 2D frames (:mod:`.dicom_frames`: geometry,
time, kind, vendor layouts such as Siemens mosaics and GE pepolar), frames become series
(:mod:`.dicom_series`: by SeriesInstanceUID, copies dropped, one image kind per series, UK
Biobank's per-slice series joined), and each series becomes a Volume (:mod:`.dicom_stack`:
slices by position along the normal, never by file name or InstanceNumber; frames by
trigger time; a regular grid or an error).

Nothing is skipped without a word: files without the ``DICM`` preamble that do not look
like DICOM (manifests, READMEs) and DICOM objects without pixels (reports, DICOMDIR) are
listed in ``meta["skipped_files"]``; dropped copies and replaced repeats are counted too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.uid import UID, MediaStorageDirectoryStorage as MEDIA_DIRECTORY

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io import safezip
from medflow.io.dicom_frames import frames_of, read_header, seconds_of_day
from medflow.io.dicom_series import Series, drop_copies, merge_blocks, split_kinds
from medflow.io.dicom_stack import stack
from medflow.io.volume import Volume

#: What a DICOM file without the 128-byte preamble starts with: group 0x0002 or 0x0008.
_BARE_STARTS = (b"\x02\x00", b"\x08\x00")


def read_dicom(path: str | os.PathLike, series: str | None = None) -> list[Volume]:
    """Read every DICOM series under a folder, in a zip or in one file.

    Args:
        path: a folder (searched recursively), a ``.zip`` of DICOM files, or one file.
        series: only stack the series matching this description, UID or 0-based index
            (see :func:`select_series`); None stacks them all. A UID of a UK Biobank slice
            acquired twice picks that acquisition for the joined stack.

    Returns:
        One Volume per series, ordered by SeriesNumber, description and UID. ``meta``
        holds ``series_description``, ``series_uid``, ``series_index``, ``modality``,
        ``n_files``, ``format``, ``source_series``, ``skipped_files``, and where they
        apply ``frame_times_ms`` (and ``frame_times_ms_per_slice``),
        ``duplicates_dropped``, ``replaced_series``, ``image_kind``;
        ``frame_interval_s`` is set for cines.

    Note:
        Rescale slope/intercept are applied. A file that claims to be DICOM but cannot
        be parsed raises :class:`InvalidDataError` naming it, as do non-parallel slices,
        gaps, uneven spacing and a ``series`` that matches nothing (the error lists the
        series there are).

    Example:
        >>> vols = read_dicom("1000000_20209_2_0.zip")           # doctest: +SKIP
        >>> [v.meta["series_description"] for v in vols]         # doctest: +SKIP
        ['CINE_segmented_SAX']
    """
    return _with_files(path, lambda files, root, fmt, shown: _read_files(
        files, root, fmt, shown, series))


def list_series(path: str | os.PathLike) -> list[dict]:
    """The series :func:`read_dicom` would return, from headers only (no pixels decoded).

    Returns:
        One dict per series: ``index``, ``description``, ``uid``, ``sources`` (the
        description and UID of every series joined into it), ``n_frames``.
    """
    return _with_files(path, lambda files, root, fmt, shown: [
        {"index": i, "description": s.description, "uid": s.uid,
         "sources": [list(x) for x in s.sources], "n_frames": len(s.frames)}
        for i, s in enumerate(_series(files, root, shown, None)[0])])


def select_series(volumes: list[Volume], series: str | None,
                  path: str | os.PathLike | None = None) -> Volume:
    """Pick one series from :func:`read_dicom`'s result.

    Args:
        volumes: the series read from ``path``.
        series: a SeriesDescription (or one joined into it), a SeriesInstanceUID, or a
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
                           f"series index instead: {_listing(volumes)}", path)


def _matches(meta: dict, key: str, position: int) -> bool:
    sources = meta.get("source_series", [])
    replaced = meta.get("replaced_series", [])
    names = {meta.get("series_description")} | {d for d, _ in sources}
    uids = {meta.get("series_uid")} | {u for _, u in sources} | {r["uid"] for r in replaced}
    index = meta.get("series_index", position)
    return key in names or key in uids or (key.isdigit() and int(key) == index)


def _listing(volumes: list) -> str:
    def shape(v) -> str:
        return "x".join(str(s) for s in v.data.shape) if isinstance(v, Volume) else \
            f"{v['n_frames']} images"
    metas = [v.meta if isinstance(v, Volume) else v for v in volumes]
    return ", ".join(f"{m.get('series_index', i)}: "
                     f"{m.get('series_description') or '(no description)'} {shape(v)}"
                     for i, (v, m) in enumerate(zip(volumes, metas)))


def _with_files(path, action: Callable):
    p = Path(path)
    if not p.exists():
        raise MissingInputError("no such file or folder", p)
    if p.is_dir():
        return action(_walk(p), p, "dicom-folder", str)
    if p.suffix.lower() == ".zip" or _magic(p, 0, 4) == b"PK\x03\x04":
        with safezip.extracted(p) as folder:
            def shown(f: Path) -> str:
                return f"{p}:{f.relative_to(folder).as_posix()}"
            return action(_walk(folder), p, "dicom-zip", shown)
    return action([p], p, "dicom-file", str)


def _walk(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file())


def _magic(f: Path, start: int, stop: int) -> bytes:
    with open(f, "rb") as fh:
        return fh.read(stop)[start:]


def _looks_like_dicom(f: Path) -> bool | None:
    """True: has the DICM preamble; None: no preamble but starts like a DICOM data set
    (parse with force); False: not DICOM."""
    head = _magic(f, 0, 132)
    if head[128:132] == b"DICM":
        return True
    return None if head[:2] in _BARE_STARTS and len(head) >= 8 else False


def _series(files: list[Path], root: Path, shown: Callable[[Path], str],
            prefer: str | None) -> tuple[list[Series], list[str]]:
    """Headers -> frames -> series (copies dropped, kinds split, blocks joined)."""
    strict = len(files) == 1 and files[0] == root
    groups: dict[str, Series] = {}
    skipped: list[str] = []
    for f in files:
        dicom = True if strict else _looks_like_dicom(f)
        if dicom is False:
            skipped.append(shown(f))
            continue
        ds, pixels_at = read_header(f, shown, force=dicom is None)
        if "Rows" not in ds:
            _check_no_image(ds, shown(f), strict)
            skipped.append(shown(f))
            continue  # SR, RTSTRUCT, DICOMDIR, presentation states
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        s = groups.get(uid)
        if s is None:
            desc = str(ds.get("SeriesDescription", "") or "")
            acquired = seconds_of_day(ds.get("SeriesTime") or ds.get("AcquisitionTime")) or 0.0
            s = groups[uid] = Series(uid, desc, int(ds.get("SeriesNumber") or 0),
                                     str(ds.get("Modality", "") or ""), acquired,
                                     sources=[(desc, uid)])
        s.frames.extend(frames_of(ds, f, shown, pixels_at))
    if not groups:
        raise InvalidDataError(f"no DICOM images found among {len(files)} files (files "
                               "without the DICM preamble are skipped)", root)
    split = [part for s in groups.values() for part in split_kinds(drop_copies(s, shown))]
    ordered = sorted(merge_blocks(split, prefer), key=lambda s: (s.number, s.description,
                                                                  s.uid))
    return ordered, skipped


def _read_files(files: list[Path], root: Path, fmt: str, shown: Callable[[Path], str],
                series: str | None) -> list[Volume]:
    ordered, skipped = _series(files, root, shown, series)
    vols, metas = [], []
    for i, s in enumerate(ordered):
        meta = {"series_description": s.description, "series_uid": s.uid,
                "series_index": i, "source_series": s.sources,
                "replaced_series": s.notes.get("replaced_series", []),
                "n_frames": len(s.frames)}
        metas.append(meta)
        if series is None or _matches(meta, str(series), i):
            meta.update(modality=s.modality, format=fmt, skipped_files=skipped[:20],
                        n_skipped_files=len(skipped),
                        n_files=len({fr.file for fr in s.frames}))
            vols.append(stack(s, meta, root, shown))
    if series is not None and not vols:
        raise InvalidDataError(f"no DICOM series matches --series {series!r}; available: "
                               f"{_listing(metas)}", root)
    return vols


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
