"""The report's motion section: the mesh phenotypes against ``truth.json`` beside the
voxel-counting twins of the same segmentations (synthetic cohorts), their distributions,
the QC table and every subject's volume curves from the meshes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medflow.io.tables import read_table
from medflow.pipeline.stages import get_stage

#: (mesh column, true column): the voxel twin is the mesh name with ``_voxel`` before the unit
TRUTH_PAIRS = (("lvedv_ml", "lvedv_true_ml"), ("lvesv_ml", "lvesv_true_ml"),
               ("lvef_pct", "lvef_true_pct"), ("lvm_g", "lvm_true_g"),
               ("rvedv_ml", "rvedv_true_ml"), ("rvesv_ml", "rvesv_true_ml"),
               ("rvef_pct", "rvef_true_pct"), ("ecc_global_pct", "ecc_global_true_pct"),
               ("err_global_pct", "err_global_true_pct"),
               ("ell_global_pct", "ell_global_true_pct"),
               ("wt_global_mm", "wt_global_true_mm"))


def _voxel(column: str) -> str:
    head, _, unit = column.rpartition("_")
    return f"{head}_voxel_{unit}"


def _errors(cohort: pd.DataFrame, measured: str, true: str) -> dict:
    both = cohort[[measured, true]].apply(pd.to_numeric, errors="coerce").dropna()
    diff = both[measured] - both[true]
    return {"n": len(both), "mean": diff.mean(), "mae": diff.abs().mean(),
            "mae_rel": (100 * diff / both[true]).abs().mean(), "max": diff.abs().max()}


def truth_table(cohort: pd.DataFrame) -> pd.DataFrame:
    """Per phenotype with truth: mean and mean absolute error (measured - true) of the
    mesh and of the voxel-counting twin (``_voxel``), in the phenotype's unit (points for
    %) and, for volumes and mass, in % of the true value."""
    rows = []
    for mesh, true in TRUTH_PAIRS:
        if mesh not in cohort or true not in cohort:
            continue
        m = _errors(cohort, mesh, true)
        if not m["n"]:
            continue
        unit = true.rsplit("_", 1)[1]
        relative = unit in ("ml", "g")
        row = {"phenotype": mesh, "unit": "points" if unit == "pct" else unit,
               "subjects": m["n"], "mesh mean error": m["mean"],
               "mesh mean absolute error": m["mae"],
               "mesh mean absolute error %": m["mae_rel"] if relative else None,
               "mesh largest error": m["max"]}
        if _voxel(mesh) in cohort:
            v = _errors(cohort, _voxel(mesh), true)
            row.update({"voxel mean error": v["mean"], "voxel mean absolute error": v["mae"],
                        "voxel mean absolute error %": v["mae_rel"] if relative else None})
        rows.append(row)
    return pd.DataFrame(rows)


def motion_section(results: Path, report: Path, cohort: pd.DataFrame, table_html, img_html
                   ) -> list[str]:
    """HTML parts of the motion section (empty when the stage did not run).

    Args:
        table_html / img_html: the report's table and image renderers.
    """
    from medflow.report import figures

    folder = results / "motion"
    path = folder / get_stage("motion").table
    if not path.exists():
        return []
    table = read_table(path)
    out = ["<h2>motion</h2>",
           "<p>A template mesh (LV endo- and epicardium, RV endocardium) fitted to each "
           "subject's predicted short-axis cine segmentation and moved through the cycle "
           "(estimate-motion-mesh fit); volumes from the closed surfaces, LV mass at "
           "1.05 g/mL, peak strain and ED wall thickness. The <code>_voxel</code> columns "
           "count voxels of the same segmentation.</p>"]
    errors = truth_table(cohort)
    if len(errors):
        out += ["<h3>measured against truth</h3>",
                "<p>Error = measured - <code>truth.json</code>, mesh and voxel counting "
                "side by side.</p>", table_html(errors)]
        pairs = [(m, t) for m, t in TRUTH_PAIRS[:7] if m in cohort and t in cohort
                 and cohort[[m, t]].notna().all(axis=1).any()]
        if pairs:
            png = figures.measured_vs_true(cohort, pairs, report / "motion_truth.png")
            out.append(img_html(report, png, "mesh phenotypes against true"))
    qc = [c for c in ("subject", "role", "qc_pass", "qc_reasons") if c in table]
    qc += [c for c in table.columns if c.startswith("fit_rms_")]
    failed = int((~table["qc_pass"].astype(bool)).sum()) if "qc_pass" in table else 0
    out += ["<h3>quality control</h3>",
            f"<p>{failed} of {len(table)} meshes fail QC (ukbb_cardiac short-axis rules, "
            "volume curves, plausibility ranges, fit residual per view, folding).</p>",
            table_html(table[qc])]
    cols = [c for c in ("lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g", "rvef_pct",
                        "ecc_global_pct", "err_global_pct", "ell_global_pct") if c in table
            and pd.to_numeric(table[c], errors="coerce").notna().any()]
    if cols:
        png = figures.per_subject(table, cols, report / "motion_phenotypes.png",
                                  "mesh phenotypes")
        out.append(img_html(report, png, "mesh phenotypes per subject"))
    curves = _curves(folder, table)
    if curves is not None:
        png = figures.volume_curves(curves, report / "motion_volumes.png")
        out.append(img_html(report, png, "LV and RV volume curves from the meshes"))
    out.append("<details><summary>every mesh phenotype (motion.parquet)</summary>"
               + table_html(table) + "</details>")
    return out


def _curves(folder: Path, table: pd.DataFrame) -> pd.DataFrame | None:
    """subject, frame, lv_ml, rv_ml of every subject's frames.parquet."""
    parts = []
    for subject, role in zip(table["subject"], table["role"]):
        path = folder / subject / f"{subject}_{role}_frames.parquet"
        if path.exists():
            frames = read_table(path)
            parts.append(frames.assign(subject=subject))
    return pd.concat(parts, ignore_index=True) if parts else None
