"""From the stage list and a validated samplesheet to tasks: `medflow` command lines with
the files they read and write. Nothing here runs anything.

The command lines are the ones a Nextflow module runs: files on the command line, every
other option from the stage's ``args`` (``ext.args``), plus ``--device``/``--seed`` where a
model runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medflow.errors import InvalidDataError
from medflow.io.images import image_format
from medflow.io.paths import inside, source_file
from medflow.io.samplesheet import is_label_role, is_metadata_column
from medflow.pipeline.stages import COHORT, LONG_AXIS_ROLES, Stage, get_stage


@dataclass
class Context:
    """What every stage needs to know about this run."""

    sheet: pd.DataFrame          # validated, absolute paths, one row per subject
    outdir: Path
    model: Path | None           # model folder (given, or the train stage's output)
    image_roles: tuple[str, ...]  # the model's input roles (channels)
    label_role: str | None       # the model's ground-truth role
    device: str = "auto"
    seed: int = 0
    superres_model: Path | None = None  # shape prior (given, or the train_prior output)
    prior_in_run: bool = False  # the train_prior stage of this run writes it
    annotate_budget: str = "10%"  # suggest-annotation --budget
    cluster_model: Path | None = None  # the cluster stage's model; None: trained in the stage
    motion_model: Path | None = None  # the motion stage's network; None: fit per subject
    save_probabilities: bool = False  # segment writes class probabilities, uncertainty reads them


@dataclass
class Task:
    """One stage for one subject (``subject`` None: the cohort task of a cohort stage)."""

    stage: str
    subject: str | None
    commands: list[list[str]]
    inputs: list[Path]
    outputs: list[Path]
    sheet: pd.DataFrame | None = None   # the samplesheet a cohort task reads ...
    sheet_path: Path | None = None      # ... written here before it runs
    params: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.stage}:{self.subject or 'cohort'}"


def stage_dir(ctx: Context, stage: str) -> Path:
    return ctx.outdir / stage


def _file(ctx: Context, stage: Stage, output: str, subject: str | None, role: str) -> Path:
    # Subject IDs and roles come from the samplesheet: the path must stay in its folder.
    name = stage.outputs[output].format(subject=subject, role=role)
    folder = stage_dir(ctx, stage.name)
    return inside(folder, subject, name) if subject else folder / name


def wanted(ctx: Context, stage: Stage, name: str) -> bool:
    """Whether this run has the stage's output or column ``name`` (``Stage.optional``)."""
    option = stage.optional.get(name)
    return option is None or bool(getattr(ctx, option))


def has(row: dict, role: str) -> bool:
    """Whether a samplesheet row names a file for ``role`` (empty cells read as None/NaN)."""
    value = row.get(role)
    return isinstance(value, str) and bool(value)


def image_columns(row: dict) -> dict[str, Path]:
    """The samplesheet columns of a row that name images (other files, e.g. .json, skipped)."""
    roles = {}
    for role, value in row.items():
        if role == "subject" or not has(row, role) or is_metadata_column(role):
            continue
        try:
            image_format(value)
        except InvalidDataError:
            continue
        roles[role] = Path(value)
    return roles


def _model_files(ctx: Context) -> list[Path]:
    # The weights and the card decide the output; optimizer state and curves do not.
    return [ctx.model / "model.safetensors", ctx.model / "model.json"]


def _model_options(ctx: Context) -> list[str]:
    return ["--device", ctx.device, "--seed", str(ctx.seed)]


def preprocess_task(ctx: Context, row: dict) -> Task:
    stage, subject = get_stage("preprocess"), row["subject"]
    commands, inputs, outputs = [], [], []
    for role, src in image_columns(row).items():
        kind = "label" if is_label_role(role) else "image"
        out = _file(ctx, stage, "image", subject, role)
        commands.append([*stage.command, "--input", str(src), "--output", str(out),
                         "--role", kind, *shlex.split(stage.args[kind])])
        inputs.append(source_file(src))  # a zip#series cell: the zip is what changes
        outputs += [out, _file(ctx, stage, "sidecar", subject, role)]
    return Task(stage.name, subject, commands, inputs, outputs)


