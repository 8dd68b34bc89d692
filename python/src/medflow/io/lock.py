"""One writer per results folder: an advisory lock on ``<folder>/.medflow.lock``.

Two ``medflow pipeline`` runs on one ``--outdir`` would otherwise both write it and leave
subjects, tables and ``params.json`` from different runs side by side. The lock is a
``flock`` on the lock file: the kernel releases it when the holder's last descriptor
closes, so a killed run never leaves a stale lock. The holder writes who it is into the
file (pid, host, start time, command) so a refused run can say whom it waits for.

Child processes that inherit the descriptor (``pass_fds``) keep the folder locked while
they live: a task process that outlived its runner still holds the folder.

Note:
    The file is never deleted (deleting a lock file lets two runs lock two different
    files of one name). ``flock`` works across machines on local file systems and on
    NFS v4 / Lustre / GPFS with locking enabled; on a file system without locking the
    lock is not enforced.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medflow.errors import BusyError
from medflow.io.outputs import output_error

LOCK_NAME = ".medflow.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, as written in the file by the holder."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run (it has not said who it is yet)"
    text = (f"pid {info.get('pid')} on {info.get('host')}, started "
            f"{info.get('started_utc')}: {info.get('command')}")
    if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
        text += "; that process is gone but processes it started still hold the folder"
    return text


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, TypeError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[int]:
    """Hold ``folder``'s lock for the ``with`` block; yields the lock's file descriptor.

    Args:
        folder: an existing folder (the results folder).

    Raises:
        BusyError: another process holds it (exit 75, one line naming the holder: pid,
            host, start time and command).
        OutputError: the lock file cannot be created (read-only folder, no space: 73).

    Example:
        >>> with folder_lock("results") as fd:            # doctest: +SKIP
        ...     run_pipeline(...)
    """
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise output_error(exc, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise BusyError(f"results folder in use by {holder}; wait for that run to end or "
                        "choose another --outdir", folder) from None
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join(["medflow", *sys.argv[1:]])}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as exc:
            raise output_error(exc, path) from None
        yield fd
    finally:
        try:
            os.ftruncate(fd, 0)  # nobody holds it now
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
