#!/usr/bin/env python3
"""cluster-unsupervised benchmark: accuracy on the mixed demo set against k-means on
downsampled pixels, the samplesheet column check on swapped columns, and assign's speed
and memory on a stream of 100,000 slices.

    python benchmarks/cluster/bench_cluster.py --workdir /tmp/bench_cluster            # all
    python benchmarks/cluster/bench_cluster.py --workdir /tmp/bench_cluster --only accuracy
    python benchmarks/cluster/bench_cluster.py --workdir /tmp/bench_cluster --only scale

Each part prints one JSON line; times are wall and CPU seconds of the child processes
(the machine may be shared: compare the CPU times).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mixed_set import build  # noqa: E402

MEDFLOW = [sys.executable, "-m", "medflow"]


def run(*args: str) -> dict:
    """Run medflow in a child process; wall and CPU seconds of that child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*MEDFLOW, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"medflow {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1), "stdout": proc.stdout.strip()}


def pixel_baseline(sheet: Path, k: int, seed: int, side: int = 16) -> dict:
    """k-means on downsampled pixels: each series' slices (the same ones the encoder
    sees), averaged and shrunk to side x side, flattened; same k and seed."""
    from medflow.cluster.catalogue import entries_from_samplesheet, iter_series, truth_labels
    from medflow.cluster.clustering import kmeans, scores_from_counts
    from medflow.cluster.slices import series_slices
    from medflow.io.samplesheet import load_samplesheet

    df = load_samplesheet(sheet, kind="generic", check_files=False).drop(columns=["group"])
    entries = entries_from_samplesheet(df, truth_labels(sheet, "group"))
    feats, truth = [], []
    for s in iter_series(entries, []):
        sl, _ = series_slices(s.volume.data, s.volume.spacing, 8, 2, side)
        feats.append(sl.mean(0).ravel())
        truth.append(s.entry.truth)
    x = np.asarray(feats, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels, _ = kmeans(x, k, seed)
    return {**scores_from_counts(Counter(zip(truth, labels.tolist()))),
            "views_only": scores_from_counts(Counter(zip(map(view, truth), labels.tolist())))}


def view(truth: str) -> str:
    """The view alone: SSFP and GRE short axes are both ``cardiac/sa``."""
    group, column = truth.split("/")
    return f"cardiac/{column}" if group in ("ssfp", "gre") else truth


def accuracy(work: Path, seed: int, steps: int, refine: int, modes: list[str]) -> dict:
    import pandas as pd

    from medflow.cluster.clustering import scores_from_counts

    sheet = build(work / "mixed", seed=seed)
    with open(sheet) as fh:
        rows = list(csv.DictReader(fh))
    truth = Counter(f"{r['group']}/{c}" for r in rows for c in list(r)[2:] if r[c])
    out: dict = {"images": sum(truth.values()), "categories": len(truth),
                 "sizes": dict(sorted(truth.items())),
                 "largest_to_smallest": max(truth.values()) / min(truth.values())}
    common = ["--samplesheet", str(sheet), "--seed", str(seed), "--steps", str(steps),
              "--refine-steps", str(refine)]
    for name, extra in (("k_true", ["--k", str(len(truth))]), ("k_chosen", [])):
        if name not in modes:
            continue
        model = work / f"model_{name}"
        # --truth-column only keeps the group column from being read as images: training
        # never sees it (it is scored by assign)
        t = run("cluster-unsupervised", "train", *common, "--truth-column", "group",
                "--out", str(model), *extra)
        res = work / f"assign_{name}"
        a = run("cluster-unsupervised", "assign", "--model", str(model), "--samplesheet",
                str(sheet), "--truth-column", "group", "--out", str(res))
        facts = json.loads((res / "clusters.json").read_text())
        table = pd.read_parquet(res / "clusters.parquet")
        k = len(facts["cluster_sizes"])
        slices = int(table["n_slices"].sum())
        views = scores_from_counts(Counter(zip(map(view, table["truth"]), table["cluster"])))
        per_category = {t: dict(Counter(g["cluster"].tolist()))
                        for t, g in table.groupby("truth")}
        out[name] = {"k": k, **facts["scores"], "views_only": views,
                     "train": {x: t[x] for x in ("wall_s", "cpu_s")},
                     "assign": {x: a[x] for x in ("wall_s", "cpu_s")},
                     "assign_slices": slices,
                     "assign_slices_per_cpu_s": round(slices / max(a["cpu_s"], 1e-9), 1),
                     "clusters_per_category": per_category,
                     "baseline_pixels_kmeans": pixel_baseline(sheet, k, seed)}
    return out


def swapped_sheet(src: Path, dst: Path, columns: list[str], share: float, seed: int
                  ) -> set[tuple[str, str]]:
    """Copy a samplesheet, swapping two image columns in enough rows that ``share`` of
    the images sit in the wrong column; returns the (subject, column) cells swapped."""
    with open(src) as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)
    n_rows = max(1, int(np.ceil(share * len(rows) * len(columns) / 2)))
    swapped = set()
    for r in rng.sample(rows, n_rows):
        a, b = rng.sample(columns, 2)
        r[a], r[b] = r[b], r[a]
        swapped |= {(r["subject"], a), (r["subject"], b)}
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return swapped


