"""Tables of a results folder: the per-stage tables the tools do not write themselves and
``results/cohort.parquet``, one row per subject with every stage's columns.

Cardiac volumes come from the segmentation: voxel counts x voxel volume, per frame; end
diastole (ED) is the frame with the largest LV blood pool, end systole (ES) the smallest.
Myocardial mass uses the density of the demo cohort's ``truth.json`` (1.05 g/mL), so
measured and true masses compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.io.atomic import atomic_outputs
from medflow.io.images import read_image
from medflow.io.tables import read_table, write_table
from medflow.cardiac.labels import MYOCARDIUM_DENSITY_G_PER_ML as MYOCARDIUM_DENSITY
from medflow.pipeline.stages import get_stage

SHORT = {"LV": "lv", "myocardium": "myo", "RV": "rv"}  # UK Biobank label names -> prefixes


def preprocess_rows(folder: Path, subject: str) -> list[dict]:
    """One row per preprocessed role of a subject, from the sidecars."""
    rows = []
    for sidecar in sorted((folder / subject).glob(f"{subject}_*_preproc.json")):
        meta = json.loads(sidecar.read_text())
        geo = meta["output_geometry"]
        role = meta["parameters"].get("samplesheet_column") or sidecar.name[
            len(subject) + 1:-len("_preproc.json")]
        rows.append({"subject": subject, "role": role, "kind": meta["parameters"]["role"],
                     "output": f"{subject}/{sidecar.name.replace('.json', '.nii.gz')}",
                     "shape": geo["shape"],
                     **{f"spacing_{a}_mm": float(s) for a, s in zip("xyz", geo["spacing_mm"])},
                     "seconds": meta["timings"].get("total_s")})
    return rows


def volumes_row(seg_path: Path, sidecar: dict, unc_path: Path | None = None) -> dict:
    """Volumes (ml) per label from a segmentation; ED/ES, ejection fractions and myocardial
    mass for cardiac labels; mean uncertainty (0-100) inside the predicted foreground."""
    vol = read_image(seg_path, kind="label")
    data = np.asarray(vol.data)
    frames = data[..., None] if data.ndim == 3 else data
    ml = float(np.prod(vol.spacing)) / 1000.0
    names = [SHORT.get(n, n.lower()) for n in sidecar["label_names"]]
    per_label = {n: np.array([(frames[..., t] == v).sum() * ml for t in range(frames.shape[3])])
                 for n, v in zip(names, sidecar["labels"]) if v != 0}
    row: dict = {"frames": int(frames.shape[3])}
    if frames.shape[3] == 1:
        row.update({f"{n}_ml": round(float(v[0]), 3) for n, v in per_label.items()})
    else:
        lead = per_label.get("lv", next(iter(per_label.values())))
        ed, es = int(np.argmax(lead)), int(np.argmin(lead))
        row.update({"ed_frame": ed, "es_frame": es})
        for n, v in per_label.items():
            row[f"{n}_ed_ml"], row[f"{n}_es_ml"] = round(float(v[ed]), 3), round(float(v[es]), 3)
        for n in ("lv", "rv"):
            if n in per_label and per_label[n][ed] > 0:
                row[f"{n}_ef_pct"] = round(100 * (1 - per_label[n][es] / per_label[n][ed]), 2)
        if "myo" in per_label:
            row["myo_mass_g"] = round(float(per_label["myo"][ed]) * MYOCARDIUM_DENSITY, 2)
    if unc_path is not None and unc_path.exists():
        unc = np.asarray(read_image(unc_path).data)
        fg = data > 0
        row["unc_foreground_mean"] = round(float(unc[fg].mean()), 3) if fg.any() else None
    return row


def segment_rows(folder: Path, subject: str) -> list[dict]:
    """One row per segmentation of a subject (one per model input role)."""
    rows = []
    for sidecar in sorted((folder / subject).glob(f"{subject}_*_seg.json")):
        meta = json.loads(sidecar.read_text())
        role = sidecar.name[len(subject) + 1:-len("_seg.json")]
        seg = sidecar.with_name(sidecar.name.replace(".json", ".nii.gz"))
        unc = sidecar.with_name(f"{subject}_{role}_unc.nii.gz")
        rows.append({"subject": subject, "role": role, **volumes_row(seg, meta, unc)})
    return rows


def _stage_table(results: Path, stage: str, subjects: list[str], make) -> pd.DataFrame | None:
    folder = results / stage
    if not folder.is_dir():
        return None
    rows = [r for s in subjects if (folder / s).is_dir() for r in make(folder, s)]
    return pd.DataFrame(rows) if rows else None


def collect(results: Path, status: dict[str, str]) -> pd.DataFrame:
    """Write ``preprocess.parquet``, ``segment.parquet`` and ``cohort.parquet``.

    Args:
        results: the results folder.
        status: subject -> ``"ok"`` or why it failed, in samplesheet order; only subjects
            marked ``"ok"`` contribute values (a failed subject keeps a row with its status).

    Returns:
        The cohort table.
    """
    ok = [s for s, st in status.items() if st == "ok"]
    cohort = pd.DataFrame({"subject": list(status), "status": list(status.values())})
    tables = {"preprocess": _stage_table(results, "preprocess", ok, preprocess_rows),
              "segment": _stage_table(results, "segment", ok, segment_rows)}
    with atomic_outputs() as out:
        for stage, table in tables.items():
            if table is not None:
                write_table(table, out.path(results / stage / get_stage(stage).table))
    if tables["preprocess"] is not None:
        images = tables["preprocess"][tables["preprocess"]["kind"] == "image"]
        wide = images.pivot(index="subject", columns="role",
                            values=[f"spacing_{a}_mm" for a in "xyz"])
        wide.columns = [f"{role}_{col}" for col, role in wide.columns]
        cohort = cohort.merge(wide.reset_index(), on="subject", how="left")
    if tables["segment"] is not None:
        seg = tables["segment"].drop_duplicates("subject").drop(columns=["role"])
        cohort = cohort.merge(seg, on="subject", how="left")
    scores = results / "uncertainty" / get_stage("uncertainty").table
    if scores.exists():
        qu = read_table(scores).rename(columns={"score": "uncertainty_score"})
        cohort = cohort.merge(qu[qu["subject"].isin(ok)], on="subject", how="left")
    clusters = results / "cluster" / get_stage("cluster").table
    if clusters.exists():
        cohort = cohort.merge(cluster_columns(read_table(clusters), ok), on="subject", how="left")
    with atomic_outputs() as out:
        write_table(cohort, out.path(results / "cohort.parquet"))
    return cohort


def cluster_columns(table: pd.DataFrame, subjects: list[str]) -> pd.DataFrame:
    """Per subject from ``clusters.parquet``: ``<role>_cluster`` for each image column,
    ``cluster_flagged_n`` and ``cluster_flags`` (``"sa looks like la_4ch; ..."``: images
    whose cluster does not fit their samplesheet column)."""
    table = table[table["subject"].isin(subjects)]
    if table.empty:
        return pd.DataFrame({"subject": []})
    wide = table.pivot(index="subject", columns="column", values="cluster")
    wide.columns = [f"{role}_cluster" for role in wide.columns]
    flags = table[table["flagged"]] if "flagged" in table else table.head(0)
    text = flags.groupby("subject").apply(
        lambda g: "; ".join(f"{c} looks like {like or 'no column'}"
                            for c, like in zip(g["column"], g["looks_like"])),
        include_groups=False).rename("cluster_flags")
    out = wide.join(flags.groupby("subject").size().rename("cluster_flagged_n")).join(text)
    out["cluster_flagged_n"] = out["cluster_flagged_n"].fillna(0).astype(int)
    out["cluster_flags"] = out["cluster_flags"].fillna("")
    return out.reset_index()
