"""`medflow pipeline`: run the whole pipeline over a samplesheet on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from medflow.options import (device_option, jobs_option, seed_option, show_progress,
                             verbosity_options)


def _stages(ctx, param, value: str | None) -> tuple[str, ...]:
    from medflow.pipeline.stages import STAGES

    if not value:
        return ()
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    known = [s.name for s in STAGES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown stage(s) {unknown}; known: {', '.join(known)}")
    return names


@click.command("pipeline")
@click.option("--input", "input_", required=True, type=click.Path(path_type=Path),
              help="Samplesheet CSV (subject, one column per image role).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder: <stage>/<subject>/..., tables, cohort.parquet, report.")
@click.option("--model", type=click.Path(path_type=Path),
              help="Model folder written by 'segment-cascaded train'.")
@click.option("--train", is_flag=True,
              help="Train a small model on the subjects that have labels (seg_sa) first; "
                   "it is written to <outdir>/train/model.")
@click.option("--superres-model", type=click.Path(path_type=Path),
              help="Shape prior written by 'super-resolve train-prior': turns the superres "
                   "stage on.")
@click.option("--train-prior", is_flag=True,
              help="Train the superres shape prior on the subjects that have gt_ed and gt_es "
                   "first (<outdir>/train_prior/prior) and run the superres stage with it.")
@click.option("--motion", is_flag=True,
              help="Run the motion stage: a 3D mesh fitted to each subject's predicted "
                   "short-axis cine segmentation (estimate-motion-mesh fit; mesh phenotypes, "
                   "strain and QC in cohort.parquet). Cardiac cines only; ~1 s CPU a frame.")
@click.option("--motion-model", type=click.Path(path_type=Path),
              help="Model folder written by 'estimate-motion-mesh train': the motion stage "
                   "predicts each subject's motion in one network pass instead of fitting "
                   "it (~2.5 s CPU a subject); turns the motion stage on.")
@click.option("--save-probabilities", is_flag=True,
              help="The segment stage also writes each subject's class probabilities "
                   "(<subject>_<role>_prob.nii.gz, X,Y,Z,T,C float32: about 40 MB for a "
                   "10-frame demo cine, ten times its image) and the uncertainty stage scores their "
                   "calibration: ECE, Brier per region and a reliability diagram in the "
                   "report.")
@click.option("--stages", callback=_stages, metavar="NAME[,NAME...]",
              help="Run only these stages: preprocess, train, segment, uncertainty, "
                   "train_prior, superres, annotate, cluster, motion.")
@click.option("--cluster-model", type=click.Path(path_type=Path),
              help="Model folder written by 'cluster-unsupervised train' for the cluster "
                   "stage [default: a small one trained on the cohort in the stage].")
@click.option("--resume", is_flag=True,
              help="Skip tasks whose inputs (checksums) and parameters are unchanged.")
@click.option("--annotate-budget", default="10%", show_default=True,
              help="annotate stage: subjects to suggest for labelling next (10, or 5%).")
@jobs_option
@device_option
@seed_option
@verbosity_options
def pipeline(input_, outdir, model, train, superres_model, train_prior, motion, stages,
             cluster_model, motion_model, save_probabilities, resume, annotate_budget, jobs,
             device, seed) -> None:
    """Run the pipeline (preprocess, segment, score uncertainty, cluster) over a samplesheet.

    The samplesheet and the model are checked before any work. Per-subject stages run
    in --jobs parallel processes, cohort stages after them. A subject with bad data is
    recorded and the others go on; the exit status (65/66) and the last line say how
    many failed. Writes results/<stage>/..., results/cohort.parquet,
    results/pipeline_info/ (versions, parameters, trace) and results/report/index.html.

    One run at a time per results folder (another exits 75 naming the holder); no output
    may be an input (exit 2, before any work); Ctrl-C or SIGTERM stops the running tasks,
    removes their partial outputs and exits 130 (--resume continues).

    \b
    Example:
      medflow demo-cohort --kind cardiac --subjects 8 --out demo/cohort
      medflow pipeline --input demo/cohort/samplesheet.csv --outdir demo/results --train --jobs 2
      medflow pipeline --input samplesheet.csv --outdir results --model model --resume
      medflow pipeline --input samplesheet.csv --outdir results --model model \
          --save-probabilities
      medflow pipeline --input demo/cohort/samplesheet.csv --outdir demo/results --train \
          --train-prior --jobs 2
      medflow pipeline --input demo/cohort/samplesheet.csv --outdir demo/results --train \
          --motion --stages preprocess,train,segment,motion --jobs 2
    """
    from tqdm import tqdm

    from medflow.errors import EXIT_INTERRUPTED, Interrupted, MedflowError
    from medflow.pipeline.runinfo import summary_line
    from medflow.pipeline.runner import Options, run, selected_stages

    if model is not None and train:
        raise click.UsageError("give --model or --train, not both")
    if superres_model is not None and train_prior:
        raise click.UsageError("give --superres-model or --train-prior, not both")
    opts = Options(input_, outdir, model, train, stages, jobs, resume, device, seed,
                   superres_model=superres_model, train_prior=train_prior,
                   annotate_budget=annotate_budget, cluster_model=cluster_model,
                   motion=motion, motion_model=motion_model,
                   save_probabilities=save_probabilities)
    if model is None and not train and "segment" in [s.name for s in selected_stages(opts)]:
        raise click.UsageError("the segment stage needs --model DIR or --train")
    with tqdm(total=0, desc="pipeline", unit="task", file=sys.stderr,
              disable=not show_progress()) as bar:
        def on_total(n: int) -> None:
            bar.total = n
            bar.refresh()

        try:
            result = run(opts, progress=bar.update, on_total=on_total)
        except Interrupted as exc:  # before the run started its tasks: nothing written
            err = MedflowError(f"interrupted by {exc.name} before any task started")
            err.exit_code = EXIT_INTERRUPTED
            raise err from None
    if result.interrupted:
        stopped = sum(o.status == "cancelled" and o.seconds > 0 for o in result.outcomes)
        queued = sum((o.status == "cancelled" and o.seconds == 0)
                     or (o.status == "skipped" and o.error.startswith("interrupted"))
                     for o in result.outcomes)
        err = MedflowError(f"interrupted by {result.stopped_by}: {stopped} running task(s) "
                           f"stopped and their partial outputs removed, {queued} not run; "
                           "rerun with --resume to continue", outdir)
        err.exit_code = EXIT_INTERRUPTED
        raise err
    for outcome in result.failed_tasks:
        click.echo(f"medflow: error: {outcome.task}: exit {outcome.exit_code}: "
                   f"{outcome.error}", err=True)
    line = summary_line(result, outdir)
    click.echo(f"medflow pipeline: {line}")
    click.echo(f"report: {outdir / 'report' / 'index.html'}")
    if result.exit_code:
        err = MedflowError(f"{len(result.failed_tasks)} task(s) failed; their logs are in "
                           f"{outdir / 'pipeline_info' / 'logs'}")
        err.exit_code = result.exit_code
        raise err
