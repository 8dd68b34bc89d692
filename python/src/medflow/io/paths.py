"""Where a path becomes absolute, once for every writer.

A path written into a file (a derived samplesheet, a sidecar, a task record, the trace,
``params.json``) is read later from another working directory, or against another file's
folder. Relative paths would then name other files, or none. Everything that records or
forwards a path passes it through :func:`absolute` first; everything that builds a path
from data (a subject ID, a role) checks it with :func:`inside`.
"""

from __future__ import annotations

import os
from pathlib import Path


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
