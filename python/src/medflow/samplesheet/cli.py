"""`medflow samplesheet --from-ukbb DIR --out samplesheet.csv`: a samplesheet for a folder
of UK Biobank cardiac zips, so both runners start from the raw download."""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import verbosity_options


@click.command("samplesheet")
@click.option("--from-ukbb", "ukbb_dir", required=True,
              type=click.Path(path_type=Path),
              help="Folder (searched recursively) of UK Biobank zips "
                   "<eid>_20209_<instance>_<array>.zip (short axis) and _20208_ (long axis).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Samplesheet CSV to write; cells inside its folder are written relative.")
@verbosity_options
def samplesheet(ukbb_dir: Path, out: Path) -> None:
    """Write a samplesheet for a folder of UK Biobank cardiac MRI zips.

    One row per participant and visit (subject <eid>_<instance>), with the views
    present: sa (field 20209, CINE_segmented_SAX: the per-slice series b1..bN joined),
    la_2ch, la_3ch, la_4ch (field 20208). Each cell names a series inside a zip as
    <zip>#<series>; series are checked from each zip's manifest (or DICOM headers).
    Participants without a short-axis stack are skipped with a warning.

    \b
    Example:
      medflow samplesheet --from-ukbb downloads/ --out samplesheet.csv
      medflow pipeline --input samplesheet.csv --outdir results --model model
    """
    import csv
    import io

    from medflow.errors import InvalidDataError
    from medflow.io.atomic import atomic_path
    from medflow.io.outputs import check_outputs
    from medflow.io.paths import absolute, existing_folder
    from medflow.io.ukbb import VIEWS, find_zips, samplesheet_rows

    folder, out = absolute(ukbb_dir), absolute(out)
    existing_folder(folder)
    # the zips, not their folder: the samplesheet usually lives beside them
    check_outputs([out], [z for views in find_zips(folder).values() for z in views.values()])
    rows, skipped = samplesheet_rows(folder, out.parent)
    for line in skipped:
        click.echo(f"medflow: warning: skipped {line}", err=True)
    if not rows:
        raise InvalidDataError("no participant with a short-axis series (expected "
                               "<eid>_20209_<instance>_<array>.zip files)", folder)
    columns = ["subject", *(r for r in VIEWS if any(r in row for row in rows))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())
    click.echo(f"{out}  {len(rows)} participant visit(s), columns {', '.join(columns[1:])}")
