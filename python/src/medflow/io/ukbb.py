"""UK Biobank cardiac MRI downloads: zip names, manifests, and samplesheet cells.

A participant's cardiac cines come as one zip per field and visit,
``<eid>_<field>_<instance>_<array>.zip``: field 20209 holds the short axis (one series per
slice, ``CINE_segmented_SAX_b1`` ... ``_bN``, joined by the reader into
``CINE_segmented_SAX``), field 20208 the long axis (``CINE_segmented_LAX_2Ch``, ``_3Ch``,
``_4Ch``). Instance 2 is the first imaging visit, 3 the repeat. Each zip carries a
``manifest.csv`` (sometimes misspelt ``manifest.cvs``) whose ``series discription`` column
(UK Biobank's spelling) names every file's series: reading it is how a series is checked
to exist without decompressing the images.

A samplesheet cell names one series of a zip as ``<zip>#<series>``, e.g.
``1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch`` (:func:`medflow.io.images.split_series`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from pathlib import Path

from medflow.errors import InvalidDataError

SHORT_AXIS, LONG_AXIS = "20209", "20208"
#: Samplesheet role -> (field, series description), as ukbb_cardiac names the views.
VIEWS = {"sa": (SHORT_AXIS, "CINE_segmented_SAX"),
         "la_2ch": (LONG_AXIS, "CINE_segmented_LAX_2Ch"),
         "la_3ch": (LONG_AXIS, "CINE_segmented_LAX_3Ch"),
         "la_4ch": (LONG_AXIS, "CINE_segmented_LAX_4Ch")}
ZIP_NAME = re.compile(r"^(?P<eid>\d+)_(?P<field>\d+)_(?P<instance>\d+)_(?P<array>\d+)\.zip$")
MANIFESTS = ("manifest.csv", "manifest.cvs")
DESCRIPTION_COLUMNS = ("series discription", "series description", "series_description",
                       "seriesdescription")
_BLOCK = re.compile(r"^(?P<stem>.+)_b\d+$")


def zip_name(eid: int | str, field: str, instance: int = 2, array: int = 0) -> str:
    """``1000000_20209_2_0.zip`` for participant 1000000, field 20209, visit 2."""
    return f"{eid}_{field}_{instance}_{array}.zip"


def cell(eid: int | str, role: str, instance: int = 2, array: int = 0) -> str:
    """The samplesheet cell of a view: ``<eid>_<field>_<instance>_<array>.zip#<series>``."""
    field, series = VIEWS[role]
    return f"{zip_name(eid, field, instance, array)}#{series}"


def manifest_series(path: str | os.PathLike) -> set[str] | None:
    """Series descriptions a zip's manifest lists (None: no readable manifest).

    Note:
        UK Biobank manifests write dates with a comma ("Mar 12, 2015"), which shifts the
        columns after the date by one; the description is then found from the row's end
        when the date comes before it (as in UK Biobank's layout).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = {Path(n).name.lower(): n for n in zf.namelist()}
            member = next((names[m] for m in MANIFESTS if m in names), None)
            if member is None:
                return None
            text = zf.read(member).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return None
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in DESCRIPTION_COLUMNS if c in header), None)
    if column is None:
        return None
    date = header.index("date") if "date" in header else len(header)
    out = set()
    for row in rows[1:]:
        if not row:
            continue
        extra = len(row) - len(header)
        at = column + extra if extra > 0 and date < column else column
        if 0 <= at < len(row) and row[at].strip():
            out.add(row[at].strip())
    return out


def names_with_stacks(descriptions: set[str]) -> set[str]:
    """Descriptions plus the stacks their ``_b<N>`` blocks join into."""
    return descriptions | {m["stem"] for d in descriptions if (m := _BLOCK.match(d))}


def has_series(path: str | os.PathLike, series: str) -> tuple[bool, list[str]]:
    """Whether a DICOM zip or folder holds ``series``, and the names it holds.

    The zip's manifest answers when it lists the series (no image is opened); otherwise
    the DICOM headers are read (:func:`medflow.io.dicom.list_series`), which also knows
    series UIDs and indices.
    """
    listed = manifest_series(path) if Path(path).is_file() else None
    if listed is not None and series in names_with_stacks(listed):
        return True, sorted(names_with_stacks(listed))
    from medflow.io.dicom import list_series

    found = list_series(path)
    names = {s["description"] for s in found} | {d for s in found for d, _ in s["sources"]}
    keys = names | {s["uid"] for s in found} | {u for s in found for _, u in s["sources"]} \
        | {str(s["index"]) for s in found}
    return series in keys, sorted(n for n in names if n)


def find_zips(folder: str | os.PathLike) -> dict[tuple[str, str], dict[str, Path]]:
    """``{(eid, instance): {field: zip}}`` for the 20208/20209 zips under ``folder``.

    Note:
        Raises InvalidDataError naming the files when a participant's field and visit
        come in more than one zip (two array indices, or the same zip in two folders):
        which one to use is the user's choice, not ours.
    """
    found: dict[tuple[str, str], dict[str, Path]] = {}
    clashes = []
    for p in sorted(Path(folder).rglob("*.zip")):
        m = ZIP_NAME.match(p.name)
        if m is None or m["field"] not in (SHORT_AXIS, LONG_AXIS):
            continue
        fields = found.setdefault((m["eid"], m["instance"]), {})
        if m["field"] in fields:
            clashes.append(f"{fields[m['field']]} and {p}")
            continue
        fields[m["field"]] = p
    if clashes:
        raise InvalidDataError("a participant's field and visit is in more than one zip "
                               f"(keep one of each): {'; '.join(clashes[:5])}", folder)
    return found


def samplesheet_rows(folder: str | os.PathLike, base: str | os.PathLike
                     ) -> tuple[list[dict], list[str]]:
    """Samplesheet rows for the UK Biobank zips under ``folder``, one per participant and
    visit: ``subject`` ``<eid>_<instance>`` and the views present (``sa``, ``la_2ch``,
    ``la_3ch``, ``la_4ch``), cells relative to ``base`` (the samplesheet's folder) when
    they lie inside it.

    Returns:
        (rows, skipped): participants without a short-axis stack are skipped (the cardiac
        samplesheet needs ``sa``), each with a one-line reason.
    """
    rows, skipped = [], []
    base = Path(base).resolve()
    for (eid, instance), fields in sorted(find_zips(folder).items()):
        row = {"subject": f"{eid}_{instance}"}
        for role, (field, series) in VIEWS.items():
            zpath = fields.get(field)
            if zpath is None or not has_series(zpath, series)[0]:
                continue
            full = zpath.resolve()
            shown = full.relative_to(base).as_posix() if base in full.parents else str(full)
            row[role] = f"{shown}#{series}"
        if "sa" in row:
            rows.append(row)
        else:
            where = fields.get(SHORT_AXIS, f"no {SHORT_AXIS} zip")
            skipped.append(f"{eid} visit {instance}: no {VIEWS['sa'][1]} series ({where})")
    return rows, skipped
