"""The rules every command's outputs pass through (docs/data-safety.md).

* :func:`check_outputs`: no output may be an input (exit 2, before any work).
* :func:`output_folder` and :func:`output_error`: an output that cannot be written (no
  space, permission denied, read-only, a file in the way) is one line naming the path,
  exit 73, never an "unexpected" error. :mod:`medflow.io.atomic` uses them for every write.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable

from medflow.errors import OutputError, OverwriteError
from medflow.io.paths import source_file

#: Write errors that say nothing about the data: the place cannot take the output.
ALWAYS_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
#: Errors that are about the place when they concern an output's own path or folder.
PLACE = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def output_error(exc: OSError, path: str | os.PathLike | None) -> OutputError | OSError:
    """The contract error for an OSError met while writing ``path``: :class:`OutputError`
    (exit 73) naming the path and the reason, or ``exc`` itself when it is no write error.

    Example:
        >>> output_error(OSError(errno.ENOSPC, "No space left on device"), "/r").exit_code
        73
    """
    if exc.errno not in ALWAYS_WRITE | PLACE:
        return exc
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        reason = "a file is in the way of a folder"
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere"}.get(
        exc.errno, "check the permissions or write elsewhere")
    return OutputError(f"cannot write output: {reason} ({hint})", path)


def output_folder(path: str | os.PathLike, created: list[Path] | None = None) -> Path:
    """Create the output folder ``path`` (and its parents) if needed.

    Args:
        path: the folder.
        created: when given, the folders this call made are appended to it, so that a
            command that fails can remove them again (:func:`remove_new_folders`).

    Raises:
        OutputError: it cannot be created (permission denied, read-only, a file in the
            way, disk full): exit 73, one line naming the folder.
    """
    path = Path(path)
    new = []
    if created is not None:
        p = path
        while not os.path.lexists(p) and p != p.parent:
            new.append(p)
            p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path) from None
    if created is not None:
        created.extend(new)
    return path


def remove_new_folders(created: Iterable[Path]) -> None:
    """Remove the folders :func:`output_folder` made (``created``) that are still empty,
    deepest first: a command that fails leaves no output folder behind. A folder that
    holds anything (another writer's file) stays."""
    for folder in sorted(set(created), key=lambda p: len(Path(p).parts), reverse=True):
        try:
            Path(folder).rmdir()
        except OSError:
            pass


class _Identities:
    """Real paths (symbolic links followed) and (device, inode) of files, with each
    folder's real path looked up once: a UK Biobank plan names a million files in a few
    hundred thousand folders. Plain strings, not Path objects, for the same reason."""

    def __init__(self) -> None:
        self.folders: dict[str, str] = {}

    def of(self, path: str | os.PathLike) -> tuple[str, tuple[int, int] | None, int]:
        """(real path, (device, inode) or None when absent, st_mode or 0)."""
        folder, name = os.path.split(os.path.abspath(path))
        real_folder = self.folders.get(folder)
        if real_folder is None:
            real_folder = self.folders[folder] = os.path.realpath(folder)
        real = os.path.join(real_folder, name)
        try:
            st = os.lstat(real)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(real)
                st = os.stat(real)
        except OSError:
            return real, None, 0
        return real, (st.st_dev, st.st_ino), st.st_mode


def check_outputs(outputs: Iterable[str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse, before any work, an output that would be written over an input, or two
    outputs that are one file.

    Every command passes every file it is going to write (images, sidecars, tables,
    plots) and every file or folder it reads through this one rule.

    Args:
        outputs: the files to be written (None entries are skipped).
        inputs: the files and folders read (None entries are skipped). A folder (a DICOM
            series, a model folder) also protects every file inside it; a
            ``<zip or folder>#<series>`` cell protects the zip or folder.

    Raises:
        OverwriteError: exit 2, one line naming the output and the input (or the other
            output).

    Note:
        Paths are compared after following symbolic links, and existing files also by
        device and inode, so a hard link or a second name of an input is caught.

    Example:
        >>> check_outputs(["/r/seg.nii.gz"], ["/d/sa.nii.gz"])    # fine: returns None
    """
    ids = _Identities()
    by_path: dict[str, str] = {}
    by_inode: dict[tuple[int, int], str] = {}
    folders: dict[str, str] = {}  # input folders: nothing may be written inside them
    for given in (os.fspath(p) for p in inputs if p is not None):
        if "#" in given:  # a `zip#series` / `folder#series` cell reads the zip or folder
            given = os.fspath(source_file(given))
        real, inode, mode = ids.of(given)
        by_path[real] = given
        if inode is not None:
            by_inode[inode] = given
        if stat.S_ISDIR(mode):
            folders[real] = given
    inside: dict[str, str | None] = {}  # real folder -> the input folder it lies in

    def input_folder_of(folder: str) -> str | None:
        if folder not in inside:
            parent = os.path.dirname(folder)
            inside[folder] = folders.get(folder) or (
                input_folder_of(parent) if parent != folder else None)
        return inside[folder]

    clashes = []
    planned: dict[str, str] = {}  # real path -> the output that claimed it first
    twice = None  # e.g. --output and --output-image naming one file
    for out in (os.fspath(p) for p in outputs if p is not None):
        real, inode, _ = ids.of(out)
        if real in planned and twice is None:
            twice = (out, planned[real])
        planned.setdefault(real, out)
        hit = by_path.get(real) or (inode and by_inode.get(inode)) or (
            folders and input_folder_of(os.path.dirname(real)))
        if hit:
            clashes.append((out, hit))
    if clashes:
        out, hit = clashes[0]
        more = f" (and {len(clashes) - 1} more output(s))" if len(clashes) > 1 else ""
        raise OverwriteError(f"would overwrite the input {hit}; nothing was written{more}",
                             out)
    if twice:  # after the inputs: writing over an input is the graver mistake to name
        raise OverwriteError(f"is also the output {twice[1]}: two outputs would be one file; "
                             "nothing was written", twice[0])
