"""The embedded local runner: checks everything it can before any work, then runs the
stages in order (per-subject tasks in parallel processes, cohort tasks after them),
keeps going past a subject's data error, and writes tables, trace and report.

It holds the results folder's lock for the whole run, never writes over an input, and on
SIGINT/SIGTERM stops its tasks, removes their partial outputs and returns (exit 130):
docs/data-safety.md.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from medflow.errors import (EXIT_BUG, EXIT_CANT_WRITE, EXIT_DATA, EXIT_INTERRUPTED,
                            EXIT_MISSING, InvalidDataError)
from medflow.io.lock import folder_lock
from medflow.io.outputs import output_folder
from medflow.io.paths import absolute
from medflow.io.samplesheet import load_samplesheet
from medflow.pipeline import execute, guard, plan
from medflow.pipeline.checks import check_model, check_prior
from medflow.pipeline.children import Control
from medflow.pipeline.runinfo import write_run_info
from medflow.pipeline.stages import (COHORT, STAGES, TRAIN_IMAGE_ROLE, TRAIN_LABEL_ROLE,
                                     Stage, get_stage)


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
    superres_model: Path | None = None  # shape prior of the superres stage
    train_prior: bool = False  # train the shape prior in this run (train_prior stage)
    annotate_budget: str = "10%"      # the annotate stage's --budget
    cluster_model: Path | None = None  # the cluster stage's model (None: trained in the stage)
    motion: bool = False  # run the motion stage (estimate-motion-mesh fit)
    motion_model: Path | None = None  # the motion stage predicts with it (implies motion)
    save_probabilities: bool = False  # segment writes probabilities; uncertainty scores them


@dataclass
class RunResult:
    outcomes: list[execute.Outcome] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)   # subject -> "ok" or why not
    seconds: float = 0.0
    stopped_by: str = ""   # why the run was cancelled (SIGINT, SIGTERM, exit 73), if it was

    @property
    def interrupted(self) -> bool:
        return self.stopped_by.startswith("SIG")

    @property
    def failed_subjects(self) -> list[str]:
        return [s for s, st in self.status.items() if st != "ok"]

    @property
    def failed_tasks(self) -> list[execute.Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """130 when interrupted; else 0; 65/66 when every failure was a data error (66
        only if all were missing inputs); 73 when besides those an output could not be
        written (disk full); 1 when anything else failed."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        codes = {o.exit_code for o in self.failed_tasks}
        if not codes:
            return 0
        if codes <= {EXIT_MISSING}:
            return EXIT_MISSING
        if codes <= {EXIT_DATA, EXIT_MISSING}:
            return EXIT_DATA
        if codes <= {EXIT_DATA, EXIT_MISSING, EXIT_CANT_WRITE}:
            return EXIT_CANT_WRITE
        return EXIT_BUG


def absolute_paths(opts: Options) -> Options:
    """``opts`` with every path absolute: they are written into task command lines, task
    records, derived samplesheets and ``params.json``, all read from other folders."""
    return replace(opts, input=absolute(opts.input), outdir=absolute(opts.outdir),
                   model=opts.model and absolute(opts.model),
                   superres_model=opts.superres_model and absolute(opts.superres_model),
                   cluster_model=opts.cluster_model and absolute(opts.cluster_model),
                   motion_model=opts.motion_model and absolute(opts.motion_model))


def selected_stages(opts: Options) -> list[Stage]:
    """The stages this run executes, in pipeline order."""
    chosen = []
    for stage in STAGES:
        if stage.only_with == "train" and not opts.train:
            continue
        if stage.only_with == "train_prior" and not opts.train_prior:
            continue
        if stage.only_with == "prior" and not (opts.superres_model or opts.train_prior):
            continue
        if stage.only_with == "motion" and not (opts.motion or opts.motion_model):
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
        if ("segment" in names or "annotate" in names) and "train" not in names:
            card = check_model(model)  # trained by an earlier run
    else:
        model = opts.model
        if model is not None:
            card = check_model(model)
    image_roles, label_role = (TRAIN_IMAGE_ROLE,), TRAIN_LABEL_ROLE
    if card is not None:
        image_roles = tuple(card["training"]["image_roles"])
        label_role = card["training"].get("label_role")
    required = image_roles if ({"segment", "train", "annotate"} & set(names)) else ()
    sheet = load_samplesheet(opts.input, required_roles=required)
    if "train" in names and not (label_role in sheet and sheet[label_role].notna().any()):
        raise InvalidDataError(f"--train needs labels: no subject has a '{label_role}' file",
                               opts.input)
    prior, in_run = opts.superres_model, "train_prior" in names
    if opts.train_prior:
        prior = opts.outdir / "train_prior" / "prior"
        needs = list(get_stage("train_prior").needs)
        if in_run and not (set(needs) <= set(sheet.columns)
                           and sheet[needs].notna().all(axis=1).any()):
            raise InvalidDataError("--train-prior needs high-resolution labels: no subject "
                                   "has both a 'gt_ed' and a 'gt_es' file", opts.input)
    if prior is not None and "superres" in names and not in_run:
        check_prior(prior)  # given, or trained by an earlier run
    if opts.cluster_model is not None and "cluster" in names:
        from medflow.cluster.card import read_card as check_cluster_model

        check_cluster_model(opts.cluster_model)
    if opts.motion_model is not None and "motion" in names:
        from medflow.motion.modelio import load_model as check_motion_model

        check_motion_model(opts.motion_model)
    return plan.Context(sheet, absolute(opts.outdir), model and absolute(model),
                        image_roles, label_role, opts.device, opts.seed,
                        superres_model=prior and absolute(prior), prior_in_run=in_run,
                        annotate_budget=opts.annotate_budget,
                        cluster_model=opts.cluster_model and absolute(opts.cluster_model),
                        motion_model=opts.motion_model and absolute(opts.motion_model),
                        save_probabilities=opts.save_probabilities)