def segment_task(ctx: Context, row: dict) -> Task:
    stage, subject = get_stage("segment"), row["subject"]
    role = ctx.image_roles[0]  # outputs are named after the first channel
    images = [Path(row[r]) for r in ctx.image_roles]  # as acquired (see stages.py)
    seg, unc = (_file(ctx, stage, k, subject, role) for k in ("seg", "uncertainty"))
    command = [*stage.command, "--model", str(ctx.model)]
    for image in images:
        command += ["--input", str(image)]
    command += ["--output", str(seg), "--uncertainty", str(unc)]
    outputs = [seg, unc, _file(ctx, stage, "sidecar", subject, role)]
    if wanted(ctx, stage, "prob"):
        outputs.append(_file(ctx, stage, "prob", subject, role))
        command += ["--probabilities", str(outputs[-1])]
    command += [*shlex.split(stage.args["image"]), *_model_options(ctx)]
    return Task(stage.name, subject, [command], [source_file(i) for i in images] +
                _model_files(ctx), outputs)


def cohort_sheet(ctx: Context, stage: Stage, subjects: list[str]) -> pd.DataFrame:
    """The samplesheet of a cohort stage: one row per subject, columns from ``stage.columns``."""
    roles = {"image": ctx.image_roles[0], "label": ctx.label_role}
    sheet = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    columns = {c: s for c, s in stage.columns.items() if wanted(ctx, stage, c)}
    rows = []
    for subject in subjects:
        row = {"subject": subject}
        for column, source in columns.items():
            src_stage, output = source.split(":")
            if src_stage == "samplesheet":  # output is "image" or "label": the model's role
                path = sheet[subject][roles[output]]
            else:
                path = _file(ctx, get_stage(src_stage), output, subject, ctx.image_roles[0])
            row[column.format(**roles)] = str(path)
        rows.append(row)
    return pd.DataFrame(rows, columns=["subject", *(c.format(**roles) for c in columns)])


def train_task(ctx: Context, subjects: list[str]) -> Task:
    stage = get_stage("train")
    sheet = cohort_sheet(ctx, stage, subjects)
    sheet_path = stage_dir(ctx, stage.name) / "samplesheet.csv"
    command = [*stage.command, "--samplesheet", str(sheet_path), "--out", str(ctx.model),
               "--image-role", ",".join(ctx.image_roles), "--label-role", ctx.label_role,
               *shlex.split(stage.args["image"]), *_model_options(ctx)]
    outputs = [stage_dir(ctx, stage.name) / f for f in stage.outputs.values()]
    return Task(stage.name, None, [command], _sheet_files(sheet), outputs, sheet, sheet_path)


def uncertainty_task(ctx: Context, subjects: list[str]) -> Task:
    stage = get_stage("uncertainty")
    sheet = cohort_sheet(ctx, stage, subjects)
    folder = stage_dir(ctx, stage.name)
    command = [*stage.command, "--samplesheet", str(folder / "samplesheet.csv"),
               "--outdir", str(folder), *shlex.split(stage.args["image"])]
    outputs = [folder / f for k, f in stage.outputs.items() if wanted(ctx, stage, k)]
    return Task(stage.name, None, [command], _sheet_files(sheet), outputs, sheet,
                folder / "samplesheet.csv")


def train_prior_task(ctx: Context, subjects: list[str]) -> Task | str:
    """The shape prior of the superres stage, from the subjects that have every
    high-resolution label map the stage needs (``gt_ed``, ``gt_es``)."""
    stage = get_stage("train_prior")
    rows = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    chosen = [s for s in subjects if all(has(rows[s], r) for r in stage.needs)]
    if not chosen:
        return f"no subject has {' and '.join(stage.needs)}"
    sheet = pd.DataFrame([{"subject": s, **{r: rows[s][r] for r in stage.needs}}
                          for s in chosen], columns=["subject", *stage.needs])
    folder = stage_dir(ctx, stage.name)
    command = [*stage.command, "--samplesheet", str(folder / "samplesheet.csv"),
               "--label-role", ",".join(stage.needs), "--out", str(folder / "prior"),
               *shlex.split(stage.args["image"]), *_model_options(ctx)]
    outputs = [folder / f for f in stage.outputs.values()]
    return Task(stage.name, None, [command], _sheet_files(sheet), outputs, sheet,
                folder / "samplesheet.csv")


