"""Where a path becomes absolute, once for every writer; what a path or cell names.

A path written into a file (a derived samplesheet, a sidecar, a task record, the trace,
``params.json``) is read later from another working directory, or against another file's
folder. Relative paths would then name other files, or none. Everything that records or
forwards a path passes it through :func:`absolute` first; everything that builds a path
from data (a subject ID, a role) checks it with :func:`inside`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Separates a DICOM zip or folder from the series chosen inside it (``x.zip#SERIES``).
SERIES_MARK = "#"


def absolute(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """``path`` as an absolute, normalised path, with ``~`` expanded.

    Args:
        path: a file or folder name, absolute or relative, possibly starting with ``~``.
        base: the folder a relative ``path`` is relative to (default: the working
            directory), e.g. a samplesheet's folder for its cells.

    Returns:
        An absolute path without ``.``/``..`` components. Symbolic links are kept (not
        resolved), so the path names what the user named.

    Example:
        >>> absolute("sub-000/sa.nii.gz", base="/data/cohort").as_posix()
        '/data/cohort/sub-000/sa.nii.gz'
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_absolute():
        p = absolute(base) / p if base is not None else Path.cwd() / p
    return Path(os.path.normpath(p))


def inside(folder: str | os.PathLike, *parts: str) -> Path:
    """``folder / parts...``, refusing any part that would leave ``folder``.

    Args:
        folder: the folder the result must stay in.
        parts: path components built from data (subject IDs, roles, file names).

    Returns:
        The joined path.

    Raises:
        ValueError: a part is empty, ``.``, ``..``, absolute or holds a path separator.
    """
    for part in parts:
        if (not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part
                or os.path.isabs(part)):
            raise ValueError(f"{part!r} is not a single file or folder name")
    return Path(folder).joinpath(*parts)


def split_series(path: str | os.PathLike, base: str | os.PathLike | None = None
                 ) -> tuple[Path, str | None]:
    """``"x.zip#SERIES"`` -> ``(Path("x.zip"), "SERIES")``; other paths -> ``(path, None)``.

    Args:
        path: a file or folder, optionally followed by ``#`` and a series (description, UID
            or 0-based index, as ``--series`` takes) when it is a DICOM zip or folder.
        base: the folder a relative path is relative to (a samplesheet's folder).

    Returns:
        The file or folder and the series (None when the path names none).

    Note:
        Only the last ``#`` counts, and only when what precedes it is a ``.zip`` or an
        existing folder, so a file whose name happens to hold ``#`` is still found.

    Example:
        >>> split_series("sub-0/1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch")
        (PosixPath('sub-0/1000000_20208_2_0.zip'), 'CINE_segmented_LAX_4Ch')
    """
    text = os.fspath(path)
    head, mark, series = text.rpartition(SERIES_MARK)
    if mark and series and head and not absolute(text, base).exists() and (
            head.lower().endswith(".zip") or absolute(head, base).is_dir()):
        return Path(head), series
    return Path(text), None


def source_file(path: str | os.PathLike) -> Path:
    """The file or folder a path or samplesheet cell reads (``x.zip#S`` -> ``x.zip``)."""
    return split_series(path)[0]


def existing_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` when it is an existing folder (a model folder, a folder to walk).

    Args:
        path: the folder a command reads.
        what: what the user calls it, for the message ("model folder").

    Returns:
        ``path`` as a Path.

    Raises:
        MissingInputError: nothing exists at ``path`` (66): "<what> not found".
        InvalidDataError: a file (or anything else) is there, not a folder (65); saying
            "not found" of a file that exists would send the user looking in vain.

    Example:
        >>> existing_folder("/")
        PosixPath('/')
    """
    from medflow.errors import InvalidDataError, MissingInputError

    p = Path(path)
    if p.is_dir():
        return p
    if not os.path.lexists(p):
        raise MissingInputError(f"{what} not found", p)
    raise InvalidDataError(f"not a folder: a {what} is expected here, not a file", p)
