"""Tables of a results folder: the per-stage tables the tools do not write themselves and
``results/cohort.parquet``, one row per subject with every stage's columns.

Cardiac function comes from the short-axis segmentation by voxel counting, the UK Biobank
way (:mod:`medflow.cardiac`): ED = frame 0, ES = the frame of minimum LV blood pool
(``ed_rule`` says so in the table). These columns carry ``_voxel`` in their names
(``lvef_voxel_pct``): mesh-based twins from the motion tool use the plain names. Every cine
row carries ``qc_pass``/``qc_reasons`` (ukbb_cardiac short-axis rules at ED and ES, and the
LV/RV volume curves). When the samplesheet has a ``truth`` column (``truth.json`` of a
synthetic cohort), the true values stand beside the measured ones (``lvef_true_pct``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cardiac import (basal_descent_reasons, short_axis_qc, volume_curve_reasons,
                             voxel_phenotypes)
from medflow.cardiac.labels import MYOCARDIUM_DENSITY_G_PER_ML
from medflow.io.atomic import atomic_outputs
from medflow.io.images import read_image
from medflow.io.tables import read_table, write_table
from medflow.pipeline.stages import STAGES, get_stage

SHORT = {"LV": "lv", "myocardium": "myo", "RV": "rv"}  # UK Biobank label names -> prefixes
ED_RULE = "first"  # UK Biobank cines are triggered at the R wave: ED is frame 0
#: phenotype key of :func:`medflow.cardiac.voxel_phenotypes` -> cohort column (voxel counts)
VOXEL_COLUMNS = {"lvedv_ml": "lvedv_voxel_ml", "lvesv_ml": "lvesv_voxel_ml",
                 "lvsv_ml": "lvsv_voxel_ml", "lvef_pct": "lvef_voxel_pct", "lvm_g": "lvm_voxel_g",
                 "rvedv_ml": "rvedv_voxel_ml", "rvesv_ml": "rvesv_voxel_ml",
                 "rvsv_ml": "rvsv_voxel_ml", "rvef_pct": "rvef_voxel_pct"}
#: truth.json key (demo cohorts) -> cohort column
TRUTH_COLUMNS = {"lvef_pct": "lvef_true_pct", "lvedv_ml": "lvedv_true_ml",
                 "lvesv_ml": "lvesv_true_ml", "lv_mass_g": "lvm_true_g",
                 "rvedv_ml": "rvedv_true_ml", "rvesv_ml": "rvesv_true_ml",
                 "rvef_pct": "rvef_true_pct"}


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
    """One segmentation's volumes: cardiac function for a short-axis cine with the UK
    Biobank labels (:func:`cardiac_row`), otherwise the volume (mL) per label (3D) or its
    range over the frames (``{name}_min_ml``, ``{name}_max_ml``); mean uncertainty (0-100)
    inside the predicted foreground."""
    vol = read_image(seg_path, kind="label")
    data = np.asarray(vol.data)
    frames = data[..., None] if data.ndim == 3 else data
    row: dict = {"frames": int(frames.shape[3])}
    names = [SHORT.get(n, n.lower()) for n in sidecar["label_names"]]
    values = dict(zip(names, sidecar["labels"]))
    if frames.shape[3] > 1 and {"lv", "myo", "rv"} <= set(values):
        row.update(cardiac_row(frames, vol.spacing, values["lv"], values["myo"], values["rv"]))
    else:
        ml = float(np.prod(vol.spacing)) / 1000.0
        for n, v in values.items():
            if v == 0:
                continue
            curve = (frames == v).sum(axis=(0, 1, 2)) * ml
            if frames.shape[3] == 1:
                row[f"{n}_ml"] = round(float(curve[0]), 3)
            else:
                row[f"{n}_min_ml"], row[f"{n}_max_ml"] = (round(float(curve.min()), 3),
                                                          round(float(curve.max()), 3))
    if unc_path is not None and unc_path.exists():
        unc = np.asarray(read_image(unc_path).data)
        fg = data > 0
        row["unc_foreground_mean"] = round(float(unc[fg].mean()), 3) if fg.any() else None
    return row


def cardiac_row(frames: np.ndarray, spacing, lv: int = 1, myo: int = 2, rv: int = 3) -> dict:
    """Voxel-counted LV/RV function of a short-axis cine segmentation, with its QC.

    Args:
        frames: (X, Y, Z, T) label map, T >= 2; the slice axis is the coarsest one.
        spacing: spatial voxel spacing, mm (slice spacing, gap included).
        lv / myo / rv: the label values of LV blood pool, myocardium and RV blood pool.

    Returns:
        ``ed_rule``, ``ed_frame``, ``es_frame``, the :data:`VOXEL_COLUMNS` (mL, %, g),
        ``qc_pass`` and ``qc_reasons`` ("; "-joined, empty when it passes).
    """
    if (lv, myo, rv) != (1, 2, 3):  # the cardiac module speaks the UK Biobank labels
        lut = np.zeros(int(frames.max()) + 1, np.uint8)
        for value, ukbb in ((lv, 1), (myo, 2), (rv, 3)):
            if value < lut.size:
                lut[value] = ukbb
        frames = lut[frames]
    p = voxel_phenotypes(frames, spacing, ed_rule=ED_RULE)
    row = {"ed_rule": ED_RULE, "ed_frame": p["ed_frame"], "es_frame": p["es_frame"]}
    for key, col in VOXEL_COLUMNS.items():
        value = p.get(key)
        row[col] = None if value is None or not np.isfinite(value) else round(float(value), 3)
    slice_axis = int(np.argmax(spacing))
    reasons = []
    for phase, t in (("ED", p["ed_frame"]), ("ES", p["es_frame"])):
        reasons += [f"{phase}: {r}" for r in short_axis_qc(frames[..., t], slice_axis)]
    reasons += basal_descent_reasons(frames, p["ed_frame"], p["es_frame"], slice_axis)
    reasons += volume_curve_reasons(p["lv_ml_per_frame"], "LV", p["ed_frame"])
    reasons += volume_curve_reasons(p["rv_ml_per_frame"], "RV", p["ed_frame"])
    row.update({"qc_pass": not reasons, "qc_reasons": "; ".join(dict.fromkeys(reasons))})
    return row


def truth_row(path, columns: dict[str, str] = TRUTH_COLUMNS) -> dict:
    """The true phenotypes of a synthetic subject (``truth.json``) as cohort columns
    (``columns``: truth key -> column, :data:`TRUTH_COLUMNS` by default); empty when the
    file is absent or has none of them."""
    try:
        truth = json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError):
        return {}
    return {col: round(float(truth[key]), 3) for key, col in columns.items()
            if isinstance(truth.get(key), (int, float))}


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
        out["superres_myo_mass_g"] = (out["superres_myo_ed_ml"]
                                      * MYOCARDIUM_DENSITY_G_PER_ML).round(2)
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


def collect(results: Path, status: dict[str, str], samplesheet: Path | None = None
            ) -> pd.DataFrame:
    """Write ``preprocess.parquet``, ``segment.parquet``, ``superres.parquet``,
    ``motion.parquet`` and ``cohort.parquet``.

    Args:
        results: the results folder.
        status: subject -> ``"ok"`` or why it failed, in samplesheet order. A subject's
            values come from the stages it finished: all of them when ``"ok"``, those
            before the stage it failed in (``"failed in motion (exit 65): ..."``) otherwise,
            as a Nextflow run publishes them; a failed subject keeps a row with its status.
        samplesheet: the run's samplesheet; its ``truth`` column (``truth.json``), where
            there is one, puts the true phenotypes beside the measured ones.

    Returns:
        The cohort table.
    """
    cohort = pd.DataFrame({"subject": list(status), "status": list(status.values())})
    from medflow.pipeline import motion_table

    def done(stage: str) -> list[str]:
        return finished(status, stage)

    tables = {"preprocess": _stage_table(results, "preprocess", done("preprocess"),
                                         preprocess_rows),
              "segment": _stage_table(results, "segment", done("segment"), segment_rows),
              "superres": _stage_table(results, "superres", done("superres"), superres_rows),
              "motion": _stage_table(results, "motion", done("motion"),
                                     motion_table.motion_rows)}
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
    if tables["motion"] is not None:  # mesh phenotypes (plain names) beside the _voxel ones
        cohort = cohort.merge(motion_table.motion_columns(tables["motion"]), on="subject",
                              how="left")
    scores = results / "uncertainty" / get_stage("uncertainty").table
    if scores.exists():
        qu = read_table(scores).rename(columns={"score": "uncertainty_score"})
        cohort = cohort.merge(qu[qu["subject"].isin(done("uncertainty"))], on="subject",
                              how="left")
    truth = _truth_table(samplesheet, done("segment"))  # beside the measured values
    if truth is not None:
        cohort = _beside(cohort.merge(truth, on="subject", how="left"))
    if tables["motion"] is not None:  # true strain and wall thickness, beside the mesh's
        strain = _truth_table(samplesheet, done("motion"), motion_table.STRAIN_TRUTH_COLUMNS)
        cohort = cohort if strain is None else cohort.merge(strain, on="subject", how="left")
    suggestions = results / "annotate" / get_stage("annotate").outputs["suggestions"]
    if suggestions.exists():  # the annotate stage: where each subject stands in the list
        ranked = pd.read_csv(suggestions).drop_duplicates("subject")
        ranked = ranked.rename(columns={"rank": "annotation_rank", "score": "annotation_score"})
        cohort = cohort.merge(ranked[["subject", "annotation_rank", "annotation_score"]],
                              on="subject", how="left")
    clusters = results / "cluster" / get_stage("cluster").table
    if clusters.exists():
        cohort = cohort.merge(cluster_columns(read_table(clusters), done("cluster")),
                              on="subject", how="left")
    with atomic_outputs() as out:
        write_table(cohort, out.path(results / "cohort.parquet"))
    return cohort


_STOPPED_IN = re.compile(r"(?:failed|cancelled) in ([\w-]+)")


def finished(status: dict[str, str], stage: str) -> list[str]:
    """Subjects (in ``status`` order) whose ``stage`` outputs stand: those marked ``"ok"``
    and those that failed or were cancelled in a later stage of :data:`STAGES` (the runner's
    ``"failed in <stage> ..."``). A segmentation is no less right because the motion fit
    after it failed; ``"stopped: ..."`` (the run ended early) gives nothing."""
    order = {s.name: i for i, s in enumerate(STAGES)}
    out = []
    for subject, state in status.items():
        where = _STOPPED_IN.match(state)
        if state == "ok" or (where and order.get(where.group(1), -1) > order[stage]):
            out.append(subject)
    return out


def _truth_table(samplesheet: Path | None, subjects: list[str],
                 columns: dict[str, str] = TRUTH_COLUMNS) -> pd.DataFrame | None:
    """subject + true phenotype columns (``columns``), from the samplesheet's ``truth``
    files."""
    if samplesheet is None or not Path(samplesheet).exists():
        return None
    from medflow.io.samplesheet import load_samplesheet

    sheet = load_samplesheet(samplesheet, check_files=False)
    if "truth" not in sheet:
        return None
    rows = [{"subject": s, **truth_row(t, columns)}
            for s, t in zip(sheet["subject"], sheet["truth"]) if s in subjects and t]
    table = pd.DataFrame(rows)
    return table if len(table.columns) > 1 else None


def _beside(cohort: pd.DataFrame) -> pd.DataFrame:
    """Each true column right after its measured twin (``lvef_true_pct`` after
    ``lvef_voxel_pct``), so a wrong number shows in the row it is in."""
    cols = [c for c in cohort.columns if c not in TRUTH_COLUMNS.values()]
    for true in [c for c in TRUTH_COLUMNS.values() if c in cohort]:
        twin = true.replace("_true", "_voxel")
        cols.insert(cols.index(twin) + 1 if twin in cols else len(cols), true)
    return cohort[cols]
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
    # A plain loop, not groupby().apply(): on a cohort with no flagged image (the healthy
    # case) apply returns an empty DataFrame, not a Series, in pandas 3.
    text = {subject: "; ".join(f"{c} looks like {like or 'no column'}"
                               for c, like in zip(g["column"], g["looks_like"]))
            for subject, g in flags.groupby("subject")}
    out = wide.join(flags.groupby("subject").size().rename("cluster_flagged_n"))
    out["cluster_flagged_n"] = out["cluster_flagged_n"].fillna(0).astype(int)
    out["cluster_flags"] = [text.get(subject, "") for subject in out.index]
    return out.reset_index()
