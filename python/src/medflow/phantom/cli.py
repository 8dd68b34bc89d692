"""`medflow demo-cohort`: write a synthetic cohort and its samplesheet."""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np

from medflow.io.atomic import atomic_path
from medflow.io.outputs import output_folder
from medflow.phantom.appearance import CONTRASTS
from medflow.options import jobs_option, parse_triplet, show_progress, verbosity_options

log = logging.getLogger("medflow")

WRITERS = {
    "cardiac": "medflow.phantom.cardiac:write_cardiac_subject",
    "brats": "medflow.phantom.brats:write_brats_subject",
    "microct": "medflow.phantom.microct:write_microct_subject",
}
DEFAULT_SUBJECTS = {"cardiac": 20, "brats": 10, "microct": 1}


def subject_seed(seed: int, index: int) -> int:
    """An independent, reproducible seed per subject (adding subjects never changes others)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_out_folder(out: Path, names: list[str]) -> None:
    """Refuse to write a cohort over files demo-cohort did not write (exit 2): ``out`` must
    be new, empty, or an earlier demo cohort (each subject folder has its truth.json)."""
    from medflow.errors import OverwriteError

    if not out.is_dir():
        return
    theirs = [p for p in [out / "samplesheet.csv", *(out / n for n in names)]
              if p.exists() and not (p.is_dir() and not any(p.iterdir()))
              and not _demo_made(out, p)]
    if theirs:
        raise OverwriteError(f"holds files demo-cohort did not write ({theirs[0].name}); "
                             "choose a new or empty folder", out)


def _demo_made(out: Path, path: Path) -> bool:
    if path.name == "samplesheet.csv":  # ours if every subject it names is ours
        subjects = [line.split(",")[0] for line in path.read_text().splitlines()[1:] if line]
        return bool(subjects) and all((out / s / "truth.json").is_file() for s in subjects
                                      if s and "/" not in s and s not in (".", ".."))
    return (path / "truth.json").is_file()


def _write_one(kind: str, out: Path, subject: str, seed: int, options: dict) -> dict:
    import importlib

    module, attr = WRITERS[kind].split(":")
    writer = getattr(importlib.import_module(module), attr)
    folder = out / subject
    folder.mkdir(parents=True, exist_ok=True)
    roles = writer(folder, subject, seed, **options)
    return {"subject": subject, **{role: f"{subject}/{name}" for role, name in roles.items()}}


@click.command("demo-cohort")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the cohort into (created).")
@click.option("--kind", type=click.Choice(list(WRITERS)), default="cardiac", show_default=True)
@click.option("--subjects", type=click.IntRange(min=1), default=None,
              help="Number of subjects [default: cardiac 20, brats 10, microct 1].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Cohort seed; the same seed gives the same bytes.")
@click.option("--frames", type=click.IntRange(min=2), default=20, show_default=True,
              help="cardiac: cine frames per cycle.")
@click.option("--contrast", type=click.Choice(CONTRASTS), default=None,
              help="cardiac: image appearance; 'gre' gives a domain shift [default: ssfp].")
@click.option("--shape", default=None,
              help="brats/microct: volume shape X,Y,Z (brats 240,240,155 gives 1 mm voxels).")
@click.option("--with-predictions", is_flag=True,
              help="brats: also write predictions with controlled errors and uncertainty maps.")
@jobs_option
@verbosity_options
def demo_cohort(out: Path, kind: str, subjects: int | None, seed: int, frames: int,
                contrast: str | None, shape: str | None, with_predictions: bool,
                jobs: int) -> None:
    """Write a synthetic cohort with known ground truth, and its samplesheet.csv.

    \b
    Example:
      medflow demo-cohort --kind cardiac --subjects 20 --seed 0 --out demo/cardiac
      medflow demo-cohort --kind brats --subjects 5 --out demo/brats
      medflow demo-cohort --kind microct --shape 640,640,640 --out demo/microct
    """
    n = subjects or DEFAULT_SUBJECTS[kind]
    options: dict = {}
    if kind == "cardiac":
        options = {"frames": frames, "contrast": contrast or "ssfp"}
    elif contrast:
        raise click.BadParameter("only the cardiac cohort has contrasts", param_hint="--contrast")
    if shape:
        if kind == "cardiac":
            raise click.BadParameter("the cardiac geometry is fixed by its protocol",
                                     param_hint="--shape")
        dims = parse_triplet(shape, "--shape")
        if any(d != int(d) for d in dims):
            raise click.BadParameter("shape must be whole numbers", param_hint="--shape")
        options["shape"] = tuple(int(d) for d in dims)
    if with_predictions:
        if kind != "brats":
            raise click.BadParameter("only for --kind brats", param_hint="--with-predictions")
        options["with_predictions"] = True
    names = [f"sub-{i:03d}" for i in range(n)]
    check_out_folder(out, names)
    output_folder(out)
    seeds = [subject_seed(seed, i) for i in range(n)]
    args = [(kind, out, s, sd, options) for s, sd in zip(names, seeds)]
    if jobs > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            rows = list(pool.map(_write_one, *zip(*args)))
    else:
        rows = []
        with click.progressbar(args, label=f"{kind} subjects", file=None,
                               hidden=not show_progress()) as bar:
            for a in bar:
                rows.append(_write_one(*a))
    columns = list(dict.fromkeys(c for r in rows for c in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out / "samplesheet.csv") as tmp:
        tmp.write_text(buf.getvalue())
    log.info("wrote %d %s subjects to %s", n, kind, out)
    click.echo(f"{out / 'samplesheet.csv'}")
