"""Accuracy and time of estimate-motion-mesh (fit or predict) on a phantom cohort.

    python benchmarks/motion/evaluate.py --samplesheet demo/samplesheet.csv \
        --out /tmp/motion_eval [--roles sa=seg_sa,la_2ch=seg_la_2ch,la_4ch=seg_la_4ch] \
        [--model MODEL_DIR] [--threads 2]

Per subject: the tool's phenotypes against truth.json, the ES tracking error, and the CPU
and wall seconds of the fit (or prediction). Prints one row per subject and the mean
absolute errors; writes ``evaluation.parquet`` into --out.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from truth_metrics import load_truth, phenotype_errors, tracking_error  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args) -> pd.DataFrame:
    from medflow.io.samplesheet import load_samplesheet
    from medflow.motion.workflow import fit_files

    roles = dict(p.split("=") for p in args.roles.split(","))
    sheet = load_samplesheet(args.samplesheet)
    rows = []
    model = None
    if args.model:
        from medflow.motion.predict import load_motion_model
        model = load_motion_model(args.model)
    for rec in sheet.to_dict("records")[: args.limit]:
        sub = rec["subject"]
        out = Path(args.out) / sub
        paths = {v: Path(rec[c]) for v, c in roles.items() if rec.get(c)}
        t0, c0 = time.perf_counter(), cpu_seconds()
        if model is None:
            fit_files(paths["sa"], paths.get("la_2ch"), paths.get("la_4ch"), out, sub,
                      threads=args.threads)
        else:
            from medflow.motion.predict import predict_files
            predict_files(model, paths["sa"], paths.get("la_2ch"), paths.get("la_4ch"), out,
                          sub, threads=args.threads)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        row = pd.read_parquet(out / f"{sub}_phenotypes.parquet").iloc[0].to_dict()
        verts = np.load(out / f"{sub}_displacements.npy")
        ed = pd.read_parquet(out / f"{sub}_vertices.parquet")[["x_ed_mm", "y_ed_mm",
                                                               "z_ed_mm"]].to_numpy()
        truth = load_truth(Path(rec["truth"]))
        result = {"subject": sub, "frames": int(truth["frames"]), "wall_s": wall,
                  "cpu_s": cpu, "qc_pass": row["qc_pass"], **phenotype_errors(row, truth),
                  **tracking_error(verts + ed[None], truth)}
        rows.append(result)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in result.items()), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplesheet", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--roles", default="sa=seg_sa,la_2ch=seg_la_2ch,la_4ch=seg_la_4ch")
    ap.add_argument("--model", default=None, help="predict with this model instead of fit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    df = run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    df.to_parquet(Path(args.out) / "evaluation.parquet", index=False)
    errs = [c for c in df.columns if c.endswith("_err")]
    print("mean absolute error:", ", ".join(f"{c[:-4]} {df[c].abs().mean():.2f}"
                                            for c in errs))
    print(f"tracking at ES: all {df['track_es_mm'].mean():.2f} mm, LV wall "
          f"{df['track_es_lv_mm'].mean():.2f} mm; cpu {df['cpu_s'].mean():.1f} s, wall "
          f"{df['wall_s'].mean():.1f} s per subject; QC pass {int(df['qc_pass'].sum())}/"
          f"{len(df)}")


if __name__ == "__main__":
    main()
