"""Streaming cascade inference vs MONAI ``sliding_window_inference``, same weights.

Both sides run the same cascade (same weights, same stage-1 output, same patch, overlap
and Gaussian blending) on the same image; each side runs in its own subprocess so peak
RSS is its own. The MONAI side is the usual in-memory recipe: read the image, build the
full-resolution input (image + stage-1 probabilities and features upsampled by
``F.interpolate``), call
``sliding_window_inference(mode="gaussian")``, argmax. Ours memory-maps the input, streams
z-slabs and writes the label map through a memory-mapped .nii.

    python benchmarks/segment/bench_segment.py                 # (a) cine, (b) 256x256x128
    python benchmarks/segment/bench_segment.py --large         # also (c) microct 640^3
    python benchmarks/segment/bench_segment.py --default-path  # (d) a new user's 640^3 run

Prints per case: time ratio ours/MONAI (target <= 1), peak-RSS ratio (target <= 0.5 on
(b)), max |probability difference| on a central z-range (target <= 1e-4). Each worker runs
under an address-space cap (``--limit-gb``, default 16) so the MONAI recipe on 640^3 fails
cleanly ("failed at the 16 GB address-space limit", with its projected need) instead of
taking the machine down.

(d) is not a comparison but the promise at default settings: the commands a new user runs
(``demo-cohort`` 96^3 x 2, ``segment-cascaded train --epochs 1``, everything else default,
then ``predict`` of the 640^3 volume with default options), each timed as its own process
(wall, CPU, peak RSS from ``wait4``, as ``/usr/bin/time -v`` reports them); targets: peak
RSS <= 2 GB and wall <= 10 min on 2 cores (on shared cores, CPU time / threads estimates
the idle wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "a_cine": {"patch": (96, 96, 16), "factor": 2},
    "b_256x256x128": {"patch": (96, 96, 96), "factor": 4},
    # 0.25 overlap on 640^3 (both sides): 343 instead of 729 windows keeps the run in
    # minutes on 2 cores; the memory comparison does not depend on it.
    "c_microct_640": {"patch": (128, 128, 128), "factor": 4, "overlap": 0.25},
}
Z_WINDOW = 8  # probabilities compared on this many central slices (all frames)


def make_inputs(case: str, work: Path) -> Path:
    """The benchmark image (uncompressed NIfTI, so both sides may memory-map it)."""
    import nibabel as nib

    from medflow.io import Volume, make_affine, write_nifti

    path = work / f"{case}.nii"
    if path.exists():
        return path
    if case == "a_cine":
        subprocess.run([sys.executable, "-m", "medflow", "demo-cohort", "--kind", "cardiac",
                        "--subjects", "1", "--out", str(work / "cine")], check=True)
        img = nib.load(work / "cine/sub-000/sa.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), path)
    elif case == "b_256x256x128":
        rng = np.random.default_rng(0)
        coarse = rng.normal(size=(16, 16, 8))
        from scipy.ndimage import zoom
        data = (1000 + 300 * zoom(coarse, 16, order=3) + rng.normal(0, 30, (256, 256, 128)))
        write_nifti(Volume(data.astype(np.int16), make_affine((1.0, 1.0, 1.0))), path)
    else:
        subprocess.run([sys.executable, "-m", "medflow", "demo-cohort", "--kind", "microct",
                        "--shape", "640,640,640", "--out", str(work / "microct")], check=True)
        path = work / "microct/sub-000/image.nii"
    return path


def make_model(case: str, image: Path, work: Path, model_dir: str | None) -> Path:
    """A seeded random-weight cascade planned for the image (or the given trained model)."""
    if model_dir:
        return Path(model_dir)
    import torch

    from medflow.io import read_image
    from medflow.segment.cascade import Cascade
    from medflow.segment.config import CascadeConfig, plan_levels, stage1_factors
    from medflow.segment.modelio import save_model

    vol = read_image(image, mmap=True)
    spacing, spec = vol.spacing, CASES[case]
    patch = tuple(min(p, n) for p, n in zip(spec["patch"], vol.shape3))
    f = stage1_factors(spacing, spec["factor"])
    low = [-(-n // k) for n, k in zip(vol.shape3, f)]
    pools1, kernels1, _ = plan_levels(low, [s * k for s, k in zip(spacing, f)], 4)
    pools2, kernels2, _ = plan_levels(patch, spacing, 4)
    cfg = CascadeConfig(channels1=(4, 8, 16, 32), channels2=(8, 16, 32, 64), pools1=pools1,
                        pools2=pools2, kernels1=kernels1, kernels2=kernels2, stage1_factor=f,
                        patch=patch, spacing=tuple(spacing), overlap=spec.get("overlap", 0.5))
    torch.manual_seed(0)
    out = work / f"model_{case}"
    save_model(out, Cascade(cfg), {"labels": list(cfg.labels), "training": {}})
    return out


class ZWindow:
    """Array-like that keeps only the central z-range of (X, Y, Z[, T], C) probabilities."""

    def __init__(self, shape, z0: int, z1: int, n_classes: int):
        self.z0, self.z1 = z0, z1
        self.data = np.zeros((*shape[:2], z1 - z0, *shape[3:], n_classes), np.float32)

    def __setitem__(self, box, value):
        zs = box[2]
        a, b = max(zs.start, self.z0), min(zs.stop, self.z1)
        if a < b:
            self.data[(slice(None), slice(None), slice(a - self.z0, b - self.z0), *box[3:])] = \
                value[:, :, a - zs.start:b - zs.start]


def worker(side: str, model_dir: Path, image: Path, out: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from medflow.io import read_image
    from medflow.segment.infer import return_freed_memory

    return_freed_memory()  # both sides: the same allocator settings as `medflow ... predict`
    from medflow.segment.modelio import load_model
    from medflow.segment.predict import NiftiSink, label_dtype, segment

    t0 = time.perf_counter()
    model, _ = load_model(model_dir)
    cfg = model.cfg
    vol = read_image(image, mmap=True)
    shape = vol.data.shape
    z0 = max(0, shape[2] // 2 - Z_WINDOW // 2)
    window = ZWindow(shape, z0, min(shape[2], z0 + Z_WINDOW), cfg.n_classes)
    if side == "ours":
        sink = NiftiSink(out.with_suffix(".seg.nii"), shape, vol.affine, label_dtype(cfg.labels),
                         "label")
        segment(model, [vol], sink.array, prob_out=window)
        sink.close()
    else:
        monai_side(model, vol, window, out)
    elapsed = time.perf_counter() - t0
    np.save(out.with_suffix(".npy"), window.data)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"side": side, "time_s": elapsed, "cpu_s": ru.ru_utime + ru.ru_stime,
                      "peak_rss_mb": ru.ru_maxrss / 1024}))


def monai_side(model, vol, window, out: Path) -> None:
    """The in-memory recipe: whole input and whole output through sliding_window_inference."""
    import nibabel as nib
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference

    from medflow.segment.data import normalise, robust_stats
    from medflow.segment.infer import ArraySource, stage1_outputs
    from medflow.segment.predict import apply_ventricle_anatomy, ventricle_labels

    cfg = model.cfg
    rule = ventricle_labels(cfg, vol.spacing)
    data = np.asarray(vol.data)
    stats = robust_stats(data)
    frames = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    labels = np.zeros(data.shape, np.uint8)
    c = cfg.n_classes

    def predictor(x):
        return torch.softmax(model.forward_stage2(x[:, :1], x[:, 1:1 + c], x[:, 1 + c:]), 1)

    with torch.no_grad():
        for t, frame in enumerate(frames):
            image = torch.from_numpy(normalise(frame, stats))[None, None]
            coarse = stage1_outputs(model, ArraySource([frame], [stats]))
            context = F.interpolate(coarse, size=frame.shape, mode="trilinear")
            inputs = torch.cat([image, context], dim=1)
            del context
            probs = sliding_window_inference(inputs, cfg.patch, 1, predictor,
                                             overlap=cfg.overlap, mode="gaussian",
                                             sigma_scale=cfg.sigma_scale)[0]
            del inputs
            tix = () if data.ndim == 3 else (t,)
            window[(slice(None), slice(None), slice(0, frame.shape[2]), *tix)] = \
                probs.permute(1, 2, 3, 0).numpy()
            labels[(..., *tix)] = probs.argmax(0).numpy()
            if rule is not None:      # the same post-processing `segment` applies
                labels[(..., *tix)] = apply_ventricle_anatomy(
                    labels[(..., *tix)], rule, cfg.labels[0], tuple(vol.spacing[:2]))[0]
    nib.save(nib.Nifti1Image(labels, vol.affine), str(out.with_suffix(".seg.nii")))


MEMORY_ERRORS = ("MemoryError", "can't allocate memory", "Cannot allocate memory",
                 "bad_alloc", "out of memory")


def limit_address_space(gb: float):
    """preexec_fn for a worker: cap its virtual address space at ``gb`` GiB, so an
    allocation beyond it fails inside the worker (MemoryError) instead of driving the whole
    machine out of memory (the MONAI recipe on 640^3 wants tens of GB)."""
    limit = int(gb * 2**30)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def monai_projected_gb(model_dir: Path, image: Path) -> float:
    """Lower bound of the MONAI recipe's peak: the full-resolution network input (image +
    stage-1 probabilities + features) and the upsampled context it is concatenated from,
    plus sliding_window_inference's float32 output and weight-count map, for one frame."""
    from medflow.io import read_image
    from medflow.segment.modelio import load_model

    cfg = load_model(model_dir)[0].cfg
    voxels = int(np.prod(read_image(image, mmap=True).shape3))
    context = cfg.n_classes + cfg.channels1[0]
    floats = (cfg.in_channels + context) + context + cfg.n_classes + 1
    return floats * voxels * 4 / 2**30


