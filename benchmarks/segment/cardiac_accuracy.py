"""Cardiac accuracy experiment: train on 16 demo subjects, test on 8 others (Dice per class),
optionally also on the same 8 subjects imaged with the other contrast (domain shift).

Run (reduced setting first):
    python benchmarks/segment/cardiac_accuracy.py --workdir /tmp/cardiac --epochs 3 \
        --augment standard --tag std
Architecture: train's plan from the data unless --patch / --channels / --extra say
otherwise (the pre-planning setting was --patch 96,96,16 --channels 8 --extra --levels 4).
Every step calls the medflow command line, so the numbers are what a user gets.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

NAMES = {1: "LV", 2: "myocardium", 3: "RV"}


def medflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medflow", *args], check=True)


def cohort(workdir: Path, contrast: str) -> Path:
    out = workdir / contrast
    if not (out / "samplesheet.csv").exists():
        medflow("demo-cohort", "--kind", "cardiac", "--subjects", "24", "--seed", "0",
                "--contrast", contrast, "--out", str(out))
    return out / "samplesheet.csv"


def subsheet(sheet: Path, rows: range, path: Path) -> Path:
    with open(sheet) as fh:
        data = list(csv.DictReader(fh))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "sa", "seg_sa"])
        w.writeheader()
        for r in (data[i] for i in rows):
            w.writerow({"subject": r["subject"], "sa": str(sheet.parent / r["sa"]),
                        "seg_sa": str(sheet.parent / r["seg_sa"])})
    return path


def dice_table(sheet: Path, results: Path) -> dict[str, float]:
    scores = {n: [] for n in NAMES.values()}
    with open(sheet) as fh:
        for row in csv.DictReader(fh):
            sub = row["subject"]
            truth = np.asarray(nib.load(row["seg_sa"]).dataobj)
            pred = np.asarray(nib.load(results / sub / f"{sub}_sa_seg.nii.gz").dataobj)
            for c, name in NAMES.items():
                a, b = pred == c, truth == c
                scores[name].append(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return {k: round(float(np.mean(v)), 4) for k, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--epochs", default="6")
    ap.add_argument("--patch", default=None, help="stage-2 patch [train's plan]")
    ap.add_argument("--channels", default=None, help="stage-2 width [train's plan]")
    ap.add_argument("--augment", default="standard")
    ap.add_argument("--val-fraction", default="0.125")
    ap.add_argument("--domain-shift", action="store_true", help="also test on gre contrast")
    ap.add_argument("--extra", nargs="*", default=[], help="more train options")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    ssfp = cohort(a.workdir, "ssfp")
    train = subsheet(ssfp, range(16), a.workdir / "train16.csv")
    tests = {"ssfp": subsheet(ssfp, range(16, 24), a.workdir / "test8_ssfp.csv")}
    if a.domain_shift:
        tests["gre"] = subsheet(cohort(a.workdir, "gre"), range(16, 24),
                                a.workdir / "test8_gre.csv")
    model = a.workdir / f"model_{a.tag}"
    t0 = time.perf_counter()
    arch = [*(["--patch", a.patch] if a.patch else []),
            *(["--channels", a.channels] if a.channels else [])]
    medflow("segment-cascaded", "train", "--samplesheet", str(train), "--out", str(model),
            "--epochs", a.epochs, *arch, "--augment", a.augment, "--val-fraction",
            a.val_fraction, *a.extra)
    plan = json.loads((model / "model.json").read_text()).get("plan", {})
    report = {"tag": a.tag, "train_s": round(time.perf_counter() - t0, 1), "dice": {},
              "plan": {k: plan.get(k) for k in ("patch", "levels", "channels2",
                                                "stage1_factor", "given")}}
    for name, sheet in tests.items():
        res = a.workdir / f"pred_{a.tag}_{name}"
        t0 = time.perf_counter()
        medflow("segment-cascaded", "predict", "--model", str(model), "--samplesheet",
                str(sheet), "--outdir", str(res))
        report[f"predict_{name}_s"] = round(time.perf_counter() - t0, 1)
        report["dice"][name] = dice_table(sheet, res)
    print(json.dumps(report, indent=1))
    (a.workdir / f"report_{a.tag}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
