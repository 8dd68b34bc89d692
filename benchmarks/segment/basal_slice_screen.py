"""Screen training options against the basal-slice error on tiny phantom cines (issue 16).

Tiny cines (the demo phantom at 3.6 mm pixels, 40 x 36, 10 frames; 8 subjects to train,
4 to test) keep one training run at a few minutes of one core. For each test subject it
prints Dice, LV voxels in the most basal slice at the true ES frame, and LVEF (voxel counts,
ED = frame 0) of the prediction with and without the ventricle-anatomy rule, of the
phantom's ``seg_sa``, and the truth.

Run:
    python benchmarks/segment/basal_slice_screen.py --workdir /tmp/screen --tag none
    python benchmarks/segment/basal_slice_screen.py --workdir /tmp/screen --tag ed \
        --extra "--temporal-context ed"
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from medflow.cardiac import voxel_phenotypes

TRAIN, TEST = range(1, 9), range(9, 13)


def tiny_cine(seed: int, frames: int = 10, factor: int = 2, shape_xy=(40, 36)):
    """The demo phantom's short-axis cine with pixels ``factor`` times larger."""
    from medflow.io import Volume
    from medflow.phantom import cine_planes as cp
    from medflow.phantom.appearance import draw_appearance
    from medflow.phantom.cardiac import cine_series, frame_times, subject_truth
    from medflow.phantom.heart import HeartModel
    from medflow.phantom.thorax import Thorax

    heart = HeartModel.from_seed(seed, frames)
    body = Thorax.around(heart, np.random.default_rng([seed, 1]))
    look = draw_appearance("ssfp", np.random.default_rng([seed, 2]), heart.params.origin)
    affine, shape = cp.sa_geometry(heart)
    centre = affine[:3, :3] @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 0]) + affine[:3, 3]
    small = affine.copy()
    small[:3, :2] *= factor
    small[:3, 3] = centre - small[:3, :3] @ np.array([(shape_xy[0] - 1) / 2,
                                                       (shape_xy[1] - 1) / 2, 0])
    img, lab = cine_series(heart, body, look, small, (*shape_xy, shape[2]), frame_times(frames),
                           cp.SA_SLICE_THICKNESS_MM, np.random.default_rng([seed, 3]))
    return Volume(img, small), Volume(lab, small, "label"), subject_truth(heart, frames)


def make_cohort(root: Path) -> tuple[Path, Path]:
    from medflow.io import write_nifti

    sheets = {}
    for name, seeds in (("train", TRAIN), ("test", TEST)):
        sheets[name] = root / f"{name}.csv"
        if sheets[name].exists():
            continue
        rows = []
        for s in seeds:
            img, lab, truth = tiny_cine(s)
            d = root / f"t{s}"
            d.mkdir(parents=True, exist_ok=True)
            write_nifti(img, d / "sa.nii.gz")
            write_nifti(lab, d / "seg_sa.nii.gz")
            (d / "truth.json").write_text(json.dumps(
                {k: v for k, v in truth.items() if not isinstance(v, list)}))
            rows.append({"subject": f"t{s}", "sa": str(d / "sa.nii.gz"),
                         "seg_sa": str(d / "seg_sa.nii.gz"), "truth": str(d / "truth.json")})
        with open(sheets[name], "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return sheets["train"], sheets["test"]


def medflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medflow", *args], check=True)


def evaluate(sheet: Path, pred: Path) -> dict:
    errors, dice, basal = [], [], []
    for row in csv.DictReader(open(sheet)):
        sub = row["subject"]
        img = nib.load(row["seg_sa"])
        gt = np.asarray(img.dataobj)
        pr = np.asarray(nib.load(pred / sub / f"{sub}_sa_seg.nii.gz").dataobj)
        truth = json.loads(Path(row["truth"]).read_text())
        p = voxel_phenotypes(pr, img.header.get_zooms()[:3])
        errors.append(p["lvef_pct"] - truth["lvef_pct"])
        dice.append([2 * ((pr == c) & (gt == c)).sum() / max(1, (pr == c).sum() + (gt == c).sum())
                     for c in (1, 2, 3)])
        basal.append(int((pr[..., 0, truth["es_frame"]] == 1).sum()))
    return {"lvef_error_points": {"mean": round(float(np.mean(errors)), 2),
                                  "mean_abs": round(float(np.mean(np.abs(errors))), 2)},
            "dice_lv_myo_rv": [round(float(v), 4) for v in np.mean(dice, axis=0)],
            "basal_es_lv_voxels": basal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--epochs", default="12")
    ap.add_argument("--extra", default="", help="more train options, one string")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    train, test = make_cohort(a.workdir)
    model = a.workdir / f"model_{a.tag}"
    if not (model / "model.json").exists():
        medflow("segment-cascaded", "train", "--samplesheet", str(train), "--out", str(model),
                "--epochs", a.epochs, "--patch", "40,36,12", "--channels", "8", "--levels",
                "3", "--val-fraction", "0", "--seed", "1", *shlex.split(a.extra))
    report = {"tag": a.tag, "extra": a.extra, "epochs": a.epochs}
    for flag in ("--ventricle-anatomy", "--no-ventricle-anatomy"):
        pred = a.workdir / f"pred_{a.tag}{flag.replace('--', '_')}"
        medflow("segment-cascaded", "predict", "--model", str(model), "--samplesheet",
                str(test), "--outdir", str(pred), flag)
        report[flag.lstrip("-")] = evaluate(test, pred)
    print(json.dumps(report, indent=1))
    (a.workdir / f"screen_{a.tag}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
