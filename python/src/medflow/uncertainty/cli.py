"""`medflow score-uncertainty`: QU-BraTS uncertainty scores and calibration, case or cohort."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pandas as pd

from medflow.options import jobs_option, verbosity_options
from medflow.uncertainty.regions import PROB_CHANNELS

log = logging.getLogger("medflow")
TOOL = "score-uncertainty"
_path = click.Path(dir_okay=False, path_type=Path)


def _regions(spec: str, et_label: int | None):
    from medflow.uncertainty.regions import parse_regions

    try:
        return parse_regions(spec, et_label)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--et-label") from None


def _case(truth, prediction, mask, uncertainty, per_region, probabilities, subject, regions):
    """CaseFiles for single-case mode from the options (usage errors exit 2)."""
    from medflow.uncertainty.inputs import CaseFiles

    if not (truth and prediction and mask):
        raise click.UsageError("give --truth, --prediction and --mask (or --samplesheet)")
    names = {r.name.lower(): r.name for r in regions}
    unc: dict[str, Path] = {}
    for key, p in per_region.items():
        if p is not None:
            if key not in names:
                raise click.BadParameter(f"no region {key.upper()} in --regions",
                                         param_hint=f"--uncertainty-{key}")
            unc[names[key]] = p
    for item in uncertainty:
        name, sep, file = item.partition("=")
        if sep and name.lower() in names:
            unc[names[name.lower()]] = Path(file)
        elif len(uncertainty) == 1 and not unc:
            unc["*"] = Path(item)
        else:
            raise click.BadParameter(f"{item!r}: expected REGION=FILE with REGION in "
                                     f"{list(names.values())}, or one 4D FILE",
                                     param_hint="--uncertainty")
    if "*" not in unc and set(unc) != set(names.values()):
        missing = sorted(set(names.values()) - set(unc))
        raise click.UsageError(f"no uncertainty map for region(s) {missing}")
    return CaseFiles(subject or prediction.name.split(".")[0], truth, prediction, mask, unc,
                     probabilities)


def _sheet_cases(path: Path, regions, calibration_only: bool = False):
    """CaseFiles of every row of a samplesheet (validated before any work)."""
    from medflow.io.samplesheet import load_samplesheet
    from medflow.uncertainty.inputs import cases_from_samplesheet

    sheet = load_samplesheet(path)
    sheet.attrs["path"] = path
    return cases_from_samplesheet(sheet, regions, calibration_only=calibration_only)


def _outputs(table: Path, plot: Path | None, summary_dir: Path | None) -> list[Path]:
    """Every file :func:`_write` may write (for the overwrite check)."""
    from medflow.io.sidecar import sidecar_path

    files = [table, sidecar_path(table)]
    if summary_dir:
        files += [summary_dir / "summary.parquet", summary_dir / "curves.parquet"]
    if plot:
        files += [plot, plot.with_name(plot.stem + "_reliability.png")]
    return files


def _write(results, table: Path, sidecar: dict, plot: Path | None, summary_dir: Path | None):
    """Write the table, its sidecar, plots and (cohort) summaries, all atomically."""
    from medflow.io.atomic import atomic_outputs
    from medflow.io.sidecar import sidecar_path, write_json
    from medflow.io.tables import write_table
    from medflow.uncertainty import cohort, plots

    rows = pd.DataFrame([r.row for r in results])
    single = len(results) == 1 and not summary_dir
    curves = results[0].curves if single else cohort.mean_curves(results)
    bins = cohort.pooled_bins(results)
    with atomic_outputs() as out:
        write_table(rows, out.path(table))
        write_json(sidecar, out.path(sidecar_path(table)))
        if summary_dir:
            write_table(cohort.summarise(rows), out.path(summary_dir / "summary.parquet"))
            write_table(cohort.curves_table(results), out.path(summary_dir / "curves.parquet"))
        if plot:
            plots.plot_curves(curves, out.path(plot))
            if bins:
                reliability = plot.with_name(plot.stem + "_reliability.png")
                plots.plot_reliability(bins, out.path(reliability))
    return rows


@click.command(TOOL)
@click.option("--truth", type=_path, help="Ground-truth label map (single case).")
@click.option("--prediction", type=_path, help="Predicted label map.")
@click.option("--mask", type=_path, help="Brain mask, or any image whose voxels > 0 are brain "
              "(e.g. the skull-stripped t1).")
@click.option("--uncertainty", multiple=True, metavar="[REGION=]FILE",
              help="Uncertainty map (0-100) per region as REGION=FILE (repeat), or one 4D "
              "FILE with a channel per region in --regions order.")
@click.option("--uncertainty-wt", type=_path, help="BraTS whole-tumour uncertainty map.")
@click.option("--uncertainty-tc", type=_path, help="BraTS tumour-core uncertainty map.")
@click.option("--uncertainty-et", type=_path, help="BraTS enhancing-tumour uncertainty map.")
@click.option("--probabilities", type=_path, help="Probabilities for calibration (ECE, MCE, "
              "Brier, NLL): the truth's grid (3D, or a 4D cine) plus a channel axis last, "
              "as --prob-channels says.")
@click.option("--prob-channels", type=click.Choice(PROB_CHANNELS), default="regions",
              show_default=True, help="The probabilities' channels: one per region in "
              "--regions order, or one per class (background, then the regions' labels "
              "ascending), as 'segment-cascaded predict --probabilities' writes them; a "
              "region's probability is then the sum of its labels' channels.")
@click.option("--out", type=_path, help="Parquet table to write (single case).")
@click.option("--plot", type=_path, help="PNG of the curves (single case); with "
              "--probabilities a reliability diagram <name>_reliability.png goes beside it.")
@click.option("--subject", help="Subject ID for the single-case row [default: from --prediction].")
@click.option("--samplesheet", type=_path, help="Cohort mode: CSV with subject, seg, pred, "
              "mask (or t1), unc_<region> or unc, and optional prob.")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Cohort mode: folder for score-uncertainty.parquet, summary.parquet, "
              "curves.parquet and plots.")
@click.option("--regions", default="brats", show_default=True,
              help="brats (WT/TC/ET), cardiac (LV/Myo/RV) or a JSON file "
              "{\"WT\": [1, 2, 4], ...}.")
@click.option("--et-label", type=click.IntRange(min=1), default=None,
              help="BraTS enhancing-tumour label: 4 (up to 2021, default) or 3 (2023).")
@click.option("--num-points", type=click.IntRange(min=1), default=40, show_default=True,
              help="Threshold intervals: 40 gives tau = 100, 97.5, ..., 0.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True,
              help="Equal-width bins for ECE/MCE and reliability diagrams.")
@click.option("--rescale", is_flag=False, flag_value="auto", default=None, metavar="[auto|LO,HI]",
              help="Map uncertainty on another scale into [0, 100]: alone or 'auto' "
              "([0, 1] maps x100, others min-max), or LO,HI for a linear map from [LO, HI].")
@click.option("--fit-temperature", is_flag=True, help="Fit one temperature per region "
              "(NLL, scipy) and add calibrated columns (<region>_ece_ts, ...).")
@click.option("--validation", type=_path, help="Samplesheet (seg, mask, prob) of the "
              "validation cohort for --fit-temperature [default: the scored cases].")
@jobs_option
@verbosity_options
def score_uncertainty(truth, prediction, mask, uncertainty, uncertainty_wt, uncertainty_tc,
                      uncertainty_et, probabilities, prob_channels, out, plot, subject,
                      samplesheet, outdir,
                      regions, et_label, num_points, bins, rescale, fit_temperature,
                      validation, jobs) -> None:
    """Score uncertainty maps with the QU-BraTS metric; calibration of probability maps.

    Per region: Dice, FTP and FTN curves over thresholds 100..0, their AUCs and the score
    (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3; 'score' is the mean over regions.

    \b
    Example:
      medflow score-uncertainty --truth seg.nii.gz --prediction pred.nii.gz \\
        --mask mask.nii.gz --uncertainty-wt unc_wt.nii.gz --uncertainty-tc unc_tc.nii.gz \\
        --uncertainty-et unc_et.nii.gz --probabilities prob.nii.gz --out scores.parquet
      medflow demo-cohort --kind brats --with-predictions --subjects 3 --out demo
      medflow score-uncertainty --samplesheet demo/samplesheet.csv --outdir results
    """
    from medflow.io.outputs import check_outputs
    from medflow.io.sidecar import Timer, make_sidecar
    from medflow.uncertainty import cohort, inputs

    timer = Timer()
    regs = _regions(regions, et_label)
    try:
        rescale = inputs.parse_rescale(rescale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rescale") from None
    if samplesheet:
        if not outdir or truth or out or plot:
            raise click.UsageError("cohort mode takes --samplesheet with --outdir only")
        cases = _sheet_cases(samplesheet, regs)
        table, plot, where = outdir / f"{TOOL}.parquet", outdir / "curves.png", {
            "samplesheet": samplesheet}
    else:
        if not out:
            raise click.UsageError("give --out (single case) or --samplesheet/--outdir")
        per_region = {"wt": uncertainty_wt, "tc": uncertainty_tc, "et": uncertainty_et}
        cases = [_case(truth, prediction, mask, uncertainty, per_region, probabilities,
                       subject, regs)]
        table, where = out, cases[0].inputs()
    opts = cohort.ScoreOptions(regs, num_points, bins, rescale, prob_channels=prob_channels)
    val = cases
    if fit_temperature and validation:
        val = _sheet_cases(validation, regs, calibration_only=True)
    check_outputs(_outputs(table, plot, outdir if samplesheet else None),
                  [samplesheet, validation,
                   *(p for c in [*cases, *val] for p in c.inputs().values())])
    if fit_temperature:
        if any(c.probabilities is None for c in val):
            raise click.UsageError("--fit-temperature needs probabilities "
                                   "(--probabilities or a prob column)")
        opts.temperatures = cohort.fit_temperatures(val, regs, prob_channels)
        timer.mark("fit_temperature_s")
    results = cohort.score_cohort(cases, opts, jobs)
    timer.mark("score_s")
    sidecar = make_sidecar(TOOL, {**opts.parameters(), "validation": validation}, where, timer,
                           subjects=len(cases))
    rows = _write(results, table, sidecar, plot, outdir if samplesheet else None)
    log.info("scored %d case(s); mean score %.4f", len(rows), rows["score"].mean())
    click.echo(str(table))
