"""Estimated vs measured peak memory: one training step, one prediction window, one whole
prediction (``segment-cascaded``'s planner and ``--max-memory`` guard rely on these).

Each measurement runs in its own subprocess (peak RSS is per process), on random data with
a seeded random-weight cascade, and prints one JSON line per case: the estimate from
``medflow.segment.memory``, the measured peak RSS, and their ratio (>= 1 is on the safe
side).

    python benchmarks/segment/memory_estimate.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = {
    # name: (kind, patch, base width, levels, image shape, spacing)
    "train_96_w8_l5": ("train", (96, 96, 96), 8, 5, (96, 96, 96), (1.0, 1.0, 1.0)),
    "train_64_w16_l4": ("train", (64, 64, 64), 16, 4, (96, 96, 96), (1.0, 1.0, 1.0)),
    "train_cine_w8_l5": ("train", (160, 160, 10), 8, 5, (184, 160, 11), (1.8, 1.8, 10.0)),
    "predict_96_w8_l5_256": ("predict", (96, 96, 96), 8, 5, (256, 256, 128), (1.0, 1.0, 1.0)),
    "predict_64_w16_l4_192": ("predict", (64, 64, 64), 16, 4, (192, 192, 96), (1.0, 1.0, 1.0)),
    "predict_cine_w8_l5": ("predict", (160, 160, 10), 8, 5, (184, 160, 11), (1.8, 1.8, 10.0)),
}


def config(patch, width, levels, image, spacing):
    from medflow.segment.plan import Fingerprint, plan_cascade

    fp = Fingerprint(image, image, spacing, 1)
    return plan_cascade(fp, patch=patch, channels=width, levels=levels).config


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(name: str, threads: int) -> dict:
    import numpy as np
    import torch

    from medflow.segment import memory
    from medflow.segment.infer import return_freed_memory

    torch.set_num_threads(threads)
    return_freed_memory()
    kind, patch, width, levels, image, spacing = CASES[name]
    cfg = config(patch, width, levels, image, spacing)
    from medflow.segment.cascade import Cascade

    torch.manual_seed(0)
    model = Cascade(cfg)
    rng = np.random.default_rng(0)
    if kind == "train":
        from medflow.segment.data import Sample
        from medflow.segment.train import TrainOptions, train_step

        classes = rng.integers(0, cfg.n_classes, image)
        sample = Sample("s", 0, rng.normal(size=(1, *image)).astype(np.float32), classes)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.to(memory_format=torch.channels_last_3d).train()
        est = memory.training_bytes(cfg, image) + memory.BASE_BYTES + memory.RUNTIME_BYTES
        train_step(model, opt, sample, TrainOptions(augment="none"), rng, "cpu")
        train_step(model, opt, sample, TrainOptions(augment="none"), rng, "cpu")
    else:
        from medflow.segment.predict import segment
        from medflow.io import Volume, make_affine

        vol = Volume(rng.normal(size=image).astype(np.float32), make_affine(spacing))
        out = np.zeros(image, np.uint8)
        model.eval()
        layout, cost = memory.plan_layout(cfg, image, in_itemsize=4)
        est = cost.total + vol.data.nbytes + out.nbytes
        segment(model, [vol], out, layout=layout)
    return {"case": name, "estimate_mb": round(est / 2**20), "peak_rss_mb": round(rss() / 2**20),
            "estimate_over_measured": round(est / rss(), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.threads)))
        return
    for name in a.cases.split(","):
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--threads",
                               str(a.threads)], capture_output=True, text=True)
        print(proc.stdout.strip() or json.dumps({"case": name, "error": proc.stderr[-300:]}),
              flush=True)


if __name__ == "__main__":
    main()
