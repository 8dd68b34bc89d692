"""Speed and memory of `medflow super-resolve predict`, per method, each run as its own
process (the command a user or the pipeline runs), against the peers in the same run:
`sdf` (shape-based interpolation, SciPy) for the label methods and SimpleITK's B-spline
(`--method sdf --image`) for the joint image.

Reported per method: seconds per frame (the method's own time from the sidecars, and
the whole process's wall and CPU time divided by the frames), peak RSS of the process.

Run:
    python benchmarks/superres/bench_superres.py --cohort W/ssfp --subjects 0-3 \
        --prior W/prior --joint W/joint --threads 2 --workdir W/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "medflow", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): medflow {' '.join(args)}\n"
                         f"{proc.stderr.read().decode()}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--subjects", default="0-3")
    ap.add_argument("--prior", type=Path, required=True)
    ap.add_argument("--joint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", default="120")
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args()
    lo, hi = (int(v) for v in a.subjects.split("-"))
    cases = {"sdf": ["--method", "sdf"],
             "bspline_image+sdf": ["--method", "sdf", "--image", "{sa}", "--output-image",
                                   "{out}/img_{{frame}}.nii.gz"],
             "latent": ["--model", str(a.prior), "--iterations", a.iterations],
             "latent_la": ["--model", str(a.prior), "--iterations", a.iterations,
                           "--la-2ch", "{la2}", "--la-4ch", "{la4}"]}
    if a.joint:
        cases["joint"] = ["--model", str(a.joint), "--image", "{sa}", "--output-image",
                          "{out}/img_{{frame}}.nii.gz"]
        if (a.joint / "prior").is_dir():  # trained with --prior: it takes the long axis
            cases["joint_la"] = [*cases["joint"], "--la-2ch", "{la2}", "--la-4ch", "{la4}"]
    totals: dict[str, dict] = {}
    for i in range(lo, hi + 1):
        folder = a.cohort / f"sub-{i:03d}"
        for name, extra in cases.items():
            out = a.workdir / name / folder.name
            out.mkdir(parents=True, exist_ok=True)
            fill = {"sa": folder / "sa.nii.gz", "la2": folder / "seg_la_2ch.nii.gz",
                    "la4": folder / "seg_la_4ch.nii.gz", "out": out}
            args = ["super-resolve", "predict", "--input", str(folder / "seg_sa.nii.gz"),
                    "--output", str(out / "hr_{frame}.nii.gz"), "--device", "cpu",
                    *[e.format(**{k: str(v) for k, v in fill.items()}) for e in extra]]
            m = run(args, a.threads)
            method_s = [json.loads((out / f"hr_{f}.json").read_text())["result"]["seconds"]
                        for f in ("ed", "es")]
            t = totals.setdefault(name, {"frames": 0, "method_s": 0.0, "wall_s": 0.0,
                                         "cpu_s": 0.0, "peak_rss_mb": 0.0})
            t["frames"] += 2
            t["method_s"] += sum(method_s)
            t["wall_s"] += m["wall_s"]
            t["cpu_s"] += m["cpu_s"]
            t["peak_rss_mb"] = max(t["peak_rss_mb"], m["peak_rss_mb"])
            print(name, folder.name, {k: round(v, 2) for k, v in m.items()},
                  "method s/frame", [round(s, 2) for s in method_s], flush=True)
    print(f"\nper frame, {a.threads} thread(s):")
    print(f"{'method':20s} {'method s':>9s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s}"
          f" {'method s / sdf':>15s}")
    ref = totals["sdf"]["method_s"] / totals["sdf"]["frames"]
    for name, t in totals.items():
        per = {k: t[k] / t["frames"] for k in ("method_s", "wall_s", "cpu_s")}
        print(f"{name:20s} {per['method_s']:9.2f} {per['wall_s']:8.2f} {per['cpu_s']:8.2f} "
              f"{t['peak_rss_mb']:8.0f} {per['method_s'] / ref:15.2f}")


if __name__ == "__main__":
    main()