def _long_axis_views(row: dict) -> dict[str, Path]:
    """The long-axis segmentations a samplesheet row names (``seg_la_2ch``, ``seg_la_4ch``:
    the pipeline segments no long-axis view yet)."""
    return {role: Path(row[role]) for role in LONG_AXIS_ROLES if has(row, role)}


def _long_axis_flags(views: dict[str, Path]) -> list[str]:
    """``--la-2ch F --la-4ch F``: the flag of each view is named by its column."""
    return [w for role, path in views.items()
            for w in (f"--{role.removeprefix('seg_').replace('_', '-')}", str(path))]


def superres_task(ctx: Context, row: dict) -> Task | str:
    """ED and ES of the subject's segmentation to 1.25 mm shapes with the shape prior; with
    the row's long-axis segmentations the shifts are absolute and refined on them."""
    stage, subject = get_stage("superres"), row["subject"]
    role = ctx.image_roles[0]
    prior = ctx.superres_model
    if prior is None or not (ctx.prior_in_run or (prior / "model.json").exists()):
        return "no shape prior (give --superres-model, or --train with gt_ed and gt_es)"
    seg = _file(ctx, get_stage("segment"), "seg", subject, role)
    outputs = [_file(ctx, stage, name, subject, role) for name in stage.outputs]
    template = str(_file(ctx, stage, "hr_ed", subject, role)).replace("_hr_ed.", "_hr_{frame}.")
    views = _long_axis_views(row)
    command = [*stage.command, "--model", str(prior), "--input", str(seg),
               *_long_axis_flags(views), "--output", template,
               *shlex.split(stage.args["image"]), *_model_options(ctx)]
    return Task(stage.name, subject, [command],
                [seg, *map(source_file, views.values()), prior / "model.safetensors",
                 prior / "model.json"], outputs)
def annotate_task(ctx: Context, subjects: list[str]) -> Task:
    """The next subjects to annotate: every subject's image(s) and, where the samplesheet
    has one, its label; an empty label cell puts the subject in the pool."""
    stage = get_stage("annotate")
    rows = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    label = ctx.label_role
    columns = ["subject", *ctx.image_roles, *([label] if label else [])]
    sheet = pd.DataFrame([{c: (s if c == "subject" else rows[s].get(c) if has(rows[s], c)
                               else None) for c in columns} for s in subjects], columns=columns)
    folder = stage_dir(ctx, stage.name)
    command = [*stage.command, "--samplesheet", str(folder / "samplesheet.csv"),
               "--model", str(ctx.model), "--image-role", ",".join(ctx.image_roles),
               *(["--label-role", label] if label else []),
               "--out", str(folder / stage.outputs["suggestions"]),
               *shlex.split(stage.args["image"]), "--budget", ctx.annotate_budget,
               *_model_options(ctx)]
    files = sorted({Path(v) for c in columns[1:] for v in sheet[c] if has({"v": v}, "v")})
    return Task(stage.name, None, [command], files + _model_files(ctx),
                [folder / f for f in stage.outputs.values()], sheet, folder / "samplesheet.csv")


def _sheet_files(sheet: pd.DataFrame) -> list[Path]:
    files = {source_file(v) for c in sheet.columns if c != "subject" for v in sheet[c]}
    return sorted(files)


def subject_tasks(ctx: Context, stage: Stage, subjects: list[str]) -> dict[str, Task | str]:
    """Per subject: its task, or why the stage does not apply to it (a one-line reason)."""
    rows = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    out: dict[str, Task | str] = {}
    for subject in subjects:
        row = rows[subject]
        if stage.name == "preprocess":
            out[subject] = preprocess_task(ctx, row) if image_columns(row) else "no images"
        elif stage.name == "segment":
            missing = [r for r in ctx.image_roles if not has(row, r)]
            out[subject] = f"no {', '.join(missing)}" if missing else segment_task(ctx, row)
        elif stage.name == "superres":
            out[subject] = superres_task(ctx, row)
        elif stage.name == "motion":
            out[subject] = motion_task(ctx, row)
        else:
            raise ValueError(f"stage {stage.name} has no per-subject tasks")
    return out


