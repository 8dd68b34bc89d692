"""The motion stage's tables: every subject's mesh phenotypes (``estimate-motion-mesh``'s
``<subject>_<role>_phenotypes.parquet``) in ``motion/motion.parquet`` (every column: AHA
segments and all), and the UK Biobank set, global strain, wall thickness, fit residuals
and the mesh QC in ``cohort.parquet``.

The mesh columns carry the plain names (``lvef_pct``); the voxel-counting twins from the
segment stage keep ``_voxel`` (``lvef_voxel_pct``) and the truth of a synthetic cohort
``_true`` (``lvef_true_pct``). The mesh QC is ``motion_qc_pass``/``motion_qc_reasons``,
beside the segmentation's ``qc_pass``/``qc_reasons``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medflow.io.tables import read_table

#: Mesh phenotypes copied into cohort.parquet (the rest stay in motion.parquet).
MESH_COLUMNS = ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "lvco_l_min", "lvm_g",
                "rvedv_ml", "rvesv_ml", "rvsv_ml", "rvef_pct", "ecc_global_pct",
                "err_global_pct", "ell_global_pct", "wt_global_mm")
QC_COLUMNS = {"qc_pass": "motion_qc_pass", "qc_reasons": "motion_qc_reasons"}
#: truth.json key (the tool's own names) -> cohort column, for what has no voxel twin
STRAIN_TRUTH_COLUMNS = {"ecc_global_pct": "ecc_global_true_pct",
                        "err_global_pct": "err_global_true_pct",
                        "ell_global_pct": "ell_global_true_pct",
                        "wt_global_mm": "wt_global_true_mm"}


def motion_rows(folder: Path, subject: str) -> list[dict]:
    """One row per fitted segmentation of a subject (its phenotypes.parquet row)."""
    rows = []
    for path in sorted((folder / subject).glob(f"{subject}_*_phenotypes.parquet")):
        role = path.name[len(subject) + 1:-len("_phenotypes.parquet")]
        for row in read_table(path).to_dict("records"):
            rows.append({"subject": subject, "role": role, **row})
    return rows


def motion_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Per subject: :data:`MESH_COLUMNS`, ``fit_rms_<view>_mm`` and the QC columns
    renamed to ``motion_qc_pass``/``motion_qc_reasons`` (first role of a subject)."""
    keep = [c for c in MESH_COLUMNS if c in table]
    keep += [c for c in table.columns if c.startswith("fit_rms_")]
    keep += [c for c in QC_COLUMNS if c in table]
    return table.drop_duplicates("subject")[["subject", *keep]].rename(columns=QC_COLUMNS)