def column_check(work: Path, seed: int) -> dict:
    import pandas as pd

    from medflow.pipeline.stages import get_stage

    build(work / "mixed", seed=seed)
    out = {}
    for name, folder, columns in (("cardiac", "cardiac_ssfp", ["sa", "la_2ch", "la_4ch"]),
                                  ("brats", "brats", ["t1", "t1ce", "t2", "flair"])):
        src = work / "mixed" / folder / "samplesheet.csv"
        sheet = src.with_name("swapped.csv")
        truth = swapped_sheet(src, sheet, columns, 0.05, seed)
        res = work / f"check_{name}"
        # exactly what the pipeline's cluster stage runs (trained on the sheet in the task)
        t = run("cluster-unsupervised", "assign", "--samplesheet", str(sheet), "--out", str(res),
                "--seed", str(seed), *shlex.split(get_stage("cluster").args["image"]))
        df = pd.read_parquet(res / "clusters.parquet")
        flagged = {(s, c) for s, c in zip(df.subject[df.flagged], df.column[df.flagged])}
        out[name] = {"images": len(df), "swapped": len(truth),
                     "swapped_cells": sorted(f"{s}:{c}" for s, c in truth),
                     "found": len(truth & flagged), "false_alarms": len(flagged - truth),
                     "missed": sorted(f"{s}:{c}" for s, c in truth - flagged),
                     "k": int(df.cluster.nunique()), "wall_s": t["wall_s"], "cpu_s": t["cpu_s"]}
    return out


def scale(model_dir: Path, n_slices: int, seed: int, device: str) -> dict:
    """assign's embedding stream on generated slices: slices/s and peak RSS, measured at
    10 %, 50 % and 100 % of the stream (flat memory = streamed)."""
    code = f"""
import json, os, resource, time
import numpy as np, torch
from medflow.cluster.assign import Assigner
from medflow.cluster.data import SeriesInfo
from medflow.cluster.modelio import load_model
model, extra, card = load_model({str(model_dir)!r}, {device!r})
rng = np.random.default_rng({seed})
side = 2 * model.cfg.size                                # slices as assign stores them
pool = rng.random((64, 8, side, side), dtype=np.float32)  # reused: the stream is generated
def items(n_series):
    for i in range(n_series):
        yield SeriesInfo(f"s{{i}}", "gen", "gen", f"sub{{i}}", "", ""), pool[i % 64]
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
n_series = {n_slices} // 8
marks, out = {{n_series // 10, n_series // 2, n_series}}, []
t0, c0 = time.perf_counter(), time.process_time()
for j, a in enumerate(Assigner(model, extra, {device!r}).run(items(n_series)), 1):
    if j in marks:
        out.append({{"slices": j * 8, "wall_s": round(time.perf_counter() - t0, 1),
                     "cpu_s": round(time.process_time() - c0, 1), "rss_mb": round(rss(), 1)}})
res = {{"threads": torch.get_num_threads(), "marks": out,
        "slices_per_s_wall": round(out[-1]["slices"] / out[-1]["wall_s"], 1),
        "slices_per_cpu_s": round(out[-1]["slices"] / out[-1]["cpu_s"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}
print(json.dumps(res))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--only", choices=["accuracy", "columns", "scale"], default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--refine-steps", type=int, default=150)
    ap.add_argument("--slices", type=int, default=100_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k-modes", default="k_true,k_chosen",
                    help="accuracy runs: k_true (k = the number of categories), k_chosen "
                         "(silhouette); one per process to run them in parallel")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "accuracy"):
        print(json.dumps({"accuracy": accuracy(a.workdir, a.seed, a.steps, a.refine_steps,
                                                   a.k_modes.split(","))}))
    if a.only in (None, "columns"):
        print(json.dumps({"columns": column_check(a.workdir, a.seed)}))
    if a.only in (None, "scale"):
        model = next((a.workdir / f"model_{m}" for m in ("k_chosen", "k_true")
                      if (a.workdir / f"model_{m}").exists()), None)
        if model is None:
            sys.exit("run --only accuracy first (the scale test embeds with its model)")
        print(json.dumps({"scale": scale(model, a.slices, a.seed, a.device)}))


if __name__ == "__main__":
    main()
