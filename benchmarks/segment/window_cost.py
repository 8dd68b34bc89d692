"""CPU seconds of one stage-2 window and one stage-1 window of a trained model.

The 640^3 default-path prediction (``bench_segment.py --default-path``) runs 512 stage-2
and 512 stage-1 windows; on shared cores its wall time says more about the other jobs than
about the code, while per-window CPU time (1 thread) does not, and times the window counts
from the sidecar give the prediction's CPU cost.

    python benchmarks/segment/window_cost.py MODEL_DIR [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from medflow.segment.infer import ArraySource, predict_patch
    from medflow.segment.modelio import load_model
    from medflow.segment.unet import channels_last

    model, _ = load_model(a.model)
    model.eval().to(memory_format=torch.channels_last_3d)
    cfg = model.cfg
    vol = np.random.default_rng(0).normal(size=cfg.patch).astype(np.float32)
    src = ArraySource([vol] * cfg.in_channels, [(-np.inf, np.inf, 0.0, 1.0)] * cfg.in_channels)
    c = cfg.n_classes
    f = cfg.channels1[0] if cfg.stages == 2 else 0
    context = ((lambda s: (torch.rand(1, c, *cfg.patch), torch.rand(1, f, *cfg.patch)))
               if cfg.stages == 2 else None)
    row = {"model": a.model, "threads": a.threads, "patch": list(cfg.patch)}
    with torch.no_grad():
        predict_patch(model, src, context, (0, 0, 0))          # warm-up (oneDNN kernels)
        t0, w0 = cpu_s(), time.perf_counter()
        for _ in range(a.repeats):
            predict_patch(model, src, context, (0, 0, 0))
        row["stage2_window_cpu_s"] = round((cpu_s() - t0) / a.repeats, 3)
        row["stage2_window_wall_s"] = round((time.perf_counter() - w0) / a.repeats, 3)
        if cfg.stages == 2 and cfg.stage1_patch:
            x = channels_last(torch.rand(1, cfg.in_channels, *cfg.stage1_patch))
            model.stage1(x)
            t0 = cpu_s()
            for _ in range(a.repeats):
                model.stage1(x)
            row["stage1_window"] = list(cfg.stage1_patch)
            row["stage1_window_cpu_s"] = round((cpu_s() - t0) / a.repeats, 3)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
