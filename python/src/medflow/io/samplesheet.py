"""Samplesheets: CSV, one row per subject, validated against a JSON Schema before any work.

Every problem (row and column) is collected and reported together, so a user fixes the
sheet once rather than once per error.

A cell may name one series of a DICOM zip or folder as ``<path>#<series>`` (a series
description, UID or 0-based index, as ``--series`` takes), e.g.
``sub-000/1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch``; the series is checked to exist
(from the zip's manifest when it lists it, else from the DICOM headers).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd

from medflow.errors import InvalidDataError, MissingInputError, first_of
from medflow.io.paths import SERIES_MARK, absolute, split_series

KINDS = ("generic", "cardiac", "brats")
# Columns that hold label maps rather than intensities (resampled by nearest neighbour):
# segmentations, masks and ground-truth label maps (the cardiac phantom's gt_ed, gt_es).
LABEL_PREFIXES = ("seg", "mask", "label", "gt")
# Columns that hold values, not files (the heterogeneous demo cohorts' subgroup): never
# resolved as paths, never checked for existence, never an image role.
METADATA_COLUMNS = ("subgroup",)


def is_metadata_column(column: str) -> bool:
    """Whether a samplesheet column holds a value (``subgroup``) rather than a file."""
    return column in METADATA_COLUMNS


def is_label_role(role: str) -> bool:
    return role.lower().startswith(LABEL_PREFIXES)


def paired_image_role(role: str, image_roles: list[str]) -> str | None:
    """The image a label column annotates, so their grids can be checked against each other.

    ``seg_sa`` annotates ``sa``; a bare ``seg``/``mask`` annotates the row's first image
    (BraTS sequences are co-registered); a label with no such image (``gt_ed``, drawn on
    its own high-resolution grid) has none.
    """
    low = role.lower()
    for prefix in LABEL_PREFIXES:
        if low == prefix:
            return image_roles[0] if image_roles else None
        if low.startswith(prefix + "_") and role[len(prefix) + 1:] in image_roles:
            return role[len(prefix) + 1:]
    return None


def _series_problem(path: Path, series: str) -> str | None:
    """Why ``path#series`` names no series (None when it does)."""
    from medflow.io.ukbb import has_series

    try:
        found, names = has_series(path, series)
    except (InvalidDataError, MissingInputError) as exc:
        return exc.format_message()
    if found:
        return None
    return (f"no series {series!r} in {path.name} (it holds: "
            f"{', '.join(names[:12]) or 'no DICOM series'})")


def load_schema(kind: str) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown samplesheet kind {kind!r}; expected one of {KINDS}")
    text = resources.files("medflow").joinpath(f"schemas/samplesheet_{kind}.json").read_text()
    return json.loads(text)


def detect_kind(columns) -> str:
    cols = set(columns)
    if "sa" in cols:
        return "cardiac"
    if {"t1", "t1ce", "t2", "flair"} & cols:
        return "brats"
    return "generic"


def load_samplesheet(path: str | os.PathLike, kind: str | None = None,
                     required_roles: tuple[str, ...] = (), check_files: bool = True
                     ) -> pd.DataFrame:
    """Read and validate a samplesheet; return it with paths made absolute.

    Args:
        path: the CSV file.
        kind: ``generic``, ``cardiac`` or ``brats``; detected from the columns when None.
        required_roles: columns the calling command needs on every row.
        check_files: also check that every named file exists.

    Returns:
        DataFrame with a ``subject`` column and one column per role (absolute paths, or
        None where a cell is empty); metadata columns (:data:`METADATA_COLUMNS`) keep their
        values.

    Note:
        All problems are gathered into one error: exit 66 when the only problems are
        missing files, 65 otherwise.
    """
    path = absolute(path)
    if not path.exists():
        raise MissingInputError("samplesheet not found", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"not a readable CSV samplesheet ({exc})", path) from None
    df.columns = [c.strip() for c in df.columns]
    kind = kind or detect_kind(df.columns)
    schema = load_schema(kind)
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    missing: list[str] = []
    relative_missing = False
    needed = set(schema.get("required", [])) | set(required_roles)
    for col in sorted(needed - set(df.columns)):
        problems.append(f"missing column '{col}'")
    names = jsonschema.Draft202012Validator(schema.get("propertyNames", {}))
    for col in df.columns:  # a role becomes part of output file names
        if not names.is_valid(col):
            problems.append(f"column '{col}': not a valid role name (letters, digits, _ . - "
                            "only, not starting with '.' or '-')")
    if len(df) == 0:
        problems.append("no subjects (the samplesheet has no rows)")
    dupes = df["subject"][df["subject"].duplicated()].unique() if "subject" in df else []
    for subject in dupes:
        problems.append(f"duplicate subject '{subject}'")
    base = path.parent
    for i, row in df.iterrows():
        rowno = i + 2  # header is line 1
        record = {k: v.strip() for k, v in row.items() if isinstance(v, str) and v.strip()}
        for err in validator.iter_errors(record):
            where = err.path[0] if err.path else None
            if where is None and err.validator != "required":
                continue  # a column name: reported once above
            if err.validator == "required":
                col = err.message.split("'")[1]
                problems.append(f"row {rowno}, column '{col}': empty")
            elif where == "subject":
                problems.append(f"row {rowno}, column 'subject': bad subject ID "
                                f"{record.get('subject')!r} (one folder name: letters, "
                                "digits, _ . - only, not '.' or '..')")
            else:
                problems.append(f"row {rowno}, column '{where}': {err.message}")
        for role in required_roles:
            if role in df.columns and not record.get(role):
                problems.append(f"row {rowno}, column '{role}': empty")
        for col, value in record.items():
            if col == "subject" or is_metadata_column(col):
                continue
            name, series = split_series(value, base)
            full = absolute(name, base)
            df.at[i, col] = str(full) + (f"{SERIES_MARK}{series}" if series else "")
            if check_files and not full.exists():
                missing.append(f"row {rowno}, column '{col}': file not found: {name}")
                relative_missing |= not Path(name).is_absolute()
            elif check_files and series is not None:
                problem = _series_problem(full, series)
                if problem:
                    problems.append(f"row {rowno}, column '{col}': {problem}")
    for col in df.columns:
        df[col] = df[col].map(lambda v: v if isinstance(v, str) and v.strip() else None)
    if problems or missing:
        raise (InvalidDataError if problems else MissingInputError)(
            _summary(problems + missing, relative_missing, base), path)
    df.attrs["kind"] = kind
    df.attrs["path"] = str(path)
    return df


def _summary(problems: list[str], relative_missing: bool, base: Path) -> str:
    """One line: the count, the first problems, and where relative paths were looked for."""
    n = len(problems)
    msg = f"{n} problem{'s' if n > 1 else ''}: " + first_of(problems)
    if relative_missing:
        msg += f" (relative paths are read from the samplesheet's folder, {base})"
    return msg
