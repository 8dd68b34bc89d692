"""``results/report/index.html``: per stage its table, distributions per subject and, for a
few subjects, the segmentation over the image. One HTML file plus PNGs beside it, with no
script and nothing fetched from the network."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

from medflow.io.atomic import atomic_path
from medflow.io.paths import source_file
from medflow.io.tables import read_table
from medflow.pipeline.stages import get_stage
from medflow.report.motion import motion_section
from medflow.report.reliability import reliability_section
from medflow.report.superres import superres_section

MAX_ROWS = 200      # a 100,000-subject cohort is read in Parquet, not in a web page
OVERLAYS = 3        # subjects shown with their segmentation
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;
padding:2px 6px;text-align:right}th{background:#f3f3f3}h2{border-bottom:1px solid #ddd}
.scroll{overflow-x:auto}.failed{color:#b00}img{max-width:100%;margin:4px}"""


def _table(df: pd.DataFrame) -> str:
    note = ""
    if len(df) > MAX_ROWS:
        note = f"<p>first {MAX_ROWS} of {len(df)} rows; all rows are in the Parquet table</p>"
        df = df.head(MAX_ROWS)
    body = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="",
                      border=0, escape=True)
    return f'<div class="scroll">{body}</div>{note}'


def _img(report: Path, target: Path, alt: str) -> str:
    rel = Path(os.path.relpath(target, report)).as_posix()  # the folder moves as a whole
    return f'<img src="{html.escape(rel)}" alt="{html.escape(alt)}">'


def _numeric(df: pd.DataFrame, suffixes: tuple[str, ...]) -> list[str]:
    return [c for c in df.columns if c.endswith(suffixes) and pd.api.types.is_numeric_dtype(df[c])
            and df[c].notna().any()]


def _run_section(results: Path, cohort: pd.DataFrame) -> list[str]:
    info = results / "pipeline_info"
    out = ["<h2>Run</h2>"]
    failed = cohort[cohort["status"] != "ok"] if "status" in cohort else cohort.head(0)
    out.append(f"<p>{len(cohort) - len(failed)} of {len(cohort)} subjects done.</p>")
    if len(failed):
        out.append('<p class="failed">Failed:</p>' + _table(failed[["subject", "status"]]))
    for name in ("params.json", "versions.json"):
        if (info / name).exists():
            data = json.loads((info / name).read_text())
            rows = pd.DataFrame({"name": list(data), "value": [str(v) for v in data.values()]})
            out.append(f"<details><summary>{name}</summary>{_table(rows)}</details>")
    if (info / "trace.parquet").exists():
        trace = read_table(info / "trace.parquet")
        cols = [c for c in ("stage", "subject", "status", "exit_code", "seconds",
                            "peak_rss_mb", "error") if c in trace]
        out.append(f"<details><summary>trace ({len(trace)} tasks)</summary>"
                   f"{_table(trace[cols])}</details>")
    return out


def _segment_section(results: Path, report: Path, cohort: pd.DataFrame) -> list[str]:
    from medflow.report import figures

    table_path = results / "segment" / get_stage("segment").table
    if not table_path.exists():
        return []
    table = read_table(table_path)
    out = ["<h2>segment</h2>", _table(table)]
    for suffixes, name, title in (((("_ml",)), "volumes", "volumes per subject (ml)"),
                                  (("_pct", "_g"), "function", "ejection fraction, mass")):
        cols = _numeric(table, suffixes)
        if cols:
            png = figures.per_subject(table, cols, report / f"segment_{name}.png", title)
            out.append(_img(report, png, title))
    image_name = get_stage("preprocess").outputs["image"]
    for row in table.head(OVERLAYS).to_dict("records"):
        sub, role = row["subject"], row["role"]
        seg = results / "segment" / sub / f"{sub}_{role}_seg.nii.gz"
        image = _segmented_image(seg) or (
            results / "preprocess" / sub / image_name.format(subject=sub, role=role))
        if seg.exists() and source_file(image).exists():  # (a zip#series cell: the zip)
            frame = int(row["ed_frame"]) if pd.notna(row.get("ed_frame")) else 0
            png = figures.overlay(image, seg, seg.with_name(f"{sub}_{role}_unc.nii.gz"), frame,
                                  report / f"overlay_{sub}.png", f"{sub} {role}")
            out.append(_img(report, png, f"{sub} segmentation"))
    return out


