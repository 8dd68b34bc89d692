"""Running one task: its `medflow` command lines in child processes, with time, peak memory
and a record that lets ``--resume`` skip it next time.

Each command runs as ``python -m medflow ...`` in its own process (:mod:`.children`): the
same command line a Nextflow task runs, a crash cannot take the runner down, and its peak
memory is that process's own (``VmHWM``).

What a task may delete (docs/data-safety.md): only files this attempt created or replaced,
files an earlier run of the same task recorded (by checksum) as its outputs, and the atomic
writer's leftover temporaries in the task's own folders. Never anything else, so an input
that sits where an output would go is never removed.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from medflow.errors import EXIT_BUG, EXIT_DATA, EXIT_MISSING, EXIT_TRANSIENT
from medflow.io.atomic import atomic_path, remove_stale_temporaries
from medflow.io.sidecar import sha256, write_json
from medflow.io.tables import write_table
from medflow.pipeline.children import Control, run_command
from medflow.pipeline.plan import Task

RETRIES = 1  # a transient failure (exit 75, e.g. out of memory) is tried once more


@dataclass
class Outcome:
    """What happened to a task (one trace row)."""

    task: str
    stage: str
    subject: str | None
    status: str               # done, cached, failed, skipped, cancelled
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


def read_record(info: Path, task: Task) -> dict:
    """The task's record from an earlier run ({} when there is none or it is unreadable)."""
    try:
        record = json.loads(record_path(info, task).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_outputs(record: dict) -> dict[str, str]:
    """Output path -> sha256 as recorded (records written before checksums: {})."""
    outputs = record.get("outputs")
    return outputs if isinstance(outputs, dict) else {}


def is_current(record: dict, task: Task, print_: dict) -> bool:
    """True when an earlier run did this exact task and its outputs are still the files it
    wrote (by checksum: a file replaced since, e.g. by a stray process, is not trusted;
    hashed afresh, never from the per-version cache, which trusts size and time)."""
    outputs = recorded_outputs(record)
    return (record.get("fingerprint") == print_
            and set(outputs) == {str(p) for p in task.outputs}
            and all(p.is_file() and sha256(p) == outputs[str(p)] for p in task.outputs))


def task_folders(task: Task) -> set[Path]:
    """The folders a task writes in (its outputs' and its samplesheet's folders): nothing
    else writes there while the run holds the results folder."""
    return {p.parent for p in [*task.outputs, *([task.sheet_path] if task.sheet_path else [])]}


def remove_temporaries(task: Task) -> None:
    """Remove what a killed writer left in the task's folders (atomic-writer temporaries
    only, never an input)."""
    for folder in task_folders(task):
        remove_stale_temporaries(folder, keep=task.inputs)


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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


def run_task(info: Path, task: Task, threads: int, resume: bool,
             control: Control | None = None) -> Outcome:
    """Run (or, with ``resume``, skip) one task; never raises for a failing command.

    A task whose run is cancelled before it starts does nothing; one stopped while it runs
    leaves none of its outputs (status ``cancelled``).
    """
    control = control or Control()
    if control.cancelled.is_set():
        return Outcome(task.name, task.stage, task.subject, "cancelled", error=control.reason)
    remove_temporaries(task)
    print_ = fingerprint(task)
    previous = read_record(info, task)
    if resume and is_current(previous, task, print_):
        return Outcome(task.name, task.stage, task.subject, "cached")
    record = record_path(info, task)
    record.unlink(missing_ok=True)  # until it succeeds again, nothing of it is trusted
    before = {p: _stamp(p) for p in task.outputs}
    if task.sheet is not None:  # a cohort task reads the samplesheet the runner wrote
        with atomic_path(task.sheet_path) as tmp:
            task.sheet.to_csv(tmp, index=False)
    log = log_path(info, task)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0, peak, code, attempts = time.perf_counter(), 0.0, 0, 0
    with open(log, "w") as fh:
        for argv in task.commands:
            for attempts in range(1, RETRIES + 2):
                code, rss = run_command(argv, fh, child_env(threads), control)
                peak = max(peak, rss)
                if code != EXIT_TRANSIENT:
                    break
            if code != 0:
                break
    seconds, peak = round(time.perf_counter() - t0, 3), round(peak, 1)
    missing = [str(p) for p in task.outputs if not p.exists()]
    if code is None or code != 0 or missing:
        _remove_partial(task, before, previous)
    if code is None:
        return Outcome(task.name, task.stage, task.subject, "cancelled", None, seconds, peak,
                       attempts, f"stopped: {control.reason}")
    if code != 0:
        return Outcome(task.name, task.stage, task.subject, "failed", code, seconds, peak,
                       attempts, _last_error(log))
    if missing:  # a command that exits 0 without its outputs is a bug, not a success
        return Outcome(task.name, task.stage, task.subject, "failed", EXIT_BUG, seconds, peak,
                       attempts, f"outputs not written: {missing}")
    with atomic_path(record) as tmp:
        write_json({"task": task.name, "fingerprint": print_,
                    "outputs": {str(p): sha256(p) for p in task.outputs},
                    "seconds": seconds}, tmp)
    return Outcome(task.name, task.stage, task.subject, "done", 0, seconds, peak, attempts)


def _remove_partial(task: Task, before: dict[Path, tuple | None], previous: dict) -> None:
    """After a failed or stopped attempt: remove the outputs this attempt created or
    replaced and those an earlier run of this task recorded, so results never mix an old
    output with this failure; a file that was there before and is no output of ours (an
    input stored under an output's name, say) stays."""
    recorded = recorded_outputs(previous)
    for path in task.outputs:
        if not path.is_file():
            continue
        ours = _stamp(path) != before.get(path) or (
            str(path) in recorded and sha256(path) == recorded[str(path)])
        if ours:
            path.unlink()
    remove_temporaries(task)


def remove_outputs(info: Path, task: Task) -> None:
    """Remove what an earlier run recorded as this task's outputs (only files whose
    checksum still matches the record), and its record."""
    _remove_partial(task, {p: _stamp(p) for p in task.outputs}, read_record(info, task))
    record_path(info, task).unlink(missing_ok=True)


def write_trace(outcomes: list[Outcome], path: Path) -> None:
    import pandas as pd

    rows = [vars(o) for o in outcomes]
    df = pd.DataFrame(rows, columns=list(Outcome.__dataclass_fields__))
    df["subject"] = df["subject"].fillna("")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write_table(df, tmp)
