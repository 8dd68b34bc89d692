"""estimate-motion-mesh on segmentations PREDICTED by segment-cascaded (issue 17's targets).

Held out like ``benchmarks/segment/cardiac_accuracy.py``: a 24-subject demo cohort, one
``segment-cascaded`` model per view (``sa``, ``la_2ch``, ``la_4ch``) trained on the first
16 subjects, every view of the 8 others predicted with ``segment-cascaded predict``, then
``evaluate.py`` fits meshes to the PREDICTED segmentations and scores them against
``truth.json`` (mesh phenotypes and their voxel-counting twins from the same predicted
short-axis labels), and, as the floor of the fit, to the same subjects' ground-truth
segmentations. Training and prediction call the medflow command line; the fit is
evaluate.py's call of ``fit_files`` (what ``estimate-motion-mesh fit`` runs, one thread).

    python benchmarks/motion/predicted.py --workdir /tmp/motion_pred
    python benchmarks/motion/predicted.py --workdir /tmp/motion_pred2 --skip-truth-fit \
        --train-sa "--epochs 4 --patch 96,96,16 --channels 8 --levels 4 --seed 1"
    python benchmarks/motion/predicted.py --workdir /tmp/motion_pred --learned

``--learned`` also trains the motion network (``estimate-motion-mesh train``) on the 16
training subjects' segmentations and scores ``predict`` on the 8 held-out subjects'
predicted views (``eval_predicted_learned``), beside ``fit`` on the same views.

A model folder, prediction folder or evaluation already in --workdir is reused (delete it
to redo that step): a rerun only prints the summary.

Training settings: ``sa`` as cardiac_accuracy.py's reduced setting (``--epochs 4 --patch
96,96,16 --channels 8 --levels 4``); the long-axis views with the pipeline's train stage
options (``medflow.pipeline.stages``: ``--epochs 10 --patch 96,96,16 --channels 8 --levels
3 --augment standard --val-fraction 0.2``; the patch is clipped to the single plane; the
pipeline itself reads long-axis segmentations from the samplesheet and trains no
long-axis model yet).
Writes ``<workdir>/predicted_summary.json`` and prints it; CPU seconds are reported (the
machine's cores are shared).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medflow.pipeline.stages import get_stage
from medflow.superres.metrics import dice as label_dice

HERE = Path(__file__).resolve().parent
VIEWS = ("sa", "la_2ch", "la_4ch")
#: The pipeline's train-stage options, read from the stage itself so the two cannot drift.
PIPELINE_TRAIN = get_stage("train").args["image"]
TRAIN_ARGS = {
    "sa": "--epochs 4 --patch 96,96,16 --channels 8 --levels 4 --augment standard "
          "--val-fraction 0.125",
    "la_2ch": PIPELINE_TRAIN,
    "la_4ch": PIPELINE_TRAIN,
}
#: Issue 17's targets (mean absolute error; volumes and mass in %, the rest in points).
TARGETS = {"lvef_pct": 3, "lvedv_ml": 5, "lvesv_ml": 5, "lvm_g": 7, "rvef_pct": 5,
           "ecc_global_pct": 2, "ell_global_pct": 2, "err_global_pct": 5, "track_es_mm": 1.5}
CLASSES = {1: "LV", 2: "myocardium", 3: "RV"}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def medflow(*args: str) -> float:
    """Run ``medflow ARGS``; returns its CPU seconds."""
    c0 = child_cpu()
    subprocess.run([sys.executable, "-m", "medflow", *args], check=True)
    return child_cpu() - c0


def read_rows(sheet: Path) -> list[dict]:
    """Samplesheet rows with absolute paths."""
    with open(sheet) as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v if k == "subject" or not v else str((sheet.parent / v).resolve())
             for k, v in r.items()} for r in rows]


def write_sheet(rows: list[dict], columns: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def dice(pred: Path, truth: Path) -> dict[str, float]:
    """Dice per class present in the truth, over the whole cine."""
    a, b = (np.asarray(nib.load(str(p)).dataobj) for p in (pred, truth))
    return {name: label_dice(a, b, c) for c, name in CLASSES.items() if (b == c).any()}


def evaluate(sheet: Path, out: Path, extra: str) -> pd.DataFrame:
    """``evaluate.py`` on a samplesheet (one thread); its per-subject table."""
    if not (out / "evaluation.parquet").exists():
        subprocess.run([sys.executable, str(HERE / "evaluate.py"), "--samplesheet",
                        str(sheet), "--out", str(out), *shlex.split(extra)], check=True)
    return pd.read_parquet(out / "evaluation.parquet")


def summarise(df: pd.DataFrame) -> dict:
    """Mean absolute error of every scored column (``*_err``, tracking) and per subject."""
    errs = {c[:-4]: round(float(df[c].abs().mean()), 2) for c in df.columns
            if c.endswith("_err")}
    errs["track_es_mm"] = round(float(df["track_es_mm"].mean()), 2)
    errs["track_es_lv_mm"] = round(float(df["track_es_lv_mm"].mean()), 2)
    errs["cpu_s_per_subject"] = round(float(df["cpu_s"].mean()), 1)
    errs["qc_pass"] = f"{int(df['qc_pass'].sum())}/{len(df)}"
    errs["targets_missed"] = [k for k, lim in TARGETS.items() if errs.get(k, 0) > lim]
    return errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--samplesheet", type=Path, default=None,
                    help="a cardiac demo cohort [written: 24 subjects, 10 frames, seed 0]")
    ap.add_argument("--train-subjects", type=int, default=16, help="the first N train")
    ap.add_argument("--test-subjects", type=int, default=8, help="the next N are tested")
    for view in VIEWS:
        ap.add_argument(f"--train-{view.replace('_', '-')}", default=TRAIN_ARGS[view],
                        help=f"segment-cascaded train options of the {view} model")
    ap.add_argument("--predict-extra", default="", help="more predict options, every view")
    ap.add_argument("--fit-extra", default="", help='more evaluate.py options, one string')
    ap.add_argument("--skip-truth-fit", action="store_true",
                    help="do not also fit the test subjects' ground-truth segmentations")
    ap.add_argument("--learned", action="store_true",
                    help="also train `estimate-motion-mesh train` on the training subjects' "
                         "segmentations and score `predict` on the predicted test views")
    ap.add_argument("--motion-train", default="--threads 1",
                    help="estimate-motion-mesh train options (with --learned)")
    a = ap.parse_args()
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    sheet = a.samplesheet or work / "cohort" / "samplesheet.csv"
    if not sheet.exists():
        medflow("demo-cohort", "--kind", "cardiac", "--subjects", "24", "--frames", "10",
                "--seed", "0", "--out", str(sheet.parent))
    rows = read_rows(sheet)
    train = rows[:a.train_subjects]
    test = rows[a.train_subjects:a.train_subjects + a.test_subjects]
    report: dict = {"samplesheet": str(sheet), "train_subjects": len(train),
                    "test_subjects": [r["subject"] for r in test], "views": {}}
    predicted = [{"subject": r["subject"], "sa": r["sa"], "truth": r["truth"]} for r in test]
    for view in VIEWS:
        model = work / f"model_{view}"
        options = getattr(a, f"train_{view}")
        info: dict = {"train_args": options}
        if not (model / "model.json").exists():
            info["train_cpu_s"] = round(medflow(
                "segment-cascaded", "train", "--samplesheet",
                str(write_sheet(train, ["subject", view, f"seg_{view}"],
                                work / f"train_{view}.csv")),
                "--image-role", view, "--label-role", f"seg_{view}", "--out", str(model),
                *shlex.split(options)), 1)
        pred = work / f"pred_{view}"
        segs = [pred / r["subject"] / f"{r['subject']}_{view}_seg.nii.gz" for r in test]
        if not all(p.exists() for p in segs):
            info["predict_cpu_s"] = round(medflow(
                "segment-cascaded", "predict", "--model", str(model), "--samplesheet",
                str(write_sheet(test, ["subject", view], work / f"test_{view}.csv")),
                "--outdir", str(pred), *shlex.split(a.predict_extra)), 1)
        scores = []
        for r, p, seg in zip(test, predicted, segs):
            p[f"seg_{view}"] = str(seg)
            scores.append(dice(seg, Path(r[f"seg_{view}"])))
        info["dice"] = {n: round(float(np.mean([s[n] for s in scores])), 4)
                        for n in scores[0]}
        report["views"][view] = info
    columns = ["subject", "sa", *(f"seg_{v}" for v in VIEWS), "truth"]
    runs = {"predicted": write_sheet(predicted, columns, work / "test_predicted.csv")}
    if not a.skip_truth_fit:
        runs["ground_truth"] = write_sheet(test, columns, work / "test_truth.csv")
    extra = {name: a.fit_extra for name in runs}
    if a.learned:
        # The motion network learns from the training subjects' segmentations (here the
        # phantom's labels) and is scored on the held-out subjects' PREDICTED views.
        model = work / "motion_model"
        if not (model / "model.json").exists():
            report["motion_train_cpu_s"] = round(medflow(
                "estimate-motion-mesh", "train", "--samplesheet",
                str(write_sheet(train, ["subject", *(f"seg_{v}" for v in VIEWS)],
                                work / "train_motion.csv")),
                "--out", str(model), *shlex.split(a.motion_train)), 1)
        runs["predicted_learned"] = runs["predicted"]
        extra["predicted_learned"] = f"{a.fit_extra} --model {model}"
    for name, run_sheet in runs.items():
        df = evaluate(run_sheet, work / f"eval_{name}", extra[name])
        report[name] = summarise(df)
        keep = ["subject", "lvef_pct_err", "lvef_voxel_pct_err", "lvesv_ml_err",
                "lvesv_voxel_ml_err", "rvef_pct_err", "track_es_mm", "qc_pass"]
        report[name]["per_subject"] = df[[c for c in keep if c in df]].round(2).to_dict(
            "records")
    text = json.dumps(report, indent=1)
    (work / "predicted_summary.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
