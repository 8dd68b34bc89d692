"""`medflow estimate-motion-mesh fit | train | predict`: thin commands over the method
(`fit` needs no model folder; `train` makes one, `predict` uses it).

Torch is imported inside the commands so `medflow --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import (device_option, jobs_option, resolve_device, seed_option,
                             verbosity_options)

ROLE_OPTIONS = {"sa": "seg_sa", "la_2ch": "seg_la_2ch", "la_4ch": "seg_la_4ch"}


def _views(f):
    f = click.option("--la-4ch", type=click.Path(path_type=Path),
                     help="4-chamber long-axis cine segmentation.")(f)
    f = click.option("--la-2ch", type=click.Path(path_type=Path),
                     help="2-chamber long-axis cine segmentation.")(f)
    f = click.option("--sa", type=click.Path(path_type=Path),
                     help="Short-axis cine segmentation (X, Y, Z, T; 1 LV, 2 myo, 3 RV).")(f)
    return f


def _ed_shape(f):
    return click.option(
        "--ed-shape", type=click.Path(path_type=Path), metavar="HR_ED.nii.gz",
        help="High-resolution, motion-corrected ED label map (super-resolve predict's "
             "hr_ed: 3D, voxels <= 3 mm, labels 1 LV, 2 myo, 3 RV, world space): its "
             "planes every 5 mm along each axis join the ED fit, unshifted, weighing "
             "together 0.3 times the acquired planes; motion tracking reads the acquired "
             "planes alone. One subject only.")(f)


def _batch(f):
    f = click.option("--role", "roles", multiple=True, metavar="VIEW=COLUMN",
                     help="Batch mode: samplesheet column of a view (default sa=seg_sa, "
                          "la_2ch=seg_la_2ch, la_4ch=seg_la_4ch).")(f)
    f = click.option("--outdir", type=click.Path(file_okay=False, path_type=Path),
                     help="Batch mode: results folder (<subject>/<subject>_...).")(f)
    f = click.option("--samplesheet", type=click.Path(path_type=Path),
                     help="Batch mode: every subject of this samplesheet.")(f)
    return f


def _check_mode(sa, out, samplesheet, outdir, ed_shape=None) -> bool:
    """True for one subject, False for batch mode; usage errors otherwise."""
    single = bool(sa or out)
    if single == bool(samplesheet or outdir):
        raise click.UsageError("give either --sa/--out or --samplesheet/--outdir")
    if ed_shape is not None and not single:
        raise click.UsageError("--ed-shape is one subject's map: give it with --sa/--out")
    if single and not (sa and out):
        raise click.UsageError("--sa and --out go together")
    if not single and not (samplesheet and outdir):
        raise click.UsageError("--samplesheet and --outdir go together")
    return single


def _one_name(ctx, param, value: str | None) -> str | None:
    """--prefix is part of a file name: the samplesheet's subject rule (no folders)."""
    import re

    if value is not None and (not re.fullmatch(r"[A-Za-z0-9_.-]+", value)
                              or value in (".", "..")):
        raise click.BadParameter(f"{value!r} is not one file-name part (letters, digits, "
                                 "_ . - only, not '.' or '..')")
    return value


def _roles(pairs: tuple[str, ...]) -> dict[str, str]:
    roles = dict(ROLE_OPTIONS)
    for pair in pairs:
        view, sep, column = pair.partition("=")
        if not sep or view not in ROLE_OPTIONS or not column:
            raise click.BadParameter(f"expected VIEW=COLUMN with VIEW in "
                                     f"{', '.join(ROLE_OPTIONS)}, got {pair!r}",
                                     param_hint="--role")
        roles[view] = column
    return roles


def _threads(ctx, param, value: int | None) -> int:
    """--threads, defaulting to OMP_NUM_THREADS when set (as the pipeline sets it per
    task), else 2."""
    import os

    if value is not None:
        return value
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 2


def _outputs(f):
    """--out and --prefix of one subject's results (fit and predict write the same files)."""
    f = click.option("--prefix", default=None, callback=_one_name,
                     help="Prefix of the output names (e.g. the subject).")(f)
    f = click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Output folder (meshes/, phenotypes.parquet, frames.parquet, "
                          "...).")(f)
    return f


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, callback=_threads,
    help="CPU threads [default: OMP_NUM_THREADS when set (as the pipeline sets it per "
         "task), else 2].")


@click.group("estimate-motion-mesh")
@verbosity_options
def estimate_motion_mesh() -> None:
    """3D heart meshes over the cardiac cycle from short- and long-axis cine
    segmentations: volumes, LVEF, LV mass, RV function, strain, wall thickness and QC.

    \b
    Example:
      medflow estimate-motion-mesh fit --sa demo/cohort/sub-000/seg_sa.nii.gz \\
          --la-2ch demo/cohort/sub-000/seg_la_2ch.nii.gz \\
          --la-4ch demo/cohort/sub-000/seg_la_4ch.nii.gz --out motion/sub-000
    """


@estimate_motion_mesh.command("fit")
@_views
@_ed_shape
@_outputs
@_batch
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="B-spline motion evaluations per frame [default: 15 for 50 frames, up "
                   "to 30 for short cines].")
