"""Error types and the exit-code contract shared by every medflow command.

Exit codes (DESIGN.md): 0 done; 2 wrong usage (Click's own, and an output that would be
written over an input); 65 input data invalid; 66 an input is missing; 73 an output cannot
be written (no space left, permission denied, read-only, a file in the way); 75 transient
(e.g. out of memory: the pipeline retries; a results folder in use by another run);
1 an unexpected bug. Tools never exit 104 or 130-145: Nextflow reads them as resource
failures. Only ``medflow pipeline`` (never run by Nextflow) exits 130, when interrupted
(SIGINT or SIGTERM); an interrupted tool removes its temporaries and dies by the signal.
"""

from __future__ import annotations

import os
import signal
import sys

import click

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_DATA = 65
EXIT_MISSING = 66
EXIT_CANT_WRITE = 73      # sysexits EX_CANTCREAT
EXIT_TRANSIENT = 75
EXIT_INTERRUPTED = 130    # medflow pipeline only (128 + SIGINT, the shell's convention)

#: More memory than any single machine has (16 TiB): a request this size can never
#: succeed, so it is invalid input (65), never a transient failure (75) that the pipeline
#: and Nextflow would retry with more memory.
MAX_BYTES_ANY_MACHINE = 16 * 2**40
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50,
          "EiB": 2**60}


def requested_bytes(exc: BaseException) -> int | None:
    """How many bytes a failed allocation asked for, when the error says (numpy's
    ``_ArrayMemoryError`` carries shape and dtype; torch writes "Tried to allocate
    1.50 PiB")."""
    shape, dtype = getattr(exc, "shape", None), getattr(exc, "dtype", None)
    if shape is not None and dtype is not None:
        n = 1
        for s in shape:
            n *= int(s)
        return n * int(getattr(dtype, "itemsize", 1))
    import re

    m = re.search(r"allocate ([0-9.]+) ?([KMGTPE]i?B|B)", str(exc))
    if m:
        unit = m.group(2) if m.group(2) in _UNITS else m.group(2).replace("B", "iB")
        return int(float(m.group(1)) * _UNITS.get(unit, 1))
    return None


def size_text(nbytes: float) -> str:
    for unit in ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"):
        if nbytes >= _UNITS[unit]:
            return f"{nbytes / _UNITS[unit]:.3g} {unit}"
    return f"{int(nbytes)} B"


def first_of(items: list[str], shown: int = 5, sep: str = "; ") -> str:
    """The first ``shown`` items joined, then how many more: a message naming every one of
    thousands of problems is no longer one line a person reads."""
    text = sep.join(items[:shown])
    return text + (f"{sep}and {len(items) - shown} more" if len(items) > shown else "")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class MedflowError(click.ClickException):
    """Base for errors with a contract exit code; shown as one line on stderr."""

    exit_code = EXIT_BUG

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        text = _one_line(message)
        if self.path is not None:
            text = f"{self.path}: {text}"
        super().__init__(text)

    def show(self, file=None) -> None:  # noqa: D102 - Click API
        click.echo(f"medflow: error: {self.format_message()}", file=file or sys.stderr)


class InvalidDataError(MedflowError):
    """The input exists but is not usable: corrupt, wrong shape, NaN, bad geometry, labels."""

    exit_code = EXIT_DATA


class MissingInputError(MedflowError):
    """An input file or folder does not exist."""

    exit_code = EXIT_MISSING


class TransientError(MedflowError):
    """Worth retrying as is, or with more resources (out of memory)."""

    exit_code = EXIT_TRANSIENT


class OverwriteError(MedflowError):
    """An output would be written over one of the command's inputs (a usage error, like
    rasterio's ``FileOverwriteError``): nothing is written."""

    exit_code = EXIT_USAGE


class OutputError(MedflowError):
    """An output cannot be written: no space left (or quota exceeded), permission denied,
    a read-only file system, or a file where a folder should be.

    Note:
        73 (sysexits ``EX_CANTCREAT``), not 75: retrying the same command in the same place
        does not help (a full disk stays full, and a retry refills it); the user frees
        space, fixes permissions or picks another output folder.
    """

    exit_code = EXIT_CANT_WRITE


class BusyError(MedflowError):
    """The results folder is held by another run (its lock); try again when it finished."""

    exit_code = EXIT_TRANSIENT


class InternalError(MedflowError):
    """An unexpected bug; the traceback is shown with --debug."""

    exit_code = EXIT_BUG


class NotBuiltError(MedflowError):
    """A tool that is planned but not implemented yet says so rather than pretending."""

    exit_code = EXIT_BUG


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised by the handlers ``medflow``'s entry point installs,
    so ``with`` blocks unwind (atomic outputs discard their temporaries). A BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(self.name)