def run(opts: Options, progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None) -> RunResult:
    """Run the pipeline; ``progress(n)`` is called as tasks finish.

    Before any work: the samplesheet and model are validated, every planned output is
    checked against every input (exit 2), the results folder is created (exit 73 if it
    cannot be) and locked (exit 75 if another run holds it).

    Returns:
        :class:`RunResult` (outcomes per task, status per subject, exit code).
    """
    t0 = time.perf_counter()
    opts = absolute_paths(opts)
    ctx = prepare(opts)
    stages = selected_stages(opts)
    guard.check_plan(ctx, opts.input, stages)
    output_folder(opts.outdir)
    with folder_lock(opts.outdir) as fd, guard.interrupts(Control(pass_fds=(fd,))) as control:
        guard.remove_runner_temporaries(ctx, opts.input, stages)
        result = _run_stages(opts, ctx, stages, control, progress, on_total)
        result.seconds = round(time.perf_counter() - t0, 3)
        result.stopped_by = control.reason
        finish(opts, result, opts.outdir / "pipeline_info", report=not control.reason)
    return result


def _run_stages(opts: Options, ctx: plan.Context, stages: list[Stage], control: Control,
                progress, on_total) -> RunResult:
    info = opts.outdir / "pipeline_info"
    subjects = list(ctx.sheet["subject"])
    result = RunResult(status={s: "ok" for s in subjects})
    if on_total:
        on_total(sum(len(subjects) if s.scope != COHORT else 1 for s in stages))
    write_run_info(info, opts, stages)
    for i, stage in enumerate(stages):
        alive = [s for s in subjects if result.status[s] == "ok"]
        if control.cancelled.is_set():
            _stop_after(stages[i:], alive, result, progress, _why(control))
            break
        if stage.scope != COHORT:
            _subject_stage(ctx, stage, subjects, alive, opts, result, progress, control)
            continue
        task = plan.cohort_task(ctx, stage, alive)
        if isinstance(task, plan.Task):  # a cohort task gets every core
            outcome = execute.run_task(info, task, os.cpu_count() or 1, opts.resume, control)
        else:
            outcome = execute.Outcome(stage.name, stage.name, None, "skipped", error=task)
        result.outcomes.append(outcome)
        progress and progress(1)
        if outcome.status == "cancelled":
            for subject in alive:
                result.status[subject] = f"cancelled in {stage.name}: {_why(control)}"
        if outcome.status in ("failed", "cancelled") and stages[i + 1:]:
            why = (f"the {stage.name} stage failed" if outcome.status == "failed"
                   else _why(control))
            _stop_after(stages[i + 1:], alive, result, progress, why)
            break
    return result


def _subject_stage(ctx: plan.Context, stage: Stage, subjects: list[str], alive: list[str],
                   opts: Options, result: RunResult, progress, control: Control) -> None:
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
        futures = [pool.submit(execute.run_task, info, t, threads, opts.resume, control)
                   for t in tasks.values() if isinstance(t, plan.Task)]
        try:
            for future in as_completed(futures):
                _subject_outcome(future.result(), stage, result, control)
                progress and progress(1)
        except BaseException:  # stop the running tasks before the pool waits for them
            control.cancel("an error in the runner")
            raise


def _why(control: Control) -> str:
    reason = control.reason
    return f"interrupted ({reason})" if reason.startswith("SIG") else reason


def _subject_outcome(outcome: execute.Outcome, stage: Stage, result: RunResult,
                     control: Control) -> None:
    result.outcomes.append(outcome)
    if outcome.status == "failed":
        result.status[outcome.subject] = (f"failed in {stage.name} (exit "
                                          f"{outcome.exit_code}): {outcome.error}")
        if outcome.exit_code == EXIT_CANT_WRITE:  # disk full: every later task would fail
            control.cancel(f"{outcome.task} could not write its outputs (exit 73)")
    elif outcome.status == "cancelled":
        result.status[outcome.subject] = f"cancelled in {stage.name}: {_why(control)}"


def _stop_after(later: list[Stage], alive: list[str], result: RunResult, progress,
                why: str) -> None:
    """A cohort stage failed or the run was cancelled: later stages do not run (segment
    depends on train); every subject still in the run is marked as stopped."""
    for subject in alive:
        result.status[subject] = f"stopped: {why}"
    for stage in later:
        for subject in ([None] if stage.scope == COHORT else alive):
            result.outcomes.append(execute.Outcome(
                f"{stage.name}:{subject or 'cohort'}", stage.name, subject, "skipped",
                error=why))
            progress and progress(1)


def _skip(info: Path, ctx: plan.Context, stage: Stage, subject: str, result: RunResult,
          progress) -> None:
    task = plan.subject_tasks(ctx, stage, [subject]).get(subject)
    if isinstance(task, plan.Task):
        execute.remove_outputs(info, task)
    result.outcomes.append(execute.Outcome(f"{stage.name}:{subject}", stage.name, subject,
                                           "skipped", error="an earlier stage failed"))
    progress and progress(1)


def finish(opts: Options, result: RunResult, info: Path, report: bool = True) -> None:
    """Trace, tables and report, also after failures (they show what failed); no report
    after an interrupt (``medflow report`` renders it later)."""
    from medflow.pipeline.tables import collect

    order = {s.name: i for i, s in enumerate(STAGES)}
    result.outcomes.sort(key=lambda o: (order[o.stage], o.subject or ""))
    execute.write_trace(result.outcomes, info / "trace.parquet")
    collect(opts.outdir, result.status, opts.input)
    if opts.report and report:
        from medflow.report.render import render_report

        render_report(opts.outdir)
