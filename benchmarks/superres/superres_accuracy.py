"""Super-resolution accuracy on held-out demo-cohort subjects (every number of the README).

For each test subject and frame (ED, ES): each method super-resolves the short-axis labels
(the ground-truth `seg_sa`, or a segment-cascaded prediction) onto the subject's `gt_*`
grid; Dice and HD95 per label against `gt_*`; the latent method's per-slice shifts against
`truth.json`; the joint method's image against `hr_*` (PSNR, SSIM; PSNR also over the
voxels the stack covers, as outside it B-spline writes 0) beside SimpleITK's B-spline. CPU seconds per frame are process times of this single-threaded process.

Run (after writing the cohorts and training the models, see README.md):
    python benchmarks/superres/superres_accuracy.py --cohort W/ssfp --subjects 0-9 \
        --prior W/prior --joint W/joint --pred W/segpred --out W/accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medflow.io.images import read_image
from medflow.superres.baselines import bspline_image, sdf_labels, stack_coverage
from medflow.superres.inputs import frames_of, select_frames
from medflow.superres.latent import FitOptions
from medflow.superres.metrics import label_scores, psnr, ssim
from medflow.superres.modelio import load_joint, load_model
from medflow.superres.run import FrameResult, super_resolve_frame

NAMES = {1: "lv", 2: "myo", 3: "rv"}


def shift_errors(result: dict, truth: dict, la: bool) -> dict:
    """Per-slice shift error (mm) on the slices that hold labels; without long-axis views
    the mean shift is not identifiable, so both stacks are compared with zero mean."""
    est = np.asarray(result["slice_shifts_mm"])
    true = np.asarray(truth["slice_shifts_mm"])
    has = np.asarray(result["slice_has_labels"], bool)
    if not la:
        true = true - true[has].mean(axis=0)
    err = np.linalg.norm(est - true, axis=1)[has]
    return {"shift_err_mean_mm": float(err.mean()), "shift_err_max_mm": float(err.max()),
            "shift_within_1mm_pct": float(100 * (err <= 1.0).mean()),
            "shift_true_mean_mm": float(np.linalg.norm(true, axis=1)[has].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--subjects", default="0-9")
    ap.add_argument("--prior", type=Path)
    ap.add_argument("--joint", type=Path)
    ap.add_argument("--pred", type=Path, help="segment-cascaded batch output folder")
    ap.add_argument("--methods", default="nearest,linear,sdf,sdf_true,latent,latent_la,"
                    "latent_la_unrefined,latent_prior,latent_la_prior,joint,joint_la",
                    help="latent*: the fitted shifts undone on the stack (interpolated like "
                         "sdf); *_la: with the long axis (shifts refined on it; "
                         "*_unrefined: not); *_prior: the decoded shape instead; "
                         "sdf_true: sdf with truth.json's shifts undone (the ceiling); "
                         "joint: the --joint model (one trained with --prior motion-corrects "
                         "with it, joint_la with the long axis too)")
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lo, hi = (int(v) for v in a.subjects.split("-"))
    methods = a.methods.split(",")
    prior = load_model(a.prior, "latent")[0] if a.prior and any(
        m.startswith("latent") for m in methods) else None
    joint, _, joint_prior = load_joint(a.joint) if a.joint and any(
        m.startswith("joint") for m in methods) else (None, None, None)
    sources = {"gt_seg": None} | ({"predicted_seg": a.pred} if a.pred else {})
    rows = []
    for i in range(lo, hi + 1):
        sub = f"sub-{i:03d}"
        folder = a.cohort / sub
        truth = json.loads((folder / "truth.json").read_text())
        image = read_image(folder / "sa.nii.gz")
        for source, pred_dir in sources.items():
            seg_path = folder / "seg_sa.nii.gz" if pred_dir is None else \
                pred_dir / sub / f"{sub}_sa_seg.nii.gz"
            seg = read_image(seg_path, kind="label")
            gt_frames = dict(select_frames(read_image(folder / "seg_sa.nii.gz", kind="label"),
                                           "ed,es"))
            for frame, t in gt_frames.items():
                gt = read_image(folder / f"gt_{frame}.nii.gz", kind="label")
                hr = read_image(folder / f"hr_{frame}.nii.gz")
                stack = frames_of(seg)[..., t]
                views = [(frames_of(v)[..., t], v.affine) for v in
                         (read_image(folder / f"seg_la_{n}.nii.gz", kind="label")
                          for n in ("2ch", "4ch"))]
                for method in methods:
                    if method.startswith("latent") and prior is None or \
                            method.startswith("joint") and joint is None:
                        continue
                    base = method.split("_")[0]
                    la = method.startswith(("latent_la", "joint_la"))
                    t0 = time.process_time()
                    frame_image = frames_of(image)[..., t]
                    if method == "sdf_true":  # the ceiling: truth.json's shifts undone
                        true_shifts = np.asarray(truth["slice_shifts_mm"])
                        res = FrameResult(
                            sdf_labels(stack, seg.affine, gt.affine, gt.shape3,
                                       shifts_mm=true_shifts),
                            bspline_image(frame_image, seg.affine, gt.affine, gt.shape3,
                                          shifts_mm=true_shifts))
                    else:
                        res = super_resolve_frame(
                            base, stack, seg.affine, gt.affine, gt.shape3,
                            net=prior if base == "latent" else joint,
                            image=frame_image if base in ("joint", "sdf", "latent") else None,
                            long_axis=views if la else (),
                            fit_options=FitOptions(
                                iterations=a.iterations,
                                shape_from="prior" if method.endswith("_prior") else "stack",
                                refine_steps=0 if method.endswith("_unrefined") else 150),
                            seed=0, prior=joint_prior if base == "joint" else None)
                    cpu = time.process_time() - t0
                    row = {"subject": sub, "frame": frame, "source": source, "method": method,
                           "cpu_s": round(cpu, 3),
                           **label_scores(res.labels, np.asarray(gt.data), gt.spacing,
                                          NAMES)}
                    if "slice_shifts_mm" in res.info:
                        row.update(shift_errors(res.info, truth, la))
                    if res.image is not None:
                        ref = np.asarray(hr.data)
                        row["psnr_db"] = psnr(res.image, ref)
                        row["ssim"] = ssim(res.image, ref)
                        # where the stack says something: outside it every method guesses
                        covered = stack_coverage(stack.shape, seg.affine, gt.affine,
                                                 gt.shape3)
                        row["psnr_in_stack_db"] = psnr(res.image[covered], ref[covered])
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                      for k, v in row.items()}), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    for col in [c for c in table.columns if c.startswith("vol_err_")]:
        table[f"abs_{col}"] = table[col].abs()
    table.to_csv(a.out / f"rows{a.tag}.csv", index=False)
    summary = table.drop(columns=["subject", "frame"]).groupby(["source", "method"]).mean()
    summary.to_csv(a.out / f"summary{a.tag}.csv")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(summary.round(3))


if __name__ == "__main__":
    main()
