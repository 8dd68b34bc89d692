"""File-level steps of ``medflow suggest-annotation simulate``: read and check the cohort,
run the loop (:mod:`medflow.annotate.simulate`), write tables, figure and sidecar."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medflow.annotate.options import FeatureOptions
from medflow.errors import InvalidDataError

log = logging.getLogger("medflow")


def simulate(samplesheet: Path, image_role: str | None, label_role: str | None,
             strategies: tuple[str, ...], rounds: int, start: int, step: int, repeats: int,
             test_fraction: float, train_steps: int, train: dict, metric: str,
             fopts: FeatureOptions, seed: int, outdir: Path, default_roles: dict,
             full_steps: int = 0) -> pd.DataFrame:
    """Check the cohort (every subject labelled), run the loop, write the outputs.

    Returns:
        The summary table (one row per strategy).
    """
    from medflow.annotate.curves import plot, tables
    from medflow.annotate.simulate import SimOptions, run_simulation, split_cohort
    from medflow.annotate.suggest import sheet_files
    from medflow.io.atomic import atomic_outputs
    from medflow.io.outputs import check_outputs, output_folder
    from medflow.io.samplesheet import load_samplesheet
    from medflow.io.sidecar import Timer, make_sidecar, write_json
    from medflow.io.tables import write_table

    timer = Timer()
    kind_roles = None
    if not (image_role and label_role):
        from medflow.io.samplesheet import detect_kind

        kind_roles = default_roles.get(detect_kind(pd.read_csv(samplesheet, nrows=0).columns)
                                       if Path(samplesheet).exists() else "generic")
        if kind_roles is None:
            raise InvalidDataError("give --image-role and --label-role (generic samplesheet)",
                                   samplesheet)
    roles = tuple(r.strip() for r in (image_role or kind_roles[0]).split(","))
    label = label_role or kind_roles[1]
    sheet = load_samplesheet(samplesheet, required_roles=(*roles, label))
    kind = sheet.attrs.get("kind", "generic")
    metric = metric if metric != "auto" else ("wt" if kind == "brats" else "mean")
    train = {**train, "regions": "brats" if kind == "brats" else "none"}
    opts = SimOptions(strategies=strategies, rounds=rounds, start=start, step=step,
                      repeats=repeats, test_fraction=test_fraction, train_steps=train_steps,
                      full_steps=full_steps, train=train, metric=metric, seed=seed, features=fopts)
    outdir = Path(outdir)
    check_outputs([outdir / f"{n}.parquet" for n in ("curves", "full", "picks", "summary")]
                  + [outdir / "curves.png", outdir / "simulate.json", outdir / "work"],
                  [samplesheet, *sheet_files(sheet)])
    output_folder(outdir)
    result = run_simulation(sheet, roles, label, opts, outdir, fopts.device)
    timer.mark("simulate_s")
    subgroups = dict(zip(sheet["subject"], sheet["subgroup"])) if "subgroup" in sheet else {}
    pool_size = {r: len(split_cohort(sheet, test_fraction, seed, r)[0]) for r in range(repeats)}
    out = tables(result, pool_size, subgroups, metric)
    metric_name = {"wt": "whole tumour" if kind == "brats" else "whole foreground",
                   "mean": "mean over labels"}[metric]
    sidecar = make_sidecar("suggest-annotation simulate",
                           {**opts.to_dict(), "full_steps": opts.full_budget(),
                            "image_roles": list(roles), "label_role": label},
                           {"samplesheet": samplesheet}, timer, subjects=len(sheet),
                           pool_subjects=pool_size, metric=metric_name,
                           summary=out["summary"].to_dict("records"))
    with atomic_outputs() as o:
        for name, table in out.items():
            write_table(table, o.path(outdir / f"{name}.parquet"))
        plot(out["curves"], out["full"], o.path(outdir / "curves.png"), metric_name)
        write_json(sidecar, o.path(outdir / "simulate.json"))
    return out["summary"]
