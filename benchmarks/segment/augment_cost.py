"""CPU seconds of one training step per ``--augment`` mode, as a ratio to ``standard``.

The first frame of a one-subject demo cohort (184 x 160 x 11 at 1.8 x 1.8 x 10 mm), the
issue-18 benchmark's architecture (patch 96,96,16 -> 96 x 96 x 11, widths 8-64, 4 levels),
2 patches per step,
1 thread, process CPU time (independent of other jobs on shared cores). One warm-up step,
then ``--steps`` timed steps per mode on the same seeded model and draws. A mode
``X+cooperative`` (``cooperative`` alone: ``standard+cooperative``) is ``--augment X
--cooperative``: the model gets the refiner and the step its latent-space hard example.

    python benchmarks/segment/augment_cost.py --workdir /tmp/augcost --steps 6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--modes", default="standard,gin-ipa,adv-chain,gin-ipa+adv-chain,"
                    "cooperative,gin-ipa+cooperative")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--adv-steps", type=int, default=1)
    a = ap.parse_args()
    import nibabel as nib
    import numpy as np
    import torch

    from medflow.segment import advchain
    from medflow.segment.cooperative import refiner_channels
    from medflow.segment.cascade import Cascade
    from medflow.segment.data import Sample
    from medflow.segment.plan import Fingerprint, plan_cascade
    from medflow.segment.train import TrainOptions, train_step

    torch.set_num_threads(1)
    demo = a.workdir / "demo"
    if not (demo / "samplesheet.csv").exists():
        subprocess.run([sys.executable, "-m", "medflow", "demo-cohort", "--kind", "cardiac",
                        "--subjects", "1", "--frames", "2", "--out", str(demo)], check=True)
    sub = sorted(p for p in demo.iterdir() if (p / "sa.nii.gz").exists())[0]
    img = np.asarray(nib.load(sub / "sa.nii.gz").dataobj, np.float32)[..., 0]
    lab = np.asarray(nib.load(sub / "seg_sa.nii.gz").dataobj)[..., 0].astype(np.int64)
    sample = Sample("s", 0, ((img - img.mean()) / img.std())[None], lab)
    spacing = tuple(float(s) for s in nib.load(sub / "sa.nii.gz").header.get_zooms()[:3])
    rows = {}
    for mode in a.modes.split(","):
        coop = mode.endswith("cooperative")
        augment = mode.removesuffix("cooperative").removesuffix("+") or "standard"
        plan = plan_cascade(Fingerprint.of([lab.shape], spacing), patch=(96, 96, 16),
                            channels=8, levels=4, copies=advchain.copies(augment),
                            labels=(0, 1, 2, 3), in_channels=1)
        cfg = plan.config
        if coop:
            cfg = dataclasses.replace(cfg, refiner_channels=refiner_channels(cfg.channels2))
        torch.manual_seed(0)
        model = Cascade(cfg).to(memory_format=torch.channels_last_3d).train()
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        opts = TrainOptions(augment=augment, adv_steps=a.adv_steps, cooperative=coop)
        rng = np.random.default_rng(0)
        train_step(model, opt, sample, opts, rng, "cpu")                    # warm-up
        t0 = time.process_time()
        for _ in range(a.steps):
            train_step(model, opt, sample, opts, rng, "cpu")
        rows[mode] = {"cpu_s_per_step": round((time.process_time() - t0) / a.steps, 3)}
    base = rows.get("standard", {}).get("cpu_s_per_step")
    for r in rows.values():
        r["ratio_to_standard"] = round(r["cpu_s_per_step"] / base, 2) if base else None
    print(json.dumps({"image": list(lab.shape), "patch": list(plan.config.patch),
                      "adv_steps": a.adv_steps, "modes": rows}, indent=1))


if __name__ == "__main__":
    main()
