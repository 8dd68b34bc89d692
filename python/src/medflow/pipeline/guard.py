"""What the runner checks and holds before it writes anything, and how it is stopped.

* :func:`check_plan`: every file the run will write, checked against every file it reads,
  before any work (exit 2 naming both), so no task and no clean-up can touch an input.
* :func:`remove_runner_temporaries`: what a killed runner left beside its own files.
* :func:`interrupts`: SIGINT and SIGTERM cancel the run (queued tasks do not start,
  running ones are stopped) instead of raising in the middle of it.

See docs/data-safety.md.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medflow.io.atomic import remove_stale_temporaries
from medflow.io.lock import LOCK_NAME
from medflow.io.outputs import check_outputs
from medflow.io.paths import source_file
from medflow.io.samplesheet import is_metadata_column
from medflow.pipeline import execute, plan
from medflow.pipeline.children import Control
from medflow.pipeline.stages import COHORT, Stage


def user_inputs(ctx: plan.Context, samplesheet: Path, stages: list[Stage]) -> list[Path]:
    """What the user gave: the samplesheet, every file it names, and the model folder
    (unless this run trains it); a ``zip#series`` cell reads the zip."""
    files = [samplesheet]
    for column in ctx.sheet.columns:
        if column != "subject" and not is_metadata_column(column):
            files += [source_file(v) for v in ctx.sheet[column] if isinstance(v, str) and v]
    if ctx.model is not None and "train" not in [s.name for s in stages]:
        files.append(ctx.model)
    if ctx.superres_model is not None and not ctx.prior_in_run:
        files.append(ctx.superres_model)
    if ctx.motion_model is not None:
        files.append(ctx.motion_model)
    return files


def task_plan(ctx: plan.Context, stages: list[Stage]) -> list[plan.Task]:
    """Every task the run may start, over every subject."""
    subjects = list(ctx.sheet["subject"])
    tasks: list[plan.Task] = []
    for stage in stages:
        if stage.scope == COHORT:
            task = plan.cohort_task(ctx, stage, subjects)
            tasks += [task] if isinstance(task, plan.Task) else []
        else:
            tasks += [t for t in plan.subject_tasks(ctx, stage, subjects).values()
                      if isinstance(t, plan.Task)]
    return tasks


def runner_outputs(outdir: Path, stages: list[Stage]) -> list[Path]:
    """The files the runner writes itself (not its tasks)."""
    info = outdir / "pipeline_info"
    files = [outdir / LOCK_NAME, outdir / "cohort.parquet", outdir / "report" / "index.html",
             *(info / n for n in ("trace.parquet", "params.json", "versions.json"))]
    return files + [outdir / s.name / s.table for s in stages if s.table]


def check_plan(ctx: plan.Context, samplesheet: Path, stages: list[Stage]) -> None:
    """Refuse the run before any work when a planned output is one of its inputs.

    Raises:
        OverwriteError: exit 2, naming the output and the input.
    """
    info = ctx.outdir / "pipeline_info"
    outputs = runner_outputs(ctx.outdir, stages)
    for task in task_plan(ctx, stages):
        outputs += [*task.outputs, execute.record_path(info, task),
                    execute.log_path(info, task)]
        outputs += [task.sheet_path] if task.sheet_path else []
    # a stage table is both a task's output and the runner's: one file, listed twice
    check_outputs(list(dict.fromkeys(outputs)), user_inputs(ctx, samplesheet, stages))


def remove_runner_temporaries(ctx: plan.Context, samplesheet: Path,
                              stages: list[Stage]) -> None:
    """Temporaries a killed runner left beside its own files (tables, trace, records, the
    report); each task removes its own before it runs."""
    info = ctx.outdir / "pipeline_info"
    folders = {p.parent for p in runner_outputs(ctx.outdir, stages)}
    folders |= {info / "tasks" / s.name for s in stages}
    keep = user_inputs(ctx, samplesheet, stages)
    for folder in folders:
        remove_stale_temporaries(folder, keep=keep)


@contextmanager
def interrupts(control: Control) -> Iterator[Control]:
    """SIGINT and SIGTERM cancel the run (``control.cancel``) while in the block.

    Note:
        A handler can only be set in the main thread; elsewhere (the runner used as a
        library from a thread) signals keep their meaning. An exception leaving the block
        also cancels, so no task process outlives it.
    """
    def on_signal(signum, frame) -> None:
        # From a thread: the handler may interrupt the main thread inside Event.set(),
        # whose lock is not reentrant.
        threading.Thread(target=control.cancel, args=(signal.Signals(signum).name,)).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield control
    except BaseException:
        control.cancel("an error in the runner")
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
