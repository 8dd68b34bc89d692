"""Ranking a cohort from its stored feature table: time and peak memory against the cohort
size, streamed (``medflow suggest-annotation rank --features``) and the in-memory peer
(the whole table read with pandas, the same algorithms on full arrays: nlargest for the
scores, exact k-centre greedy, scikit-learn k-means on every unit).

    .venv/bin/python benchmarks/annotate/bench_rank.py                  # 10k and 100k
    .venv/bin/python benchmarks/annotate/bench_rank.py --sizes 10000,100000,1000000

Each run is its own process (its peak RSS is its own, read from /proc VmHWM by the parent
while it runs); CPU time is the child's user + system time. Prints one row per strategy
and size, and the ratios streamed / in-memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIMS, CLUSTERS, LABELLED = 16, 40, 0.05


def write_table(path: Path, n: int, seed: int = 0, rows: int = 8192) -> None:
    """A synthetic feature table written row group by row group (never held whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (CLUSTERS, DIMS)).astype(np.float32)
    weights = rng.dirichlet(np.ones(CLUSTERS))
    writer = None
    for start in range(0, n, rows):
        m = min(rows, n - start)
        c = rng.choice(CLUSTERS, m, p=weights)
        emb = centres[c] + rng.normal(0, 1, (m, DIMS)).astype(np.float32)
        labelled = rng.random(m) < LABELLED
        unc = np.where(labelled, np.nan, rng.gamma(2, 10, m))
        cols = {"subject": [f"sub-{i:07d}" for i in range(start, start + m)],
                "slice": np.full(m, -1, np.int64), "labelled": labelled,
                "uncertainty": unc, "gradient_norm": np.where(labelled, np.nan, unc / 1e3),
                **{f"emb_{j}": emb[:, j] for j in range(DIMS)}}
        batch = pa.table(cols)
        writer = writer or pq.ParquetWriter(str(path), batch.schema)
        writer.write_table(batch)
    writer.close()


def in_memory(path: str, strategy: str, budget: int, seed: int) -> list[str]:
    """The peer: everything in memory at once."""
    import pandas as pd

    df = pd.read_parquet(path)
    pool = df[~df["labelled"]]
    emb_cols = [c for c in df.columns if c.startswith("emb_")]
    if strategy in ("uncertainty", "gradient"):
        col = "uncertainty" if strategy == "uncertainty" else "gradient_norm"
        return pool.nlargest(budget, col)["subject"].tolist()
    if strategy == "random":
        return pool.sample(budget, random_state=seed)["subject"].tolist()
    x = pool[emb_cols].to_numpy(np.float32)
    if strategy == "coreset":
        lab = df.loc[df["labelled"], emb_cols].to_numpy(np.float32)
        mind = np.full(len(x), np.inf, np.float32)
        for i in range(0, len(lab), 256):  # exact distance to the labelled set
            part = lab[i:i + 256]
            d2 = (x * x).sum(1)[:, None] - 2 * x @ part.T + (part * part).sum(1)[None]
            mind = np.minimum(mind, np.sqrt(np.maximum(d2, 0).min(1)))
        picks = []
        for _ in range(budget):
            j = int(np.argmax(mind))
            picks.append(j)
            mind = np.minimum(mind, np.linalg.norm(x - x[j], axis=1))
        return pool["subject"].iloc[picks].tolist()
    from sklearn.cluster import KMeans

    k = min(budget + int(df["labelled"].sum()), 1000)
    km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit(x)
    dist = np.linalg.norm(x - km.cluster_centers_[km.labels_], axis=1)
    best = pd.DataFrame({"c": km.labels_, "d": dist}).groupby("c")["d"].idxmin()
    return pool["subject"].iloc[best.to_numpy()[:budget]].tolist()


def measure(argv: list[str]) -> dict:
    """Run ``argv``; wall and CPU seconds and the peak RSS (MB) of that process."""
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                peak = max([peak] + [int(line.split()[1]) for line in fh
                                     if line.startswith("VmHWM:")])
        except OSError:
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {err.strip()[-400:]}")
    return {"wall_s": time.perf_counter() - t0, "peak_mb": peak / 1024,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--strategies", default="uncertainty,gradient,random,coreset,typical")
    ap.add_argument("--workdir", default="/tmp/medflow-bench-annotate")
    ap.add_argument("--peer-only-below", type=int, default=200_000,
                    help="skip the in-memory peer above this size")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        path, strategy, budget, seed = args.worker
        print(len(in_memory(path, strategy, int(budget), int(seed))))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    medflow = [sys.executable, "-m", "medflow"]
    print(f"{'units':>9} {'strategy':>11} {'stream s':>9} {'cpu s':>7} {'peak MB':>8} "
          f"{'peer s':>8} {'peer MB':>8} {'time x':>7} {'mem x':>6}")
    for n in [int(s) for s in args.sizes.split(",")]:
        table = work / f"features_{n}.parquet"
        if not table.exists():
            write_table(table, n)
        for strategy in args.strategies.split(","):
            out = work / f"s_{n}_{strategy}.csv"
            ours = measure([*medflow, "suggest-annotation", "rank", "--features", str(table),
                            "--strategy", strategy, "--budget", str(args.budget), "--out",
                            str(out)])
            row = (f"{n:>9} {strategy:>11} {ours['wall_s']:>9.2f} {ours['cpu_s']:>7.2f} "
                   f"{ours['peak_mb']:>8.0f}")
            if n <= args.peer_only_below:
                peer = measure([sys.executable, __file__, "--worker", str(table), strategy,
                                str(args.budget), "0"])
                row += (f" {peer['wall_s']:>8.2f} {peer['peak_mb']:>8.0f} "
                        f"{ours['wall_s'] / peer['wall_s']:>7.2f} "
                        f"{ours['peak_mb'] / peer['peak_mb']:>6.2f}")
            print(row, flush=True)
    print(f"(cpu count {os.cpu_count()}; budget {args.budget}; {DIMS}-d embeddings; "
          f"{LABELLED:.0%} labelled)")


if __name__ == "__main__":
    main()
