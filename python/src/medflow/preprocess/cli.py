"""`medflow preprocess`: reorient, resample, crop and normalise one image or a samplesheet."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from medflow.options import (NiftiPath, jobs_option, parse_triplet, show_progress,
                             verbosity_options)

log = logging.getLogger("medflow")
PATH = click.Path(path_type=Path)  # existence is checked by the readers (exit 66, not 2)


def _orientation(ctx, param, value):
    from medflow.preprocess.orient import parse_orientation

    try:
        return parse_orientation(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _triplet(ctx, param, value):
    return None if value is None else parse_triplet(value, param.opts[0], allow_keep=True)


def _crop_size(ctx, param, value):
    size = _triplet(ctx, param, value)
    if size is not None and any(s is not None and s != int(s) for s in size):
        raise click.BadParameter("sizes are whole numbers of voxels", param_hint="--crop-to")
    return size if size is None else tuple(None if s is None else int(s) for s in size)


def _percentiles(ctx, param, value):
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH such as 1,99, got {value!r}") from None
    if not 0 <= lo < hi <= 100:
        raise click.BadParameter(f"need 0 <= LOW < HIGH <= 100, got {value!r}")
    return lo, hi


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def check_usage(ctx: click.Context, p: dict) -> None:
    """Combinations of options that make no sense are usage errors (exit 2), before any work."""
    single, batch = (p["input"], p["output"]), (p["samplesheet"], p["outdir"])
    if any(batch) and any(single):
        raise click.UsageError("use --input/--output or --samplesheet/--outdir, not both")
    if not (all(single) or all(batch)):
        raise click.UsageError("give --input and --output (one image), or --samplesheet and "
                               "--outdir (batch mode)")
    if p["spacing"] is not None and p["reference"] is not None:
        raise click.UsageError("--spacing and --reference are mutually exclusive")
    if p["crop_to"] is not None and p["crop_mask"] is not None:
        raise click.UsageError("--crop-to and --crop-mask are mutually exclusive")
    if _explicit(ctx, "margin") and p["crop_mask"] is None:
        raise click.UsageError("--margin needs --crop-mask")
    if _explicit(ctx, "percentiles") and p["normalise"] != "percentile":
        raise click.UsageError("--percentiles needs --normalise percentile")
    if all(batch):
        for name in ("role", "crop_mask", "series"):
            if _explicit(ctx, name):
                raise click.UsageError(f"--{name.replace('_', '-')} is for one image; in batch "
                                       "mode roles and files come from the samplesheet")
        return
    if p["role"] == "label" and p["normalise"] != "none":
        raise click.UsageError("labels are never normalised: drop --normalise for --role label")
    from medflow.io.outputs import check_outputs
    from medflow.io.sidecar import sidecar_path

    check_outputs([p["output"], sidecar_path(p["output"])],
                  [p["input"], p["reference"], p["crop_mask"]])


def check_batch_outputs(sheet, outdir: Path, reference: Path | None) -> None:
    """No output of batch mode may overwrite a file named in the samplesheet (exit 2)."""
    from medflow.io.outputs import check_outputs
    from medflow.io.samplesheet import is_metadata_column
    from medflow.io.sidecar import sidecar_path
    from medflow.preprocess.run import image_roles, output_name

    inputs = [Path(v) for r in sheet.to_dict("records") for k, v in r.items()
              if k != "subject" and not is_metadata_column(k) and v]
    outputs = [outdir / "preprocess.parquet"]
    for r in sheet.to_dict("records"):
        for role in image_roles(r):
            out = output_name(outdir, r["subject"], role)
            outputs += [out, sidecar_path(out)]
    check_outputs(outputs, [*inputs, reference, sheet.attrs.get("path")])


@click.command("preprocess")
@click.option("--input", "input", type=PATH, help="Image: NIfTI, .mha, .nrrd, DICOM folder/zip.")
@click.option("--output", type=NiftiPath(),
              help="Output .nii.gz (a JSON sidecar is written beside it).")
@click.option("--samplesheet", type=PATH, help="Batch mode: samplesheet CSV (all image roles).")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Batch mode: writes <subject>/<subject>_<role>_preproc.nii.gz and "
                   "preprocess.parquet.")
@click.option("--role", type=click.Choice(["image", "label"]), default="image",
              show_default=True, help="Labels resample by nearest and are never normalised.")
@click.option("--series", default=None, help="DICOM series (description, UID or index).")
@click.option("--orientation", default="RAS", show_default=True, callback=_orientation,
              help="Target axis code, e.g. RAS or LPS (exact permutation/flip, no interpolation).")
@click.option("--spacing", callback=_triplet, metavar="X,Y,Z",
              help="New spacing in mm along the input's voxel axes as stored (followed through "
                   "the reorientation); 'keep' keeps an axis.")
@click.option("--reference", type=PATH,
              help="Resample onto this image's grid, e.g. back to native space (replaces "
                   "--spacing and --orientation).")
@click.option("--interpolation", type=click.Choice(["linear", "bspline"]), default="linear",
              show_default=True, help="For images; labels always use nearest neighbour.")
@click.option("--crop-to", callback=_crop_size, metavar="X,Y,Z",
              help="Crop (or pad with 0) to this many voxels around the centre, along the "
                   "input's voxel axes as stored; 'keep' keeps an axis.")
@click.option("--crop-mask", type=PATH, help="Crop to the bounding box of MASK > 0.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Margin in mm around the --crop-mask bounding box.")
@click.option("--normalise", type=click.Choice(["zscore", "percentile", "none"]), default="none",
              show_default=True, help="Intensity normalisation over all voxels (all frames).")
@click.option("--percentiles", default="1,99", show_default=True, callback=_percentiles,
              metavar="LOW,HIGH", help="For --normalise percentile: clip, then scale to [0,1].")
@jobs_option
@verbosity_options
@click.pass_context
def preprocess(ctx: click.Context, **p) -> None:
    """Reorient, resample, crop and normalise an image or label map, or a samplesheet.

    Steps run in this order: read, reorient, resample, crop, normalise. Resampling keeps
    the field of view: n' = round(n * s / s'), the outer corner stays put, the direction is
    unchanged. --spacing and --crop-to name the input's voxel axes as stored (so
    1.25,1.25,keep keeps a stack's slices wherever reorientation puts them). 4D images are
    resampled frame by frame (time untouched).

    \b
    Example:
      medflow preprocess --input sa.nii.gz --output sa_pre.nii.gz \\
          --spacing 1.25,1.25,keep --normalise zscore
      medflow preprocess --input seg.nii.gz --output seg_native.nii.gz --role label \\
          --reference sa.nii.gz
      medflow preprocess --samplesheet samplesheet.csv --outdir results/preprocess --jobs 4
    """
    from medflow.errors import InvalidDataError
    from medflow.io.samplesheet import load_samplesheet
    from medflow.preprocess import run
    from medflow.preprocess.pipeline import PreprocessConfig

    check_usage(ctx, p)
    config = PreprocessConfig(p["orientation"], p["spacing"], p["interpolation"], p["crop_to"],
                              p["margin"], p["normalise"], p["percentiles"])
    parameters = config.as_dict()  # (not --jobs: results do not depend on it)
    # generic: preprocess needs no particular role, it takes every image column
    sheet = load_samplesheet(p["samplesheet"], kind="generic") if p["samplesheet"] else None
    reference = p["reference"] and run.load_reference(p["reference"])
    if sheet is None:
        row = run.process_file(p["input"], p["output"], config, p["role"], parameters,
                               series=p["series"], reference=reference, mask_path=p["crop_mask"])
        log.info("wrote %s (shape %s)", p["output"], row["shape"])
        return
    check_batch_outputs(sheet, p["outdir"], p["reference"])
    with click.progressbar(length=len(sheet), label="preprocess", hidden=not show_progress(),
                           file=sys.stderr) as bar:
        def on_result(subject, error):
            bar.update(1)
            if error:
                click.echo(f"medflow: error: {error}", err=True)

        table, errors = run.process_samplesheet(sheet, p["outdir"], config, parameters,
                                                reference, p["jobs"], on_result)
    run.write_batch_table(table, p["outdir"] / "preprocess.parquet")
    if errors:
        raise InvalidDataError(f"{len(errors)} of {len(sheet)} subjects failed (see above)",
                               p["samplesheet"])
