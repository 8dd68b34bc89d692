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


def superres_rows(folder: Path, subject: str) -> list[dict]:
    """One row per super-resolved frame of a subject: volumes of the 1.25 mm shape (ml),
    the estimated breath-hold shifts (mm, over the slices that hold labels), time."""
    rows = []
    for sidecar in sorted((folder / subject).glob(f"{subject}_*_hr_*.json")):
        meta = json.loads(sidecar.read_text())
        hr = sidecar.with_name(sidecar.name.replace(".json", ".nii.gz"))
        vol = read_image(hr, kind="label")
        data, ml = np.asarray(vol.data), float(np.prod(vol.spacing)) / 1000.0
        result = meta.get("result", {})
        row = {"subject": subject, "frame": meta["parameters"]["frame"],
               "frame_index": meta["parameters"]["frame_index"],
               "method": meta["parameters"]["method"],
               **{f"{n}_ml": round(float((data == v).sum() * ml), 3)
                  for n, v in (("lv", 1), ("myo", 2), ("rv", 3))},
               "seconds": result.get("seconds")}
        if "slice_shifts_mm" in result:
            shifts = np.linalg.norm(np.asarray(result["slice_shifts_mm"]), axis=1)
            shifts = shifts[np.asarray(result["slice_has_labels"], bool)]
            row["shift_mean_mm"] = round(float(shifts.mean()), 3) if shifts.size else None
            row["shift_max_mm"] = round(float(shifts.max()), 3) if shifts.size else None
        rows.append(row)
    return rows


def superres_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Cohort columns from the superres table: ED/ES volumes of the 3D shapes, LVEF, LV
    mass (1.05 g/ml) and the mean ED shift, prefixed ``superres_``."""
    wide = table[table["frame"].isin(["ed", "es"])].pivot(
        index="subject", columns="frame", values=["lv_ml", "myo_ml", "rv_ml"])
    wide.columns = [f"superres_{v.removesuffix('_ml')}_{f}_ml" for v, f in wide.columns]
    out = wide.reset_index()
    if {"superres_lv_ed_ml", "superres_lv_es_ml"} <= set(out.columns):
        out["superres_lv_ef_pct"] = (100 * (1 - out["superres_lv_es_ml"]
                                            / out["superres_lv_ed_ml"])).round(2)
    if "superres_myo_ed_ml" in out.columns:
        out["superres_myo_mass_g"] = (out["superres_myo_ed_ml"] * MYOCARDIUM_DENSITY).round(2)
    if "shift_mean_mm" in table.columns:
        ed = table[table["frame"] == "ed"][["subject", "shift_mean_mm"]]
        out = out.merge(ed.rename(columns={"shift_mean_mm": "superres_shift_mean_mm"}),
                        on="subject", how="left")
    return out


def _stage_table(results: Path, stage: str, subjects: list[str], make) -> pd.DataFrame | None:
    folder = results / stage
    if not folder.is_dir():
        return None
    rows = [r for s in subjects if (folder / s).is_dir() for r in make(folder, s)]
    return pd.DataFrame(rows) if rows else None


def collect(results: Path, status: dict[str, str]) -> pd.DataFrame:
    """Write ``preprocess.parquet``, ``segment.parquet``, ``superres.parquet`` and
    ``cohort.parquet``.

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
              "segment": _stage_table(results, "segment", ok, segment_rows),
              "superres": _stage_table(results, "superres", ok, superres_rows)}
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
    if tables["superres"] is not None:
        cohort = cohort.merge(superres_columns(tables["superres"]), on="subject", how="left")
    scores = results / "uncertainty" / get_stage("uncertainty").table
    if scores.exists():
        qu = read_table(scores).rename(columns={"score": "uncertainty_score"})
        cohort = cohort.merge(qu[qu["subject"].isin(ok)], on="subject", how="left")
    with atomic_outputs() as out:
        write_table(cohort, out.path(results / "cohort.parquet"))
    return cohort
