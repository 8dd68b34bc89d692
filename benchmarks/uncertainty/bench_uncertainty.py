"""Benchmark: the one-pass QU-BraTS score against a plain per-threshold loop (the reference),
on a BraTS-sized case (240 x 240 x 155, 1 mm) with three regions (WT, TC, ET).

  ours:      medflow.uncertainty.score_case (voxels outside the brain that no region labels
             dropped once; per region one threshold-bin map, one bincount, a cumulative sum)
  reference: REFERENCE below, written straight from the definition (the challenge's
             evaluation script does the same, in float32): for every threshold, filter the
             voxels with u > tau, recompute Dice on the whole volume and FTP / FTN in the mask.

The case is the BraTS phantom with its simulated prediction and uncertainty maps (uint8),
scored as uint8 and again as float32 maps (with 0.25 added, so values fall between the
thresholds). Prints the largest absolute difference over all AUCs and scores (must be
< 1e-6; it is 0 in practice), the time of each side, their ratio (target >= 50) and the
peak memory of ours (tracemalloc: numpy buffers).

Run:  python benchmarks/uncertainty/bench_uncertainty.py [--repeats 3] [--shape 240,240,155]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from medflow.phantom.brats import brats_spacing, render_brats, sample_brats_parameters
from medflow.phantom.brats_predictions import simulate_predictions
from medflow.uncertainty import auc, brats_regions, score_case, thresholds

EPS = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------------------
# REFERENCE: the QU-BraTS definition, one threshold at a time (no shortcuts).
# ---------------------------------------------------------------------------------------
def reference_region(truth, pred, unc, mask, num_points=40):
    """AUC_Dice, AUC_FTP, AUC_FTN and the score of one binary region, by the definition."""
    taus = thresholds(num_points)
    tp_all = np.count_nonzero(truth & pred & mask)
    tn_all = np.count_nonzero(~truth & ~pred & mask)
    dice, ftp, ftn = [], [], []
    for tau in taus:
        kept = ~(unc > tau)  # voxels with uncertainty above tau are filtered out
        t, p = truth & kept, pred & kept
        inter, total = np.count_nonzero(t & p), np.count_nonzero(t) + np.count_nonzero(p)
        dice.append(1.0 if total == 0 else 2.0 * inter / total)
        ftp.append((tp_all - np.count_nonzero(truth & pred & mask & kept)) / (tp_all + EPS))
        ftn.append((tn_all - np.count_nonzero(~truth & ~pred & mask & kept)) / (tn_all + EPS))
    a = [auc(taus, v) for v in (dice, ftp, ftn)]
    return {"auc_dice": a[0], "auc_ftp": a[1], "auc_ftn": a[2],
            "score": (a[0] + (1 - a[1]) + (1 - a[2])) / 3}


def reference_case(truth, pred, unc, mask, regions, num_points=40):
    row = {}
    for r in regions:
        for k, v in reference_region(r.mask(truth), r.mask(pred), unc[r.name], mask,
                                     num_points).items():
            row[f"{r.key}_{k}"] = v
    row["score"] = float(np.mean([row[f"{r.key}_score"] for r in regions]))
    return row
# ---------------------------------------------------------------------------------------


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", default="240,240,155")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(2020)
    vols = render_brats(sample_brats_parameters(rng), shape)
    arrays, _ = simulate_predictions(vols["seg"], vols["mask"], brats_spacing(shape), rng)
    truth, pred, mask = vols["seg"], arrays["pred"], vols["mask"] > 0
    regions = brats_regions()
    unc8 = {r.name: arrays[f"unc_{r.key}"] for r in regions}
    uncf = {k: v.astype(np.float32) + np.float32(0.25) for k, v in unc8.items()}
    print(f"case {shape}, {truth.size:,} voxels, brain {mask.mean():.1%}, regions "
          f"{[r.name for r in regions]}, {len(thresholds(40))} thresholds")
    ratios = []
    for label, unc in (("uint8 maps", unc8), ("float32 maps", uncf)):
        t_ours, (ours, _) = best_time(lambda: score_case(truth, pred, unc, mask, regions),
                                      args.repeats)
        t_ref, ref = best_time(lambda: reference_case(truth, pred, unc, mask, regions), 1)
        diff = max(abs(ours[k] - ref[k]) for k in ref)
        ratios.append(t_ref / t_ours)
        print(f"{label:>13}: ours {t_ours:.3f} s, reference {t_ref:.2f} s, "
              f"ratio {t_ref / t_ours:.0f}x, max |difference| {diff:.2e}, "
              f"score {ours['score']:.6f}")
        assert diff < 1e-6, diff
    tracemalloc.start()
    score_case(truth, pred, unc8, mask, regions)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak memory of ours (uint8 maps): {peak / 2**20:.0f} MiB "
          f"({peak / truth.size:.1f} bytes per voxel)")
    print(f"minimum speed ratio {min(ratios):.0f}x (target >= 50x): "
          f"{'PASS' if min(ratios) >= 50 else 'FAIL'}")


if __name__ == "__main__":
    main()
