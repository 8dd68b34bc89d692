"""The embedded local runner: checks everything it can before any work, then runs the
stages in order (per-subject tasks in parallel processes, cohort tasks after them),
keeps going past a subject's data error, and writes tables, trace and report.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

from medflow import __version__
from medflow.errors import EXIT_BUG, EXIT_DATA, EXIT_MISSING, InvalidDataError
from medflow.io.atomic import atomic_path
from medflow.io.paths import absolute
from medflow.io.samplesheet import load_samplesheet
from medflow.io.sidecar import write_json
from medflow.pipeline import execute, plan
from medflow.pipeline.checks import check_model
from medflow.pipeline.stages import (COHORT, STAGES, TRAIN_IMAGE_ROLE, TRAIN_LABEL_ROLE,
                                     Stage)

PACKAGES = ("numpy", "nibabel", "SimpleITK", "torch", "safetensors", "pandas", "pyarrow",
            "matplotlib", "click")


@dataclass
class Options:
    """Everything ``medflow pipeline`` takes (see its ``--help``)."""

    input: Path
    outdir: Path
    model: Path | None = None
    train: bool = False
    stages: tuple[str, ...] = ()      # empty: every stage
    jobs: int = 1
    resume: bool = False
    device: str = "auto"
    seed: int = 0
    report: bool = True
    cluster_model: Path | None = None  # the cluster stage's model (None: trained in the stage)


@dataclass
class RunResult:
    outcomes: list[execute.Outcome] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)   # subject -> "ok" or why not
    seconds: float = 0.0

    @property
    def failed_subjects(self) -> list[str]:
        return [s for s, st in self.status.items() if st != "ok"]

    @property
    def failed_tasks(self) -> list[execute.Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0; 65/66 when every failure was a data error (66 only if all were missing
        inputs); 1 when anything else failed."""
        codes = {o.exit_code for o in self.failed_tasks}
        if not codes:
            return 0
        if codes <= {EXIT_MISSING}:
            return EXIT_MISSING
        return EXIT_DATA if codes <= {EXIT_DATA, EXIT_MISSING} else EXIT_BUG


def absolute_paths(opts: Options) -> Options:
    """``opts`` with every path absolute: they are written into task command lines, task
    records, derived samplesheets and ``params.json``, all read from other folders."""
    return replace(opts, input=absolute(opts.input), outdir=absolute(opts.outdir),
                   model=opts.model and absolute(opts.model),
                   cluster_model=opts.cluster_model and absolute(opts.cluster_model))


def selected_stages(opts: Options) -> list[Stage]:
    """The stages this run executes, in pipeline order."""
    chosen = []
    for stage in STAGES:
        if stage.only_with == "train" and not opts.train:
            continue
        if opts.stages and stage.name not in opts.stages:
            continue
        chosen.append(stage)
    return chosen


def prepare(opts: Options) -> plan.Context:
    """Validate the samplesheet and the model before any work (contract errors otherwise).

    Note:
        Every bad row and column of the samplesheet is named in one error (65, or 66 when
        only files are missing); an unreadable model folder stops the run too.
    """
    names = [s.name for s in selected_stages(opts)]
    card = None
    if opts.train:
        model = opts.outdir / "train" / "model"
        if "segment" in names and "train" not in names:
            card = check_model(model)  # trained by an earlier run
    else:
        model = opts.model
        if model is not None:
            card = check_model(model)
    image_roles, label_role = (TRAIN_IMAGE_ROLE,), TRAIN_LABEL_ROLE
    if card is not None:
        image_roles = tuple(card["training"]["image_roles"])
        label_role = card["training"].get("label_role")
    required = image_roles if ("segment" in names or "train" in names) else ()
    sheet = load_samplesheet(opts.input, required_roles=required)
    if "train" in names and not (label_role in sheet and sheet[label_role].notna().any()):
        raise InvalidDataError(f"--train needs labels: no subject has a '{label_role}' file",
                               opts.input)
    if opts.cluster_model is not None and "cluster" in names:
        from medflow.cluster.card import read_card as check_cluster_model

        check_cluster_model(opts.cluster_model)
    return plan.Context(sheet, absolute(opts.outdir), model and absolute(model),
                        image_roles, label_role, opts.device, opts.seed,
                        opts.cluster_model and absolute(opts.cluster_model))


def run(opts: Options, progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None) -> RunResult:
    """Run the pipeline; ``progress(n)`` is called as tasks finish.

    Returns:
        :class:`RunResult` (outcomes per task, status per subject, exit code).
    """
    t0 = time.perf_counter()
    opts = absolute_paths(opts)
    ctx = prepare(opts)
    info = opts.outdir / "pipeline_info"
    stages = selected_stages(opts)
    subjects = list(ctx.sheet["subject"])
    result = RunResult(status={s: "ok" for s in subjects})
    if on_total:
        on_total(sum(len(subjects) if s.scope != COHORT else 1 for s in stages))
    write_run_info(info, opts, stages)
    for i, stage in enumerate(stages):
        alive = [s for s in subjects if result.status[s] == "ok"]
        if stage.scope != COHORT:
            _subject_stage(ctx, stage, subjects, alive, opts, result, progress)
            continue
        task = plan.cohort_task(ctx, stage, alive)
        if isinstance(task, plan.Task):  # a cohort task gets every core
            outcome = execute.run_task(info, task, os.cpu_count() or 1, opts.resume)
        else:
            outcome = execute.Outcome(stage.name, stage.name, None, "skipped", error=task)
        result.outcomes.append(outcome)
        progress and progress(1)
        if outcome.status == "failed" and stages[i + 1:]:
            _stop_after(stage, stages[i + 1:], alive, result, progress)
            break
    result.seconds = round(time.perf_counter() - t0, 3)
    finish(opts, result, info)
    return result


