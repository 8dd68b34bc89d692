"""Cardiac accuracy experiment: train on 16 demo subjects, test on 8 others; Dice per class
and the cardiac function a user reads (LVEF, LVEDV, LVESV, RVEF), against truth.json.

Volumes are counted the ukbb_cardiac way (``medflow.cardiac.voxel_phenotypes``: ED = frame
0, ES = the frame of smallest LV blood pool) on the predicted segmentation and, as the
floor of the method, on the phantom's own ``seg_sa``. The diagnostic column
``basal_es_lv_voxels`` counts LV voxels in the most basal short-axis slice at the true ES
frame (the ground truth has none there in these phantoms: the slice cuts the atrium).

Run (reduced setting first):
    python benchmarks/segment/cardiac_accuracy.py --workdir /tmp/cardiac --epochs 3 \
        --augment standard --tag std
    python benchmarks/segment/cardiac_accuracy.py --workdir /tmp/cardiac --contrast gre \
        --tag gre
Robustness (issue 18): ``--artefacts`` also tests the in-domain test subjects corrupted by
motion, ghosting, spike, bias field and noise (``robustness.py``: Dice per artefact and its
drop from clean); ``--calibrate temperature,local`` fits each calibrator on the model's
validation subjects and reports top-label ECE, uncalibrated and per calibrator, on the
shifted contrast (with ``--domain-shift``, else in domain), with reliability diagrams:
    python benchmarks/segment/cardiac_accuracy.py --workdir /tmp/cardiac --model DIR \
        --domain-shift --artefacts --calibrate temperature,local --tag gin
Architecture: train's plan from the data unless --patch / --channels / --extra say
otherwise (the pre-planning setting was --patch 96,96,16 --channels 8 --extra "--levels 4").
Every step calls the medflow command line, so the numbers are what a user gets.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import robustness

from medflow.cardiac import voxel_phenotypes
from medflow.pipeline.tables import cardiac_row

NAMES = {1: "LV", 2: "myocardium", 3: "RV"}
CONTRASTS = ("ssfp", "gre")


def medflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medflow", *args], check=True)


def cohort(workdir: Path, contrast: str, frames: int | None = None) -> Path:
    """The 24-subject demo cohort of one contrast (``frames`` per cine: the phantom's default
    when None; ``make demo`` and issue 16's measurement used 10)."""
    out = workdir / (contrast if frames is None else f"{contrast}_{frames}f")
    if not (out / "samplesheet.csv").exists():
        medflow("demo-cohort", "--kind", "cardiac", "--subjects", "24", "--seed", "0",
                "--contrast", contrast, "--out", str(out),
                *(["--frames", str(frames)] if frames else []))
    return out / "samplesheet.csv"


def subsheet(sheet: Path, rows: range, path: Path) -> Path:
    with open(sheet) as fh:
        data = list(csv.DictReader(fh))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "sa", "seg_sa", "truth"])
        w.writeheader()
        for r in (data[i] for i in rows):
            w.writerow({k: r["subject"] if k == "subject" else str(sheet.parent / r[k])
                        for k in ("subject", "sa", "seg_sa", "truth")})
    return path


def subject_rows(sheet: Path, results: Path) -> list[dict]:
    """Per test subject: Dice per class, phenotypes of the prediction and of ``seg_sa``,
    the truth, and the basal-slice diagnostic."""
    rows = []
    with open(sheet) as fh:
        for row in csv.DictReader(fh):
            sub = row["subject"]
            img = nib.load(row["seg_sa"])
            truth_seg = np.asarray(img.dataobj)
            pred = np.asarray(nib.load(results / sub / f"{sub}_sa_seg.nii.gz").dataobj)
            spacing = img.header.get_zooms()[:3]
            truth = json.loads(Path(row["truth"]).read_text())
            out = {"subject": sub}
            for c, name in NAMES.items():
                a, b = pred == c, truth_seg == c
                out[f"dice_{name}"] = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
            for src, lab in (("pred", pred), ("seg_sa", truth_seg)):
                p = voxel_phenotypes(lab, spacing, ed_rule="first")
                for k in ("lvef_pct", "lvedv_ml", "lvesv_ml", "rvef_pct", "lvm_g"):
                    out[f"{k}_{src}"] = p[k]
                out[f"es_frame_{src}"] = p["es_frame"]
            for k in ("lvef_pct", "lvedv_ml", "lvesv_ml", "rvef_pct"):
                out[f"{k}_true"] = truth[k]
            out["lvm_g_true"] = truth["lv_mass_g"]
            es = truth["es_frame"]
            out["basal_es_lv_voxels_pred"] = int((pred[..., 0, es] == 1).sum())
            out["basal_es_lv_voxels_seg_sa"] = int((truth_seg[..., 0, es] == 1).sum())
            qc = cardiac_row(pred, spacing)           # what the cohort table would flag
            out["qc_pass_pred"], out["qc_reasons_pred"] = qc["qc_pass"], qc["qc_reasons"]
            rows.append(out)
    return rows


