"""Which images a run looks at, and reading them one series at a time.

An *entry* is a file, folder or zip named by a samplesheet cell or found under
``--input-dir``; it holds one or more *series* (a DICOM folder or zip can hold several,
grouped by :func:`medflow.io.dicom.read_dicom`). Images are read lazily and one entry at
a time, so memory does not grow with the size of the cohort. Header fields are never read
as features: only the grouping into series (which defines positive pairs) comes from them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.paths import existing_folder
from medflow.io.images import image_format, read_image, validate_volume
from medflow.io.samplesheet import is_label_role
from medflow.io.volume import Volume

log = logging.getLogger("medflow")

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip", ".dcm")


@dataclass(frozen=True)
class Entry:
    """One image source: a samplesheet cell or a file/folder found under --input-dir."""

    path: Path
    subject: str
    column: str = ""   # samplesheet column ("" for --input-dir)
    truth: str = ""    # true category, for scoring only ("" when unknown)


@dataclass
class Series:
    """One series read from an entry: the volume and its identity."""

    entry: Entry
    key: str           # unique id of the series in this run ("<file>" or "<file>#<n>")
    name: str          # what a person calls it: DICOM description or the file name
    volume: Volume


def entries_from_samplesheet(sheet, truth: dict[str, str] | None = None) -> list[Entry]:
    """Every image cell of a validated samplesheet (label maps and non-images skipped).

    Args:
        sheet: DataFrame from :func:`medflow.io.samplesheet.load_samplesheet` (without
            the truth column).
        truth: subject -> true category, for scoring; with several image columns the
            truth of an image is ``"<category>/<column>"``.

    Returns:
        Entries in row order, then column order.
    """
    columns = [c for c in sheet.columns if c != "subject"
               and not is_label_role(c) and _any_image(sheet[c])]
    out = []
    for row in sheet.to_dict("records"):
        for column in columns:
            value = row.get(column)
            if not isinstance(value, str) or not value or not _is_image(value):
                continue
            label = ""
            if truth is not None:
                cell = truth.get(row["subject"], "")
                label = cell if len(columns) == 1 or not cell else f"{cell}/{column}"
            out.append(Entry(Path(value), row["subject"], column, label))
    return out


def _is_image(value: str) -> bool:
    try:
        image_format(value)
    except InvalidDataError:
        return False
    return True


def _any_image(values) -> bool:
    return any(isinstance(v, str) and v and _is_image(v) for v in values)


def entries_from_folder(folder: str | os.PathLike) -> list[Entry]:
    """Images under a folder: NIfTI/MetaImage/NRRD files, zips, and DICOM folders.

    Args:
        folder: the folder to walk (recursively, in sorted order).

    Returns:
        Entries; the subject is the first folder below ``folder`` (or the file's name
        when it lies directly in ``folder``). A folder that directly holds DICOM files is
        one entry (read with :func:`~medflow.io.dicom.read_dicom`, which groups its files
        by series and also reads its subfolders).

    Note:
        Raises :class:`MissingInputError` (66) when ``folder`` does not exist,
        :class:`InvalidDataError` (65) when it is a file.
    """
    root = existing_folder(folder)
    out: list[Entry] = []
    dicom_roots: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        if any(here == d or d in here.parents for d in dicom_roots):
            continue  # inside a DICOM folder already taken whole
        if any(_looks_dicom(here / f) for f in filenames):
            dicom_roots.append(here)
            out.append(Entry(here, _subject(root, here)))
            continue
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.lower().endswith(".dcm"):
                out.append(Entry(here / name, _subject(root, here / name)))
    return out


def _looks_dicom(f: Path) -> bool:
    if f.name.lower().endswith(".dcm"):
        return True
    if "." in f.name:
        return False
    try:
        with open(f, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _subject(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    if not rel.parts:
        return root.name
    if len(rel.parts) == 1 and path.is_file():
        name = rel.parts[0]
        for suffix in IMAGE_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name
    return rel.parts[0]


def read_entry(entry: Entry) -> list[Series]:
    """The series of one entry (several for a DICOM folder or zip with several series).

    Note:
        Raises :class:`InvalidDataError` / :class:`MissingInputError` naming the file when
        it cannot be read; the caller decides whether to skip it.
    """
    fmt = image_format(entry.path)
    if fmt in ("nifti", "sitk"):
        vol = read_image(entry.path, mmap=True, min_dims=2)  # 2D images are fine here
        return [Series(entry, str(entry.path), entry.path.name, vol)]
    from medflow.io.dicom import read_dicom

    vols = read_dicom(entry.path)
    if not vols:
        raise InvalidDataError("no DICOM series found", entry.path)
    out = []
    for i, vol in enumerate(vols):
        validate_volume(vol, entry.path, min_dims=2)
        key = str(entry.path) if len(vols) == 1 else f"{entry.path}#{i}"
        name = vol.meta.get("series_description") or entry.path.name
        out.append(Series(entry, key, name, vol))
    return out


def iter_series(entries: list[Entry], skipped: list[tuple[str, str]]
                ) -> Iterator[Series]:
    """Read entries one at a time; unreadable ones are logged, appended to ``skipped``
    as (path, reason) and left out."""
    for entry in entries:
        try:
            found = read_entry(entry)
        except (InvalidDataError, MissingInputError) as exc:
            skipped.append((str(entry.path), exc.format_message()))
            log.warning("skipped unreadable image: %s", exc.format_message())
            continue
        yield from found


def missing_images(entries: list[Entry], source: Path) -> None:
    """Raise :class:`MissingInputError` (66) listing every samplesheet image not found."""
    missing = [e for e in entries if not e.path.exists()]
    if missing:
        shown = "; ".join(f"subject '{e.subject}', column '{e.column}': {e.path}"
                          for e in missing[:10])
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise MissingInputError(f"{len(missing)} image(s) not found: {shown}{more}", source)


def truth_labels(samplesheet: str | os.PathLike, column: str) -> dict[str, str]:
    """subject -> the cell of ``column`` as written (the samplesheet loader turns every
    cell into a path; a category name is not one)."""
    import pandas as pd

    raw = pd.read_csv(samplesheet, dtype=str, keep_default_na=False, skipinitialspace=True)
    raw.columns = [c.strip() for c in raw.columns]
    return {str(s).strip(): str(v).strip() for s, v in zip(raw["subject"], raw[column])}