def cohort_task(ctx: Context, stage: Stage, subjects: list[str]) -> Task | str:
    """The cohort task over ``subjects`` that have the stage's needs; or why none runs."""
    assert stage.scope == COHORT
    if stage.name == "train_prior":
        return train_prior_task(ctx, subjects)
    rows = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    if "label" in stage.needs:
        if ctx.label_role is None:
            return "the model names no label role"
        subjects = [s for s in subjects if has(rows[s], ctx.label_role)]
    if not subjects:
        return f"no subject has {ctx.label_role}" if stage.needs else "no subjects"
    if "model" in stage.inputs and ctx.model is None:
        return "no model (--model or --train)"
    make = {"train": train_task, "uncertainty": uncertainty_task,
            "annotate": annotate_task, "cluster": cluster_task}[stage.name]
    return make(ctx, subjects)


def cluster_task(ctx: Context, subjects: list[str]) -> Task | str:
    """The column check: every subject's preprocessed images, one column per image role
    (label maps are not read); the model is --cluster-model or trained in the task."""
    stage, prep = get_stage("cluster"), get_stage("preprocess")
    rows = {r["subject"]: r for r in ctx.sheet.to_dict("records")}
    table, files = [], []
    for subject in subjects:
        row = {"subject": subject}
        for role in image_columns(rows[subject]):
            if not is_label_role(role):
                row[role] = str(_file(ctx, prep, "image", subject, role))
                files.append(Path(row[role]))
        table.append(row)
    columns = list(dict.fromkeys(c for r in table for c in r if c != "subject"))
    if len(columns) < 2:
        return "fewer than two image columns to compare"
    sheet = pd.DataFrame(table, columns=["subject", *columns])
    folder = stage_dir(ctx, stage.name)
    command = [*stage.command, "--samplesheet", str(folder / "samplesheet.csv"),
               "--out", str(folder), *shlex.split(stage.args["image"]),
               "--device", "cpu", "--seed", str(ctx.seed)]  # a small model: CPU stage
    if ctx.cluster_model is not None:
        command += ["--model", str(ctx.cluster_model)]
        files += [ctx.cluster_model / "model.safetensors", ctx.cluster_model / "model.json"]
    outputs = [folder / f for f in stage.outputs.values()]
    return Task(stage.name, None, [command], sorted(files), outputs, sheet,
                folder / "samplesheet.csv")


def motion_task(ctx: Context, row: dict) -> Task | str:
    """The mesh fitted to the subject's predicted short-axis segmentation (the segment
    stage's output) and the long-axis segmentations its samplesheet row names
    (``seg_la_2ch``, ``seg_la_4ch``: the pipeline segments no long-axis view yet).

    A subject without a long-axis segmentation is skipped with the reason: fitted to the
    short axis alone the mesh cannot see the base descend, and on the demo cohort's true
    labels it measures LVEF 6.9 points low on average where voxel counting is 2.3 off
    (benchmarks/motion/README.md)."""
    stage, subject = get_stage("motion"), row["subject"]
    views = _long_axis_views(row)
    if not views:
        return (f"no long-axis segmentation ({' or '.join(LONG_AXIS_ROLES)}): a mesh on "
                "the short axis alone misses the base")
    role = ctx.image_roles[0]
    seg = _file(ctx, get_stage("segment"), "seg", subject, role)
    folder = inside(stage_dir(ctx, stage.name), subject)
    command = [*stage.command, "--sa", str(seg)]
    files = [seg, *map(source_file, views.values())]
    if ctx.motion_model is not None:  # the trained network instead of the per-subject fit
        command = [stage.command[0], "predict", "--model", str(ctx.motion_model),
                   "--sa", str(seg)]
        files += [ctx.motion_model / "model.safetensors", ctx.motion_model / "model.json"]
    command += [*_long_axis_flags(views), "--out", str(folder), "--prefix", f"{subject}_{role}",
                *shlex.split(stage.args.get("image", "")),
                "--device", "cpu", "--seed", str(ctx.seed)]  # the fit runs on CPU
    # The meshes/ folder is not listed: --resume compares files (it comes with the rest).
    outputs = [_file(ctx, stage, k, subject, role) for k in stage.outputs if k != "meshes"]
    return Task(stage.name, subject, [command], files, outputs)