def summary(rows: list[dict]) -> dict:
    """Dice means; LVEF/RVEF errors in points (mean, mean absolute); volume errors in %."""
    out: dict = {"dice": {n: round(float(np.mean([r[f"dice_{n}"] for r in rows])), 4)
                          for n in NAMES.values()}}
    for src in ("pred", "seg_sa"):
        s: dict = {}
        for k in ("lvef_pct", "rvef_pct"):
            err = np.array([r[f"{k}_{src}"] - r[f"{k}_true"] for r in rows])
            s[k.replace("_pct", "_error_points")] = {"mean": round(float(err.mean()), 2),
                                                     "mean_abs": round(float(np.abs(err).mean()), 2),
                                                     "max_abs": round(float(np.abs(err).max()), 2)}
        for k in ("lvedv_ml", "lvesv_ml", "lvm_g"):
            err = np.array([100 * (r[f"{k}_{src}"] / r[f"{k}_true"] - 1) for r in rows])
            s[k.rsplit("_", 1)[0] + "_error_pct"] = {"mean": round(float(err.mean()), 2),
                                                     "mean_abs": round(float(np.abs(err).mean()), 2)}
        s["basal_es_lv_voxels"] = [r[f"basal_es_lv_voxels_{src}"] for r in rows]
        out["phenotypes_" + src] = s
    wrong = [r for r in rows if abs(r["lvef_pct_pred"] - r["lvef_pct_true"]) > 5]
    out["lvef_off_by_more_than_5_points"] = {
        "subjects": len(wrong), "flagged_by_qc": sum(not r["qc_pass_pred"] for r in wrong)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--contrast", choices=CONTRASTS, default="ssfp",
                    help="train and test on this contrast (in domain)")
    ap.add_argument("--train-subjects", type=int, default=16, help="first N of 0-15")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per cine [the phantom's default, 20]; make demo uses 10")
    ap.add_argument("--epochs", default="6")
    ap.add_argument("--patch", default=None, help="stage-2 patch [train's plan]")
    ap.add_argument("--channels", default=None, help="stage-2 width [train's plan]")
    ap.add_argument("--augment", default="standard")
    ap.add_argument("--val-fraction", default="0.125")
    ap.add_argument("--domain-shift", action="store_true",
                    help="also test on the other contrast")
    ap.add_argument("--model", type=Path, default=None,
                    help="evaluate this model folder instead of training one")
    ap.add_argument("--predict-extra", default="", help='more predict options, one string: '
                    '--predict-extra "--no-ventricle-anatomy"')
    ap.add_argument("--extra", default="", help='more train options, one string: '
                    '--extra "--temporal-context ed"')
    ap.add_argument("--artefacts", action="store_true",
                    help="also test on the in-domain test subjects with each MR artefact")
    ap.add_argument("--calibrate", default="", help="comma-separated calibrate methods "
                    "(temperature,local): ECE uncalibrated and calibrated")
    ap.add_argument("--calibrate-extra", default="", help="more calibrate options, one string")
    ap.add_argument("--eval-frames", default="ed,es", help="frames of each test cine the "
                    "artefact and calibration tests use (ed, es, or frame numbers)")
    ap.add_argument("--robustness-only", action="store_true",
                    help="skip the whole-cine tests (only --artefacts / --calibrate)")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    home = cohort(a.workdir, a.contrast, a.frames)
    train = subsheet(home, range(a.train_subjects), a.workdir / f"train{a.train_subjects}_"
                     f"{a.contrast}.csv")
    tests = {a.contrast: subsheet(home, range(16, 24), a.workdir / f"test8_{a.contrast}.csv")}
    if a.domain_shift:
        other = [c for c in CONTRASTS if c != a.contrast][0]
        tests[other] = subsheet(cohort(a.workdir, other, a.frames), range(16, 24),
                                a.workdir / f"test8_{other}.csv")
    model = a.model or a.workdir / f"model_{a.tag}"
    t0, c0 = time.perf_counter(), _child_cpu()
    if a.model is None:
        arch = [*(["--patch", a.patch] if a.patch else []),
                *(["--channels", a.channels] if a.channels else [])]
        medflow("segment-cascaded", "train", "--samplesheet", str(train), "--out", str(model),
                "--epochs", a.epochs, *arch, "--augment", a.augment,
                "--val-fraction", a.val_fraction, *shlex.split(a.extra))
    plan = json.loads((model / "model.json").read_text()).get("plan", {})
    report = {"tag": a.tag, "contrast": a.contrast, "model": str(model),
              "train_subjects": a.train_subjects, "extra": a.extra,
              "predict_extra": a.predict_extra, "epochs": a.epochs,
              "train_s": round(time.perf_counter() - t0, 1),
              "train_cpu_s": round(_child_cpu() - c0, 1), "tests": {},
              "plan": {k: plan.get(k) for k in ("patch", "levels", "channels2",
                                                "stage1_factor", "given")}}
    for name, sheet in ({} if a.robustness_only else tests).items():
        res = a.workdir / f"pred_{a.tag}_{name}"
        t0 = time.perf_counter()
        medflow("segment-cascaded", "predict", "--model", str(model), "--samplesheet",
                str(sheet), "--outdir", str(res), *shlex.split(a.predict_extra))
        rows = subject_rows(sheet, res)
        report["tests"][name] = {"predict_s": round(time.perf_counter() - t0, 1),
                                 **summary(rows)}
        with open(a.workdir / f"subjects_{a.tag}_{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if a.artefacts or a.calibrate:
        report["robustness_frames"] = a.eval_frames
    if a.artefacts:
        frames = robustness.frame_sheet(tests[a.contrast], a.workdir, a.eval_frames)
        report["artefacts"] = robustness.artefact_rows(medflow, model, frames, a.workdir,
                                                       a.tag, shlex.split(a.predict_extra))
    if a.calibrate:
        name = [n for n in tests if n != a.contrast][0] if a.domain_shift else a.contrast
        frames = robustness.frame_sheet(tests[name], a.workdir, a.eval_frames)
        models = robustness.calibrated_models(medflow, model, train, a.workdir, a.tag,
                                              a.calibrate.split(","),
                                              shlex.split(a.calibrate_extra))
        report["calibration"] = {name: robustness.calibration_rows(
            medflow, model, models, frames, a.workdir, f"{a.tag}_{name}",
            shlex.split(a.predict_extra))}
    print(json.dumps(report, indent=1))
    (a.workdir / f"report_{a.tag}.json").write_text(json.dumps(report, indent=1))


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
