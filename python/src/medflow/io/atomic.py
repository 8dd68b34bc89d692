"""Atomic outputs: everything is written to temporary names beside the targets, then
renamed together, so a killed or failed run never leaves a partial or corrupt output (nor
the output folders it made for them).
:func:`remove_stale_temporaries` removes what a killed writer left behind. An output that
cannot be written (disk full, permission denied) is an ``OutputError`` (exit 73), see
:mod:`medflow.io.outputs` (docs/data-safety.md).
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from medflow.io.outputs import (ALWAYS_WRITE, PLACE, output_error, output_folder,
                                remove_new_folders)

# mkstemp's names: ".<final name>.<8 random characters>.tmp<final suffix>"
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]+)*)$")


def _suffix(path: Path) -> str:
    # Keep compound suffixes (.nii.gz) so libraries that sniff the name still work.
    name = path.name
    for compound in (".nii.gz", ".tar.gz"):
        if name.endswith(compound):
            return compound
    return path.suffix


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class OutputSet:
    """Temporary paths for a set of outputs; see :func:`atomic_outputs`."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # folders made for the outputs (removed on failure)

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary path in the same folder as ``final``; it replaces ``final`` on success.

        Raises:
            OutputError: the folder cannot be made or written in (exit 73).
        """
        final = Path(final)
        try:
            output_folder(final.parent, self._created)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + _suffix(final),
                                       dir=final.parent)
        except OSError as exc:
            raise output_error(exc, final.parent) from None
        # mkstemp makes owner-only files; outputs get the usual mode (shared clusters, containers).
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def commit(self) -> None:
        for tmp, final in self._pending:
            try:
                os.replace(tmp, final)
            except OSError as exc:  # e.g. a folder where the output should go
                self.discard()
                raise output_error(exc, final) from None
        self._pending.clear()
        self._created.clear()

    def owns(self, exc: OSError) -> bool:
        """Whether ``exc`` came from writing one of this set's files (or their folders)."""
        if exc.errno in ALWAYS_WRITE:
            return True
        names = {os.fspath(p) for pair in self._pending for p in (pair[0], pair[1].parent)}
        return exc.errno in PLACE and exc.filename is not None and (
            os.fspath(exc.filename) in names)

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()
        remove_new_folders(self._created)
        self._created.clear()


@contextmanager
def atomic_outputs() -> Iterator[OutputSet]:
    """Context manager: write to ``out.path(final)``; all renamed at exit, or all removed.

    Example:
        >>> with atomic_outputs() as out:                    # doctest: +SKIP
        ...     np.save(out.path("a.npy"), a)
    """
    out = OutputSet()
    try:
        yield out
    except OSError as exc:
        where = out._pending[0][1].parent if out._pending else None
        owned = out.owns(exc)
        out.discard()
        if owned:
            raise output_error(exc, exc.filename or where) from None
        raise
    except BaseException:
        out.discard()
        raise
    out.commit()


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """One atomic output."""
    with atomic_outputs() as out:
        yield out.path(final)


def temporary_target(path: str | os.PathLike) -> str | None:
    """The output name a temporary of this module was for, or None for any other name.

    Example:
        >>> temporary_target(".s0_sa_seg.nii.gz.k3j_x9ab.tmp.nii.gz")
        's0_sa_seg.nii.gz'
    """
    m = _TEMP.match(Path(path).name)
    if m is None or m["suffix"] != _suffix(Path(m["name"])):
        return None
    return m["name"]


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str] | None = None,
                             keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Remove the temporaries a killed writer left in ``folder`` (not its sub-folders).

    Only names of this module's pattern ``.<name>.<8 random>.tmp<suffix>`` are touched,
    for the output ``names`` given (None: any name), never a path in ``keep`` (inputs).
    Call it only where no other writer is at work (``medflow pipeline`` holds the
    results folder's lock).

    Returns:
        The removed paths.
    """
    wanted = None if names is None else set(names)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    stale = [Path(e.path) for e in entries
             if (target := temporary_target(e.name)) is not None
             and (wanted is None or target in wanted) and e.is_file(follow_symlinks=False)]
    if stale:  # (inputs resolved only when there is something to remove)
        kept = {Path(p).resolve() for p in keep}
        stale = [p for p in stale if p.resolve() not in kept]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