def _segmented_image(seg: Path) -> Path | None:
    """The image a segmentation was made from, as its sidecar names it (if still there)."""
    try:
        path = Path(json.loads(seg.with_name(seg.name.replace(".nii.gz", ".json")).read_text())
                    ["inputs"]["input_0"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if source_file(path).exists() else None


def _truth_section(report: Path, cohort: pd.DataFrame) -> list[str]:
    """Measured phenotypes against ``truth.json`` (synthetic cohorts): per pair, the mean
    and mean absolute error, and a scatter / Bland-Altman figure."""
    from medflow.pipeline.tables import TRUTH_COLUMNS
    from medflow.report import figures

    pairs = [(true.replace("_true", "_voxel"), true) for true in TRUTH_COLUMNS.values()]
    pairs = [(m, t) for m, t in pairs if m in cohort and t in cohort
             and cohort[[m, t]].notna().all(axis=1).any()]
    if not pairs:
        return []
    rows = []
    for measured, true in pairs:
        both = cohort[[measured, true]].astype(float).dropna()
        diff = both[measured] - both[true]
        unit = true.rsplit("_", 1)[1]
        rel = 100 * diff / both[true] if unit != "pct" else None
        rows.append({"measured": measured, "true": true, "subjects": len(both),
                     "mean error": diff.mean(), "mean absolute error": diff.abs().mean(),
                     "unit": "points" if unit == "pct" else unit,
                     "mean error %": rel.mean() if rel is not None else None,
                     "largest error": diff.abs().max()})
    out = ["<h2>measured against truth</h2>",
           "<p>Voxel-counted phenotypes (ED = frame 0, ES = smallest LV) against the cohort's "
           "<code>truth.json</code>: error = measured - true.</p>", _table(pd.DataFrame(rows))]
    png = figures.measured_vs_true(cohort, pairs, report / "truth.png")
    out.append(_img(report, png, "measured against true"))
    return out


def _uncertainty_section(results: Path, report: Path) -> list[str]:
    from medflow.report import figures

    folder = results / "uncertainty"
    if not (folder / get_stage("uncertainty").table).exists():
        return []
    table = read_table(folder / get_stage("uncertainty").table)
    out = ["<h2>uncertainty</h2>",
           "<p>QU-BraTS score per region (Dice, filtered true positives and negatives as "
           "uncertain voxels are removed); 'score' is the mean over regions.</p>", _table(table)]
    dice = [c for c in table.columns if c.endswith("_dice") and not c.endswith("auc_dice")]
    for cols, name, title in ((dice, "dice", "Dice per subject (against the labels)"),
                              (_numeric(table, ("score",)), "score", "uncertainty score")):
        if cols:
            png = figures.scores_by_subject(table, cols, report / f"uncertainty_{name}.png",
                                            title)
            out.append(_img(report, png, title))
    if (folder / "curves.png").exists():
        out.append(_img(report, folder / "curves.png", "cohort QU-BraTS curves"))
    return out + reliability_section(results, report, table, _table, _img)


def _annotate_section(results: Path, report: Path) -> list[str]:
    """The suggestions for the next round of annotation; the simulated annotation curves
    when ``medflow suggest-annotation simulate --out <results>/annotate/simulate`` ran."""
    folder = results / "annotate"
    path = folder / get_stage("annotate").outputs["suggestions"]
    out = []
    if path.exists():
        table = pd.read_csv(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            meta = {}
        pool, units = meta.get("unlabelled_units"), meta.get("units")
        text = (f"{meta.get('strategy', '')}: {len(table)} of {pool} unlabelled "
                f"{meta.get('unit', 'subject')}(s) suggested ({units} in the cohort)."
                if pool is not None else "")
        if pool == 0:
            text = "Every subject has a label: nothing to suggest."
        out = ["<h2>annotate</h2>", f"<p>Next to annotate, best first. {html.escape(text)}</p>",
               _table(table)]
    sim = folder / "simulate"
    if (sim / "summary.parquet").exists():
        out += ["<h3>simulated annotation loop</h3>",
                "<p>Test Dice against the fraction of the pool labelled, per strategy (mean "
                "and range over repeats), and the model trained on the whole pool.</p>",
                _table(read_table(sim / "summary.parquet"))]
        if (sim / "curves.png").exists():
            out.append(_img(report, sim / "curves.png", "Dice against fraction labelled"))
    return out


def _cluster_section(results: Path, report: Path) -> list[str]:
    """The column check: flagged images, clusters per column, typical members, the map."""
    folder = results / "cluster"
    path = folder / get_stage("cluster").table
    if not path.exists():
        return []
    table = read_table(path)
    out = ["<h2>cluster</h2>",
           "<p>Every image column clustered without labels (cluster-unsupervised). An image "
           "is flagged when its cluster holds under a quarter of its column; "
           "<em>looks like</em> names the column whose usual cluster it is.</p>"]
    if "flagged" in table:
        flagged = table[table["flagged"]]
        cols = ["subject", "column", "cluster", "looks_like", "column_share", "file"]
        out.append(f"<p>{len(flagged)} of {len(table)} images flagged.</p>")
        if len(flagged):
            out.append('<div class="failed">' + _table(flagged[cols]) + "</div>")
        counts = pd.crosstab(table["column"], table["cluster"])
        counts.columns = [f"cluster {c}" for c in counts.columns]
        out.append(_table(counts.reset_index()))
    for name, alt in (("montage.png", "typical members of each cluster"),
                      ("map.png", "2D map of the embeddings")):
        if (folder / name).exists():
            out.append(_img(report, folder / name, alt))
    return out


def _preprocess_section(results: Path) -> list[str]:
    path = results / "preprocess" / get_stage("preprocess").table
    return ["<h2>preprocess</h2>", _table(read_table(path))] if path.exists() else []


def _train_section(results: Path, report: Path) -> list[str]:
    card_path = results / "train" / "model" / "model.json"
    if not card_path.exists():
        return []
    card = json.loads(card_path.read_text())
    dice = card.get("validation", {}).get("dice", {})
    rows = pd.DataFrame({"label": list(dice), "validation Dice": list(dice.values())})
    out = ["<h2>train</h2>", f"<p>{card['training'].get('epochs_done')} epochs on "
           f"{card['training'].get('subjects')} subjects.</p>", _table(rows)]
    curve = card_path.parent / "training_curve.png"
    if curve.exists():
        out.append(_img(report, curve, "training curve"))
    return out


def _run_samplesheet(results: Path) -> Path | None:
    """The samplesheet a run read, as both runners record it in ``params.json``."""
    try:
        return Path(json.loads((results / "pipeline_info" / "params.json").read_text())["input"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def render_report(results: Path) -> Path:
    """Write ``results/report/index.html`` (and its PNGs) from a results folder.

    Args:
        results: a results folder of either runner.

    Returns:
        The path of ``index.html``.

    Note:
        Without ``cohort.parquet`` (e.g. a Nextflow run), the tables are gathered first
        from the subjects' folders.
    """
    from medflow.pipeline.tables import collect

    results = Path(results)
    report = results / "report"
    report.mkdir(parents=True, exist_ok=True)
    if not (results / "cohort.parquet").exists():
        subjects = sorted({p.name for stage in ("preprocess", "segment")
                           if (results / stage).is_dir()
                           for p in (results / stage).iterdir() if p.is_dir()})
        collect(results, {s: "ok" for s in subjects}, _run_samplesheet(results))
    cohort = read_table(results / "cohort.parquet")
    parts = ["<h1>medflow report</h1>", *_run_section(results, cohort),
             "<h2>cohort</h2><p>One row per subject, every stage's columns "
             "(<code>cohort.parquet</code>).</p>", _table(cohort),
             *_preprocess_section(results), *_train_section(results, report),
             *_segment_section(results, report, cohort), *_truth_section(report, cohort),
             *_uncertainty_section(results, report),
             *superres_section(results, report, _table), *_annotate_section(results, report),
             *_cluster_section(results, report),
             *motion_section(results, report, cohort, _table, _img)]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>medflow report</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    index = report / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page)
    return index
