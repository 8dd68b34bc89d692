"""`medflow cluster-unsupervised train|assign`: thin commands around medflow.cluster.run.

Torch and the method are imported inside the commands so `medflow --help` stays fast.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from medflow.options import device_option, resolve_device, seed_option, verbosity_options


def input_options(f):
    """--samplesheet CSV | --input-dir DIR, and --truth-column."""
    f = click.option("--truth-column", default=None, metavar="COLUMN",
                     help="Samplesheet column of true categories: scores the clusters "
                          "(purity, NMI, ARI). With several image columns the category "
                          "of an image is '<cell>/<column>'.")(f)
    f = click.option("--input-dir", type=click.Path(path_type=Path),
                     help="Folder to walk: NIfTI/MHA/NRRD files, DICOM folders (grouped "
                          "by series) and zips.")(f)
    f = click.option("--samplesheet", type=click.Path(path_type=Path),
                     help="CSV: subject, then one column per image role; every image "
                          "column is read (label columns seg*/mask*/gt* are not).")(f)
    return f


def training_options(f):
    """Training hyperparameters, defined once for `train` and the fit-and-assign mode."""
    opts = [
        click.option("--k", type=click.IntRange(min=2), default=None,
                     help="Number of clusters [default: chosen by the silhouette, 2..--k-max]."),
        click.option("--k-columns", is_flag=True,
                     help="k = the number of image columns of the samplesheet (each column "
                          "one kind of image: the pipeline's column check)."),
        click.option("--k-max", type=click.IntRange(min=2), default=30, show_default=True),
        click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Contrastive training steps."),
        click.option("--refine-steps", type=click.IntRange(min=0), default=150,
                     show_default=True, help="Self-labelling steps."),
        click.option("--batch", type=click.IntRange(min=4), default=64, show_default=True,
                     help="Anchor slices per step (each with a metadata positive)."),
        click.option("--max-series", type=click.IntRange(min=2), default=1000,
                     show_default=True, help="Series sampled for training (assign reads all)."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


def _entries(samplesheet, input_dir, truth_column):
    from medflow.cluster.catalogue import (entries_from_folder, entries_from_samplesheet,
                                           missing_images, truth_labels)
    from medflow.io.paths import absolute
    from medflow.io.samplesheet import load_samplesheet

    if bool(samplesheet) == bool(input_dir):
        raise click.UsageError("give --samplesheet or --input-dir (one of them)")
    if input_dir:
        if truth_column:
            raise click.UsageError("--truth-column needs --samplesheet")
        return entries_from_folder(absolute(input_dir)), absolute(input_dir)
    # Files are checked below for image columns only: a truth column holds names.
    sheet = load_samplesheet(samplesheet, kind="generic", check_files=False)
    truth = None
    if truth_column:
        if truth_column not in sheet.columns or truth_column == "subject":
            raise click.UsageError(f"--truth-column {truth_column!r} is not a column of "
                                   f"{samplesheet}")
        truth = truth_labels(samplesheet, truth_column)
        sheet = sheet.drop(columns=[truth_column])
    entries = entries_from_samplesheet(sheet, truth)
    missing_images(entries, absolute(samplesheet))
    return entries, absolute(samplesheet)


MODEL_FILES = ("model.safetensors", "model.json")
ASSIGN_FILES = ("clusters.parquet", "clusters.json", "montage.png", "map.png")


def _check_outputs(entries, source, files, model_dir=None) -> None:
    """No file this command writes may be one it reads (exit 2, before any work): the
    images, the samplesheet or walked folder, the model folder."""
    from medflow.io.outputs import check_outputs

    check_outputs(files, [source, model_dir, *(e.path for e in entries)])


def _train(entries, source, out, k, k_columns, k_max, steps, refine_steps, batch, max_series,
           seed, device, params):
    from medflow.cluster.encoder import EncoderConfig, TrainConfig
    from medflow.cluster.run import train_model

    if k_columns:
        if k is not None:
            raise click.UsageError("give --k or --k-columns, not both")
        columns = {e.column for e in entries if e.column}
        if len(columns) < 2:
            raise click.UsageError("--k-columns needs a samplesheet with at least 2 image "
                                   "columns")
        k = len(columns)
    cfg = TrainConfig(steps=steps, refine_steps=refine_steps, batch=batch,
                      max_series=max_series, k_max=k_max)
    return train_model(entries, source, out, EncoderConfig(), cfg, k, seed, device, params)


@click.group("cluster-unsupervised")
@verbosity_options
def cluster_unsupervised() -> None:
    """Categorise unlabelled images (views, sequences, modalities) without labels.

    \b
    Example:
      medflow cluster-unsupervised train --input-dir archive/ --out model
      medflow cluster-unsupervised assign --model model --input-dir archive/ --out clusters
    """


@cluster_unsupervised.command("train")
@input_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (model.safetensors, model.json).")
@training_options
@device_option
@seed_option
@verbosity_options
def train_cmd(samplesheet, input_dir, truth_column, out, k, k_columns, k_max, steps,
              refine_steps, batch, max_series, device, seed) -> None:
    """Train the encoder on the cohort's own slices and cluster them.

    \b
    Example:
      medflow cluster-unsupervised train --samplesheet cohort.csv --out model --seed 0
      medflow cluster-unsupervised train --input-dir dicoms/ --k 6 --out model
    """
    entries, source = _entries(samplesheet, input_dir, truth_column)
    _check_outputs(entries, source, [out / f for f in MODEL_FILES])
    card = _train(entries, source, out, k, k_columns, k_max, steps, refine_steps, batch,
                  max_series, seed, resolve_device(device), click.get_current_context().params)
    t = card["training"]
    click.echo(f"{out}  {t['k']} clusters from {t['series']} images ({t['slices']} slices); "
               f"{t['skipped']} unreadable skipped")


@cluster_unsupervised.command("assign")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Model folder from train. Without it, a model is first trained on the "
                   "same images (train's options) and written to OUT/model.")
@input_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for clusters.parquet (+ .json), montage.png and map.png.")
@training_options
@device_option
@seed_option
@verbosity_options
def assign_cmd(model_dir, samplesheet, input_dir, truth_column, out, k, k_columns, k_max, steps,
               refine_steps, batch, max_series, device, seed) -> None:
    """Assign every image to a cluster; score against known categories; check columns.

    With a samplesheet, an image whose cluster holds under a quarter of its column is
    flagged (e.g. a 4-chamber cine in the sa column) in clusters.parquet.

    \b
    Example:
      medflow cluster-unsupervised assign --model model --samplesheet cohort.csv --out res
      medflow cluster-unsupervised assign --samplesheet cohort.csv --out res --steps 120
    """
    from medflow.cluster.run import assign_images

    params = click.get_current_context().params
    entries, source = _entries(samplesheet, input_dir, truth_column)
    files = [out / f for f in ASSIGN_FILES]
    if model_dir is None:
        files += [out / "model" / f for f in MODEL_FILES]
    _check_outputs(entries, source, files, model_dir)
    dev = resolve_device(device)
    if model_dir is None:
        model_dir = out / "model"
        _train(entries, source, model_dir, k, k_columns, k_max, steps, refine_steps, batch,
               max_series, seed, dev, params)
    elif k is not None:  # (--k-columns is a default, ignored with a model)
        raise click.UsageError("--k chooses the clusters of a new model; a given --model "
                               "keeps its own (train again with --k)")
    facts = assign_images(model_dir, entries, source, out, dev, bool(truth_column), params)
    line = f"{out / 'clusters.parquet'}  {facts['images']} images, " \
           f"{len(facts['cluster_sizes'])} clusters, {facts['skipped']} unreadable skipped"
    if "scores" in facts:
        s = facts["scores"]
        line += f"; purity {s['purity']:.4f}, NMI {s['nmi']:.4f}, ARI {s['ari']:.4f}"
    if "column_check" in facts:
        line += f"; {facts['column_check']['flagged']} image(s) flagged in the wrong column"
    click.echo(line)