def run_case(case: str, work: Path, threads: int, model_dir: str | None,
             limit_gb: float) -> dict:
    image = make_inputs(case, work)
    model = make_model(case, image, work, model_dir)
    res = {}
    for side in ("ours", "monai"):
        out = work / f"{case}_{side}"
        proc = subprocess.run([sys.executable, __file__, "--worker", side, "--model",
                               str(model), "--image", str(image), "--out", str(out),
                               "--threads", str(threads)], capture_output=True, text=True,
                              preexec_fn=limit_address_space(limit_gb))
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            oom = any(m in proc.stderr for m in MEMORY_ERRORS) or proc.returncode == -9
            res[side] = {"error": (f"failed at the {limit_gb:g} GB address-space limit"
                                   if oom else "failed") + f": {tail[0][:200]}"}
            continue
        res[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        res[side]["probs"] = out.with_suffix(".npy")
    row = {"case": case, "limit_gb": limit_gb}
    a, b = res["ours"], res["monai"]
    for name, r in (("ours", a), ("monai", b)):
        if "time_s" in r:
            row.update({f"{name}_s": round(r["time_s"], 2), f"{name}_cpu_s": round(r["cpu_s"], 2),
                        f"{name}_rss_mb": round(r["peak_rss_mb"])})
    if "time_s" in a and "time_s" in b:
        # on shared cores wall time follows the load; CPU time is the fairer ratio there
        row.update(time_ratio=round(a["time_s"] / b["time_s"], 3),
                   cpu_ratio=round(a["cpu_s"] / b["cpu_s"], 3),
                   rss_ratio=round(a["peak_rss_mb"] / b["peak_rss_mb"], 3),
                   max_abs_prob_diff=float(np.abs(np.load(a["probs"]) -
                                                  np.load(b["probs"])).max()))
    for side in ("ours", "monai"):
        if "error" in res[side]:
            row[f"{side}_error"] = res[side]["error"]
    if "error" in b:
        row["monai_projected_gb"] = round(monai_projected_gb(model, image), 1)
    return row


def measured(cmd: list[str], log: Path) -> dict:
    """Run one command as its own process: wall and CPU seconds, peak RSS (wait4)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}); see {log}")
    return {"wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "peak_rss_mb": round(ru.ru_maxrss / 1024)}


def default_path(work: Path) -> dict:
    """(d): train on the 96^3 demo with only --epochs 1, predict 640^3 with defaults."""
    mf = [sys.executable, "-m", "medflow"]
    small, model = work / "d_microct96", work / "d_model"
    if not (small / "samplesheet.csv").exists():
        subprocess.run([*mf, "demo-cohort", "--kind", "microct", "--subjects", "2", "--shape",
                        "96,96,96", "--out", str(small)], check=True)
    train = measured([*mf, "segment-cascaded", "train", "--samplesheet",
                      str(small / "samplesheet.csv"), "--image-role", "image", "--label-role",
                      "seg", "--epochs", "1", "--out", str(model)], work / "d_train.log")
    image = make_inputs("c_microct_640", work)
    out = work / "d_predict" / "seg.nii"
    pred = measured([*mf, "segment-cascaded", "predict", "--model", str(model), "--input",
                     str(image), "--output", str(out)], work / "d_predict.log")
    side = json.loads(out.with_suffix(".json").read_text())
    card = json.loads((model / "model.json").read_text())
    threads = side["threads"]
    return {"case": "d_default_640", "train": train, "plan_patch": card["plan"]["patch"],
            "plan_stage1_factor": card["plan"]["stage1_factor"], **pred,
            "idle_wall_estimate_s": round(pred["cpu_s"] / threads, 1), "threads": threads,
            "windows": side["windows"], "stage1_windows": side["stage1_windows"],
            "overlap": side["overlap"], "tiles": side["tiles"],
            "estimate_mb": round(side["memory_estimate_bytes"]["total"] / 2**20),
            "rss_target_met": pred["peak_rss_mb"] * 2**20 <= 2e9,
            "time_target_met": pred["cpu_s"] / threads <= 600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also the 640^3 microct volume")
    ap.add_argument("--default-path", action="store_true",
                    help="also (d): train on the 96^3 demo, predict 640^3, all defaults")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="trained model folder instead of random")
    ap.add_argument("--cases", default=None, help="comma-separated subset of the cases")
    ap.add_argument("--limit-gb", type=float, default=16.0,
                    help="address-space cap of each worker (GiB); MONAI fails cleanly beyond")
    ap.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, Path(a.model), a.image, a.out, a.threads)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_segment_"))
    work.mkdir(parents=True, exist_ok=True)
    cases = ([c for c in a.cases.split(",") if c] if a.cases is not None   # "" for (d) only
             else ["a_cine", "b_256x256x128"] + (["c_microct_640"] if a.large else []))
    for case in cases:
        print(json.dumps(run_case(case, work, a.threads, a.model, a.limit_gb)), flush=True)
    if a.default_path:
        print(json.dumps(default_path(work)), flush=True)


if __name__ == "__main__":
    main()