def _subject_stage(ctx: plan.Context, stage: Stage, subjects: list[str], alive: list[str],
                   opts: Options, result: RunResult, progress) -> None:
    """One task per subject still in the run, ``opts.jobs`` at a time."""
    info = opts.outdir / "pipeline_info"
    for subject in subjects:
        if subject not in alive:  # failed earlier: its stale outputs go too
            _skip(info, ctx, stage, subject, result, progress)
    tasks = plan.subject_tasks(ctx, stage, alive)
    for subject, reason in tasks.items():
        if isinstance(reason, str):  # the stage does not apply to this subject
            result.outcomes.append(execute.Outcome(f"{stage.name}:{subject}", stage.name,
                                                   subject, "skipped", error=reason))
            progress and progress(1)
    threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        futures = [pool.submit(execute.run_task, info, t, threads, opts.resume)
                   for t in tasks.values() if isinstance(t, plan.Task)]
        for future in as_completed(futures):
            outcome = future.result()
            result.outcomes.append(outcome)
            if outcome.status == "failed":
                result.status[outcome.subject] = (f"failed in {stage.name} (exit "
                                                  f"{outcome.exit_code}): {outcome.error}")
            progress and progress(1)


def _stop_after(failed: Stage, later: list[Stage], alive: list[str], result: RunResult,
                progress) -> None:
    """A cohort stage failed: later stages may depend on it (segment on train), so they
    do not run; every subject still in the run is marked as stopped."""
    for subject in alive:
        result.status[subject] = f"stopped: the {failed.name} stage failed"
    for stage in later:
        for subject in ([None] if stage.scope == COHORT else alive):
            result.outcomes.append(execute.Outcome(
                f"{stage.name}:{subject or 'cohort'}", stage.name, subject, "skipped",
                error=f"the {failed.name} stage failed"))
            progress and progress(1)


def _skip(info: Path, ctx: plan.Context, stage: Stage, subject: str, result: RunResult,
          progress) -> None:
    task = plan.subject_tasks(ctx, stage, [subject]).get(subject)
    if isinstance(task, plan.Task):
        execute.remove_outputs(task)
        execute.record_path(info, task).unlink(missing_ok=True)
    result.outcomes.append(execute.Outcome(f"{stage.name}:{subject}", stage.name, subject,
                                           "skipped", error="an earlier stage failed"))
    progress and progress(1)


def finish(opts: Options, result: RunResult, info: Path) -> None:
    """Trace, tables and report, also after failures (they show what failed)."""
    from medflow.pipeline.tables import collect

    order = {s.name: i for i, s in enumerate(STAGES)}
    result.outcomes.sort(key=lambda o: (order[o.stage], o.subject or ""))
    execute.write_trace(result.outcomes, info / "trace.parquet")
    collect(opts.outdir, result.status)
    if opts.report:
        from medflow.report.render import render_report

        render_report(opts.outdir)


def write_run_info(info: Path, opts: Options, stages: list[Stage]) -> None:
    """``versions.json`` and ``params.json`` in ``pipeline_info/``."""
    versions = {"medflow": __version__, "python": platform.python_version(),
                "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
    params["stages_run"] = [s.name for s in stages]
    params["command_line"] = " ".join(["medflow", *sys.argv[1:]]) if sys.argv else ""
    params["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name, data in (("versions.json", versions), ("params.json", params)):
        with atomic_path(info / name) as tmp:
            write_json(data, tmp)


def summary_line(result: RunResult, outdir: Path) -> str:
    """One line: subjects done and failed, tasks run and cached, time, where the table is."""
    n = len(result.status)
    failed = result.failed_subjects
    counts = {k: sum(o.status == k for o in result.outcomes)
              for k in ("done", "cached", "failed", "skipped")}
    cohort_failed = [o.stage for o in result.failed_tasks if o.subject is None]
    text = (f"{n - len(failed)} of {n} subjects done, {len(failed)} failed"
            + (f" ({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''})" if failed else "")
            + (f"; cohort stage(s) failed: {', '.join(cohort_failed)}" if cohort_failed else "")
            + f"; tasks: {counts['done']} run, {counts['cached']} cached, {counts['failed']} "
              f"failed, {counts['skipped']} skipped; {result.seconds:.0f} s; "
              f"table {outdir / 'cohort.parquet'}")
    return text
