"""Task processes that never outlive the runner, and stop when it is told to stop.

Each command runs as ``python -m medflow ...`` in its own session and process group (so a
terminal's Ctrl-C reaches the runner only, which then decides), with the kernel's
parent-death signal set to SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``): if the runner dies,
even by SIGKILL, its task processes die with it and cannot commit an output afterwards.
When the run is cancelled (SIGINT, SIGTERM, an error in the runner) every running task's
group gets SIGTERM (a medflow tool then removes its temporaries and exits), and SIGKILL
after :data:`GRACE_S` seconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

POLL_S = 0.05   # how often a running task is looked at (memory, cancel)
GRACE_S = 5.0   # SIGTERM, then this long, then SIGKILL
_PR_SET_PDEATHSIG = 1


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up once, before any fork


@dataclass
class Control:
    """What the runner shares with the threads that run its tasks.

    Attributes:
        pass_fds: descriptors every task process inherits (the results folder's lock, so
            the folder stays locked while any of them lives).
        cancelled: set when the run must stop: queued tasks do not start, running ones
            are stopped.
        reason: why (``SIGINT``, ``SIGTERM``, ...), for the outcome and the last line.
    """

    pass_fds: tuple[int, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cancel(self, reason: str) -> None:
        """Cancel the run; the first reason given is kept."""
        with self._lock:
            if not self.cancelled.is_set():
                self.reason = reason
                self.cancelled.set()


def _die_with_runner(runner: int):
    """The child's pre-exec step: SIGKILL when the runner dies.

    Note:
        The parent-death signal fires when the *thread* that started the child ends; the
        runner's task threads live until their child has been reaped. It runs between
        fork and exec, so it does nothing but two system calls.
    """
    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != runner:  # the runner died before the signal was armed
            os._exit(128 + int(signal.SIGKILL))
    return preexec


def run_command(argv: list[str], log, env: dict, control: Control
                ) -> tuple[int | None, float]:
    """Run ``python -m medflow argv`` with its output in ``log``.

    Returns:
        (exit code, or None when the run was cancelled and the task stopped; peak RSS in
        MB of the task process).
    """
    log.write(f"$ medflow {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "medflow", *argv], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True, pass_fds=control.pass_fds,
                            preexec_fn=_die_with_runner(os.getpid()))
    # The child's own high-water mark, read while it runs: the rusage the kernel reports
    # at exit also counts the runner's memory, which the child shared before its exec.
    peak_kb, stopped = 0, False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if control.cancelled.is_set():
            status, usage = _stop(proc.pid)
            stopped = True
            break
        peak_kb = max(peak_kb, _high_water_kb(proc.pid))
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if not peak_kb:  # gone before the first look (or no /proc): the kernel's upper bound
        peak_kb = usage.ru_maxrss  # KiB on Linux
    return (None if stopped else proc.returncode), peak_kb / 1024


def _stop(pid: int):
    """SIGTERM to the task's process group, SIGKILL after :data:`GRACE_S`; (status, rusage).
    The group is signalled while its leader is not yet reaped, so its id is still ours."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            _signal_group(pid, signal.SIGKILL)  # anything the task itself started
            return status, usage
        time.sleep(POLL_S)
    _signal_group(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _high_water_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