@jobs_option
@threads_option
@device_option
@seed_option
@verbosity_options
def fit_cmd(sa, la_2ch, la_4ch, ed_shape, out, prefix, samplesheet, outdir, roles,
            iterations, jobs, threads, device, seed) -> None:
    """Fit the template mesh and its motion to one subject's segmentations (no training;
    the reference and the fallback of `predict`).

    \b
    Example:
      medflow estimate-motion-mesh fit --sa demo/cohort/sub-000/seg_sa.nii.gz \\
          --la-2ch demo/cohort/sub-000/seg_la_2ch.nii.gz \\
          --la-4ch demo/cohort/sub-000/seg_la_4ch.nii.gz \\
          --out motion/sub-000
      medflow estimate-motion-mesh fit --sa demo/cohort/sub-000/seg_sa.nii.gz \\
          --la-2ch demo/cohort/sub-000/seg_la_2ch.nii.gz \\
          --la-4ch demo/cohort/sub-000/seg_la_4ch.nii.gz \\
          --ed-shape results/superres/sub-000/sub-000_sa_hr_ed.nii.gz --out motion/sub-000
      medflow estimate-motion-mesh fit --samplesheet demo/cohort/samplesheet.csv \\
          --outdir results/motion --jobs 2
    """
    from medflow.motion.fit import FitOptions
    from medflow.motion.workflow import fit_batch, fit_files

    single = _check_mode(sa, out, samplesheet, outdir, ed_shape)
    resolve_device(device)  # the per-subject fit runs on CPU; checked for the contract
    opts = FitOptions() if iterations is None else FitOptions(frame_iterations=iterations)
    if single:
        _echo_row(out, fit_files(sa, la_2ch, la_4ch, out, prefix, opts, seed, threads,
                                 ed_shape))
        return
    _report(fit_batch(samplesheet, outdir, _roles(roles), opts, seed, jobs), outdir,
            samplesheet)


def _report(result: tuple[int, list[str]], outdir: Path, samplesheet: Path) -> None:
    done, failed = result
    for line in failed:
        click.echo(f"medflow: error: {line}", err=True)
    click.echo(f"{outdir}  {done} subject(s) done, {len(failed)} failed")
    if failed:
        from medflow.errors import InvalidDataError

        raise InvalidDataError(f"{len(failed)} subject(s) failed", samplesheet)


def _echo_row(out: Path, row: dict) -> None:
    click.echo(f"{out}  LVEF {row['lvef_pct']:.1f} %  LVEDV {row['lvedv_ml']:.1f} mL  "
               f"QC {'pass' if row['qc_pass'] else 'fail: ' + row['qc_reasons']}")


@estimate_motion_mesh.command("train")
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="Training subjects: one row each, with the views' segmentation columns.")
@click.option("--role", "roles", multiple=True, metavar="VIEW=COLUMN",
              help="Samplesheet column of a view (default sa=seg_sa, la_2ch=seg_la_2ch, "
                   "la_4ch=seg_la_4ch).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (model.safetensors, model.json).")
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True,
              help="Passes over the training subjects (one step per subject).")
@click.option("--teacher-weight", type=click.FloatRange(min=0.0), default=1.0,
              show_default=True,
              help="Weight of the pull towards fit's meshes (mm^2); 0 trains on the slicer "
                   "loss alone.")
@threads_option
@device_option
@seed_option
@verbosity_options
def train_cmd(samplesheet, roles, out, epochs, teacher_weight, threads, device, seed) -> None:
    """Train the motion network on a cohort's segmentations, end to end through the
    slicer (each subject is first fitted with `fit`, whose meshes guide the training).

    \b
    Example:
      medflow estimate-motion-mesh train --samplesheet demo/cohort/samplesheet.csv \\
          --out motion_model
    """
    from medflow.io.outputs import output_folder, remove_new_folders
    from medflow.motion.workflow import train_files

    resolve_device(device)  # training runs on CPU (the slicer's sparse cuts); checked
    created: list[Path] = []
    output_folder(out, created)
    try:
        card = train_files(samplesheet, _roles(roles), out, epochs, seed,
                           threads, teacher_weight)
    except BaseException:
        remove_new_folders(created)
        raise
    last = card["history"][-1]
    click.echo(f"{out}  {len(card['subjects'])} subject(s), {epochs} epochs, contour "
               f"distance {last['data_mm2']:.2f} mm^2")


@estimate_motion_mesh.command("predict")
@click.option("--model", required=True, type=click.Path(path_type=Path),
              help="Model folder from `estimate-motion-mesh train`.")
@_views
@_ed_shape
@_outputs
@_batch
@jobs_option
@threads_option
@device_option
@seed_option
@verbosity_options
def predict_cmd(model, sa, la_2ch, la_4ch, ed_shape, out, prefix, samplesheet, outdir,
                roles, jobs, threads, device, seed) -> None:
    """Predict one subject's mesh motion in one network pass (the ED shape is fitted as
    `fit` fits it); the outputs are `fit`'s.

    \b
    Example:
      medflow estimate-motion-mesh predict --model motion_model \\
          --sa demo/cohort/sub-000/seg_sa.nii.gz \\
          --la-2ch demo/cohort/sub-000/seg_la_2ch.nii.gz \\
          --la-4ch demo/cohort/sub-000/seg_la_4ch.nii.gz --out motion/sub-000
      medflow estimate-motion-mesh predict --model motion_model \\
          --samplesheet demo/cohort/samplesheet.csv --outdir results/motion --jobs 2
    """
    from medflow.motion.fit import FitOptions
    from medflow.motion.workflow import fit_batch, predict_files

    single = _check_mode(sa, out, samplesheet, outdir, ed_shape)
    resolve_device(device)  # the network is small; the slicer and ED fit run on CPU
    if single:
        _echo_row(out, predict_files(model, sa, la_2ch, la_4ch, out, prefix, seed,
                                     threads, ed_shape))
        return
    _report(fit_batch(samplesheet, outdir, _roles(roles), FitOptions(), seed, jobs, model),
            outdir, samplesheet)
