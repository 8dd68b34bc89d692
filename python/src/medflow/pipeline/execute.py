"""Running one task: its `medflow` command lines in child processes, with time, peak memory
and a record that lets ``--resume`` skip it next time.

Each command runs as ``python -m medflow ...`` in its own process: the same command line
a Nextflow task runs, a crash cannot take the runner down, and its peak memory is that
process's own (``VmHWM``).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medflow.errors import EXIT_DATA, EXIT_MISSING, EXIT_TRANSIENT
from medflow.io.atomic import atomic_path
from medflow.io.sidecar import sha256, write_json
from medflow.io.tables import write_table
from medflow.pipeline.plan import Task

RETRIES = 1  # a transient failure (exit 75, e.g. out of memory) is tried once more
POLL_S = 0.05  # how often a running task's memory high-water mark is read


@dataclass
class Outcome:
    """What happened to a task (one trace row)."""

    task: str
    stage: str
    subject: str | None
    status: str               # done, cached, failed, skipped
    exit_code: int | None = None
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    attempts: int = 0
    error: str = ""

    @property
    def data_error(self) -> bool:
        return self.exit_code in (EXIT_DATA, EXIT_MISSING)


def record_path(info: Path, task: Task) -> Path:
    return info / "tasks" / task.stage / f"{task.subject or 'cohort'}.json"


def log_path(info: Path, task: Task) -> Path:
    return info / "logs" / task.stage / f"{task.subject or 'cohort'}.log"


def fingerprint(task: Task) -> dict:
    """What decides a task's result: its command lines and its inputs' checksums."""
    return {"commands": task.commands,
            "inputs": {str(p): checksum(p) if p.exists() else None for p in task.inputs},
            **task.params}


def checksum(path: Path) -> str:
    """``sha256(path)``, computed once per file version in this process: a subject's image
    is an input of several stages and the model folder of every subject's segment task.
    A version is the (name, size, modification time) of every file, so a changed input is
    hashed again."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _sha256_of_version(str(path), stamp)


@functools.lru_cache(maxsize=65536)
def _sha256_of_version(path: str, stamp: tuple) -> str:
    return sha256(path)


def is_current(info: Path, task: Task, print_: dict) -> bool:
    """True when an earlier run did this exact task and its outputs are still there."""
    path = record_path(info, task)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (record.get("fingerprint") == print_
            and all(p.exists() for p in task.outputs))


def _run_command(argv: list[str], log, env: dict) -> tuple[int, float]:
    """Run ``python -m medflow argv``; (exit code, peak RSS in MB of that process)."""
    log.write(f"$ medflow {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "medflow", *argv], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    # The child's own high-water mark, read while it runs: the rusage the kernel reports
    # at exit also counts the runner's memory, which the child shared before its exec.
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, _high_water_kb(proc.pid))
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if not peak_kb:  # gone before the first look (or no /proc): the kernel's upper bound
        peak_kb = usage.ru_maxrss  # KiB on Linux
    return proc.returncode, peak_kb / 1024


def _high_water_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("medflow: error:")]
    return (errors or lines or [""])[-1].removeprefix("medflow: error: ")[:500]


def child_env(threads: int) -> dict:
    """The environment of task processes: ``threads`` CPU threads each, so that parallel
    tasks share the cores instead of each starting one thread per core."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[name] = str(threads)
    return env


def run_task(info: Path, task: Task, threads: int, resume: bool) -> Outcome:
    """Run (or, with ``resume``, skip) one task; never raises for a failing command."""
    print_ = fingerprint(task)
    if resume and is_current(info, task, print_):
        return Outcome(task.name, task.stage, task.subject, "cached")
    record = record_path(info, task)
    record.unlink(missing_ok=True)  # until it succeeds again, nothing of it is trusted
    if task.sheet is not None:  # a cohort task reads the samplesheet the runner wrote
        with atomic_path(task.sheet_path) as tmp:
            task.sheet.to_csv(tmp, index=False)
    log = log_path(info, task)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0, peak, code, attempts = time.perf_counter(), 0.0, 0, 0
    with open(log, "w") as fh:
        for argv in task.commands:
            for attempts in range(1, RETRIES + 2):
                code, rss = _run_command(argv, fh, child_env(threads))
                peak = max(peak, rss)
                if code != EXIT_TRANSIENT:
                    break
            if code != 0:
                break
    seconds = round(time.perf_counter() - t0, 3)
    if code != 0:
        remove_outputs(task)
        return Outcome(task.name, task.stage, task.subject, "failed", code, seconds,
                       round(peak, 1), attempts, _last_error(log))
    missing = [str(p) for p in task.outputs if not p.exists()]
    if missing:  # a command that exits 0 without its outputs is a bug, not a success
        return Outcome(task.name, task.stage, task.subject, "failed", 1, seconds,
                       round(peak, 1), attempts, f"outputs not written: {missing}")
    with atomic_path(record) as tmp:
        write_json({"task": task.name, "fingerprint": print_,
                    "outputs": [str(p) for p in task.outputs], "seconds": seconds}, tmp)
    return Outcome(task.name, task.stage, task.subject, "done", 0, seconds, round(peak, 1),
                   attempts)


def remove_outputs(task: Task) -> None:
    """Remove what an earlier run left for this task, so results never mix a stale output
    with this run's failure. Only the task's own output files are touched."""
    for path in task.outputs:
        if path.is_file():
            path.unlink()


def write_trace(outcomes: list[Outcome], path: Path) -> None:
    import pandas as pd

    rows = [vars(o) for o in outcomes]
    df = pd.DataFrame(rows, columns=list(Outcome.__dataclass_fields__))
    df["subject"] = df["subject"].fillna("")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write_table(df, tmp)
