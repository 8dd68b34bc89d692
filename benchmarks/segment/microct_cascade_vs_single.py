"""Cascade vs single stage at the same memory budget on microCT phantoms.

Both models use the same stage-2 patch, widths and depth (the patch bounds training and
inference memory); the cascade adds the stage-1 meU-net on the 4x-downsampled volume.
Trains on subjects 0..n-2, tests on the last one; prints Dice per class, training time
and peak training RSS for both.

    python benchmarks/segment/microct_cascade_vs_single.py --workdir /tmp/mct --shape 128,128,128
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

RUN = ("import resource, sys\nfrom medflow.cli import main\nsys.argv = ['medflow'] + sys.argv[1:]\n"
       "try:\n    main()\nfinally:\n    print('PEAK_RSS_MB', resource.getrusage("
       "resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n")


def medflow(*args: str) -> float:
    """Run a medflow command in its own process; returns its peak RSS (MB)."""
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_MB")][-1]
    return float(line.split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--shape", default="128,128,128")
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--epochs", default="40")
    ap.add_argument("--patch", default="48,48,48")
    ap.add_argument("--channels", default="8")
    ap.add_argument("--levels", default="3")
    a = ap.parse_args()
    data = a.workdir / "cohort"
    if not (data / "samplesheet.csv").exists():
        medflow("demo-cohort", "--kind", "microct", "--shape", a.shape, "--subjects",
                str(a.subjects), "--out", str(data))
    rows = list(csv.DictReader(open(data / "samplesheet.csv")))
    train = a.workdir / "train.csv"
    with open(train, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "image", "seg"])
        w.writeheader()
        for r in rows[:-1]:
            w.writerow({"subject": r["subject"], "image": str(data / r["image"]),
                        "seg": str(data / r["seg"])})
    test = rows[-1]
    truth = np.asarray(nib.load(data / test["seg"]).dataobj)
    report = {}
    for name, extra in (("cascade", []), ("single_stage", ["--single-stage"])):
        model = a.workdir / f"model_{name}"
        t0 = time.perf_counter()
        rss = medflow("segment-cascaded", "train", "--samplesheet", str(train), "--image-role",
                      "image", "--label-role", "seg", "--out", str(model), "--epochs", a.epochs,
                      "--patch", a.patch, "--channels", a.channels, "--levels", a.levels,
                      "--stage1-factor", "4", "--val-fraction", "0", *extra)
        train_s = time.perf_counter() - t0
        out = a.workdir / f"pred_{name}.nii"
        prss = medflow("segment-cascaded", "predict", "--model", str(model), "--input",
                       str(data / test["image"]), "--output", str(out))
        pred = np.asarray(nib.load(out).dataobj)
        dice = {}
        for c in (1, 2, 3):
            p, t = pred == c, truth == c
            dice[f"class_{c}"] = round(float(2 * (p & t).sum() / max(1, p.sum() + t.sum())), 4)
        report[name] = {"dice": dice, "mean_dice": round(float(np.mean(list(dice.values()))), 4),
                        "train_s": round(train_s, 1), "train_peak_rss_mb": round(rss),
                        "predict_peak_rss_mb": round(prss)}
        print(name, json.dumps(report[name]), flush=True)
    (a.workdir / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
