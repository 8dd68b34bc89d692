"""Atomic outputs: everything is written to temporary names beside the targets, then
renamed together, so a killed or failed run never leaves a partial or corrupt output."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary path in the same folder as ``final``; it replaces ``final`` on success."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + _suffix(final),
                                   dir=final.parent)
        # mkstemp makes owner-only files; outputs get the usual mode (shared clusters, containers).
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def commit(self) -> None:
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


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
    except BaseException:
        out.discard()
        raise
    out.commit()


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """One atomic output."""
    with atomic_outputs() as out:
        yield out.path(final)
