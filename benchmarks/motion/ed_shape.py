"""`estimate-motion-mesh fit` with and without `--ed-shape` on phantom subjects, against
`truth.json`: signed errors of the volumes, LVEF and LV mass, the ED mesh's mean distance
to the true ED boundaries (``gt_ed``, 1.25 mm), and the mean error of the fitted
short-axis slice shifts.

Configurations: ``base`` (no shape), ``gt_w<W>`` (the phantom's true ED labels as the
shape: the upper bound), ``sr_w<W>`` (a ``super-resolve predict`` output per subject,
``<superres>/<subject>/hr_ed.nii.gz``), ``W`` the weight of the shape's planes against
the acquired planes (FitOptions.ed_shape_weight); a ``sa_`` prefix fits the short axis
alone (no long-axis views).

    OMP_NUM_THREADS=1 python benchmarks/motion/ed_shape.py --cohort /tmp/c --superres /tmp/sr \\
        --out /tmp/ed_shape base gt_w1 sr_w1 sa_base sa_gt_w1 sa_sr_w1
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from scipy import ndimage

from medflow.motion.fit import FitOptions
from medflow.motion.workflow import fit_files

SURFACES = (("lv_endo", (1,)), ("lv_epi", (1, 2)), ("rv_endo", (3,)))
MEASURES = (("lvedv_ml", "lvedv_ml"), ("lvesv_ml", "lvesv_ml"), ("lvef_pct", "lvef_pct"),
            ("lvm_g", "lv_mass_g"), ("rvedv_ml", "rvedv_ml"), ("rvef_pct", "rvef_pct"))


def surface_error(vertices: pd.DataFrame, gt: Path) -> dict[str, float]:
    """Mean distance (mm) of each surface's ED vertices to its true boundary (half-way
    between voxel centres of the 1.25 mm truth)."""
    im = nib.load(gt)
    lab, sp = np.asarray(im.dataobj), im.header.get_zooms()[:3]
    half, out = 0.5 * min(sp), {}
    for name, labels in SURFACES:
        m = np.isin(lab, labels)
        d = np.where(m, ndimage.distance_transform_edt(m, sampling=sp),
                     ndimage.distance_transform_edt(~m, sampling=sp)) - half
        sel = vertices[vertices.surface == name][["x_ed_mm", "y_ed_mm", "z_ed_mm"]]
        ijk = apply_affine(np.linalg.inv(im.affine), sel.to_numpy())
        out[f"{name}_mm"] = float(np.mean(ndimage.map_coordinates(d, ijk.T, order=1,
                                                                  mode="nearest")))
    return out


def run(cohort: Path, superres: Path | None, out: Path, config: str, subject: str) -> dict:
    sa_only = config.startswith("sa_")
    kind, _, weight = config.removeprefix("sa_").partition("_w")
    shape = {"base": None, "gt": cohort / subject / "gt_ed.nii.gz",
             "sr": None if superres is None else superres / subject / "hr_ed.nii.gz"}[kind]
    if kind == "sr" and shape is None:
        raise SystemExit("sr_* configurations need --superres")
    folder = out / config / subject
    if not (folder / f"{subject}_phenotypes.parquet").exists():
        la = (None, None) if sa_only else (cohort / subject / "seg_la_2ch.nii.gz",
                                           cohort / subject / "seg_la_4ch.nii.gz")
        opts = replace(FitOptions(), ed_shape_weight=float(weight or 1.0))
        fit_files(cohort / subject / "seg_sa.nii.gz", *la, folder, subject, opts, 0, 1, shape)
    ph = pd.read_parquet(folder / f"{subject}_phenotypes.parquet").iloc[0]
    side = json.loads((folder / f"{subject}_motion.json").read_text())
    truth = json.loads((cohort / subject / "truth.json").read_text())
    row = {"config": config, "subject": subject}
    row.update({f"{k}_err": float(ph[k] - truth[t]) for k, t in MEASURES})
    row.update(surface_error(pd.read_parquet(folder / f"{subject}_vertices.parquet"),
                             cohort / subject / "gt_ed.nii.gz"))
    shifts = np.asarray(side["geometry"]["slice_shifts_mm"])
    row["shift_err_mm"] = float(np.linalg.norm(shifts - truth["slice_shifts_mm"], axis=1).mean())
    row["total_s"] = side["timings"].get("total_s")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", type=Path, required=True, help="medflow demo-cohort folder")
    ap.add_argument("--superres", type=Path, help="<subject>/hr_ed.nii.gz of super-resolve")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--subjects", default="", help="comma-separated (default: all)")
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    subjects = (args.subjects.split(",") if args.subjects else
                sorted(p.parent.name for p in args.cohort.glob("*/truth.json")))
    rows = [run(args.cohort, args.superres, args.out, c, s)
            for c in args.configs for s in subjects]
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "ed_shape.csv", index=False)
    pd.set_option("display.width", 250)
    print(df.round(2).to_string(index=False))
    print("\nmean |error| per configuration")
    print(df.drop(columns="subject").groupby("config", sort=False)
          .agg(lambda x: np.mean(np.abs(x))).round(2).to_string())


if __name__ == "__main__":
    main()
