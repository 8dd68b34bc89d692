"""`medflow report`: the HTML report of a results folder."""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import verbosity_options


@click.command("report")
@click.option("--results", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder written by 'medflow pipeline' (or the Nextflow workflow).")
@verbosity_options
def report(results: Path) -> None:
    """Write RESULTS/report/index.html: tables, distributions and segmentation overlays.

    Without results/cohort.parquet (e.g. after a Nextflow run) the stage tables and the
    cohort table are gathered from the subjects' folders first.

    \b
    Example:
      medflow pipeline --input samplesheet.csv --outdir results --model model
      medflow report --results results
    """
    from medflow.errors import MissingInputError
    from medflow.report.render import render_report

    if not results.is_dir():
        raise MissingInputError("results folder not found", results)
    click.echo(str(render_report(results)))
