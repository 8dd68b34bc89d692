"""Benchmark: `medflow preprocess` functions against plain SimpleITK on a UK Biobank-sized
short-axis cine (208 x 192 x 10 slices x 50 frames, 1.8 x 1.8 x 10 mm, oblique).

Both sides do the same job on the same array in the same run: reorient to RAS, resample
to 1.25 x 1.25 mm in-plane (slices kept, field of view kept), z-score over all voxels.

  ours: medflow.preprocess.preprocess (reorient as a view, frame-by-frame sitk.Resample into
        one preallocated Fortran-ordered array, z-score in place with blockwise statistics)
  peer: plain SimpleITK the straightforward way: per frame GetImageFromArray, DICOMOrient,
        sitk.Resample onto the same grid, GetArrayFromImage; np.stack; numpy z-score.

Prints the time ratio (target <= 1.2, also for the resampling alone) and peak memory
relative to the output array, measured as the growth of resident memory (VmHWM after
resetting it through /proc/self/clear_refs, minus VmRSS before; this counts SimpleITK's
C++ buffers) in a fresh subprocess per side, plus tracemalloc's peak (numpy buffers only)
for ours.

Run:  python benchmarks/preprocess/bench_preprocess.py [--repeats 3] [--frames 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import SimpleITK as sitk

from medflow.io import Volume, make_affine
from medflow.preprocess import PreprocessConfig, preprocess, sitk_geometry

SHAPE = (208, 192, 10)
SPACING = (1.8, 1.8, 10.0)
TARGET = (1.25, 1.25, None)


def make_cine(frames: int, seed: int = 0) -> Volume:
    """Smooth random int16 cine with an oblique affine (a short-axis-like tilt)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=SHAPE + (4,)).astype(np.float32),
                                   (4, 4, 1, 0))
    t = np.linspace(0, 2 * np.pi, frames, endpoint=False)
    weights = np.stack([np.ones_like(t), np.sin(t), np.cos(t), np.sin(2 * t)])  # (4, T)
    data = np.empty(SHAPE + (frames,), np.int16, order="F")
    for f in range(frames):
        frame = base @ weights[:, f]
        data[..., f] = np.clip(600 + 900 * frame / np.abs(base[..., 0]).max(), 0, 4000)
    a, b = 0.5, 0.8
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    flip = np.diag([-1.0, 1.0, -1.0])  # not RAS, so reorientation has work to do
    return Volume(data, make_affine(SPACING, rz @ rx @ flip, (80.0, -120.0, 40.0)))


CONFIG = PreprocessConfig(orientation="RAS", spacing=TARGET, normalise="zscore")


def run_ours(vol: Volume) -> Volume:
    out, _ = preprocess(vol, CONFIG)
    return out


def _peer_frames(vol: Volume):
    """Plain SimpleITK, frame by frame: orient, then resample onto the convention's grid."""
    origin, spacing, direction = sitk_geometry(vol.affine)
    grid = None
    for f in range(vol.n_frames):
        img = sitk.GetImageFromArray(np.ascontiguousarray(vol.data[..., f].T))
        img.SetOrigin(origin)
        img.SetSpacing(spacing)
        img.SetDirection(direction)
        img = sitk.DICOMOrient(img, "RAS")
        if grid is None:
            # TARGET names the stored axes: find where DICOMOrient put each of them
            d_in = np.array(direction).reshape(3, 3)
            d_out = np.array(img.GetDirection()).reshape(3, 3)
            moved_to = np.abs(d_in.T @ d_out).argmax(axis=1)
            wanted = [None] * 3
            for i, j in enumerate(moved_to):
                wanted[j] = TARGET[i]
            old = np.array(img.GetSpacing())
            new = np.array([o if s is None else s for o, s in zip(old, wanted)])
            size = [max(1, int(np.floor(n * o / s + 0.5)))
                    for n, o, s in zip(img.GetSize(), old, new)]
            d = np.array(img.GetDirection()).reshape(3, 3)
            grid = (size, (np.array(img.GetOrigin()) + d @ ((new - old) / 2)).tolist(),
                    new.tolist(), img.GetDirection())
        size, o, s, d = grid
        yield sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, o, s, d, 0.0,
                            sitk.sitkFloat32)


def run_peer(vol: Volume, normalise: bool = True) -> np.ndarray:
    frames = [sitk.GetArrayFromImage(img).T for img in _peer_frames(vol)]
    out = np.stack(frames, axis=-1)
    if normalise:
        out = (out - out.mean()) / out.std()
    return out


def run_ours_resample_only(vol: Volume) -> Volume:
    out, _ = preprocess(vol, PreprocessConfig(orientation="RAS", spacing=TARGET))
    return out


def best_time(fn, vol, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(vol)
        times.append(time.perf_counter() - t0)
        del result
    return min(times)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure_memory(which: str, frames: int, path: str) -> None:
    """Child process: load the cine, reset the peak, run one side, print peak growth."""
    data = np.load(path)
    vol = Volume(np.asfortranarray(data), np.load(path + ".affine.npy"))
    del data
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    result = run_ours(vol) if which == "ours" else run_peer(vol)
    peak = _rss_kib("VmHWM")
    print(json.dumps({"peak_growth_bytes": (peak - before) * 1024,
                      "output_bytes": int(np.asarray(result.data if which == "ours"
                                                     else result).nbytes)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--memory-child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory(args.memory_child, args.frames, args.input)
        return

    vol = make_cine(args.frames)
    print(f"input {vol.data.shape} {vol.data.dtype}, spacing {SPACING}, "
          f"sitk threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")

    ours = run_ours(vol)
    peer = run_peer(vol)
    assert ours.data.shape == peer.shape, (ours.data.shape, peer.shape)
    print(f"output {ours.data.shape} float32 = {ours.data.nbytes / 2**20:.1f} MiB; "
          f"max |ours - peer| = {np.abs(ours.data - peer).max():.2e} (z-scored units)")
    del ours, peer

    t_ours = best_time(run_ours, vol, args.repeats)
    t_peer = best_time(run_peer, vol, args.repeats)
    t_ours_rs = best_time(run_ours_resample_only, vol, args.repeats)
    t_peer_rs = best_time(lambda v: run_peer(v, normalise=False), vol, args.repeats)
    print(f"time, reorient + resample + zscore: ours {t_ours:.3f} s, "
          f"SimpleITK {t_peer:.3f} s, ratio {t_ours / t_peer:.2f} (target <= 1.2)")
    print(f"time, reorient + resample only:     ours {t_ours_rs:.3f} s, "
          f"SimpleITK {t_peer_rs:.3f} s, ratio {t_ours_rs / t_peer_rs:.2f}")

    tracemalloc.start()
    out = run_ours(vol)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out_bytes = out.data.nbytes
    del out
    print(f"peak memory (tracemalloc, numpy/Python only), ours: {traced / 2**20:.1f} MiB = "
          f"{traced / out_bytes:.2f} x output")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cine.npy")
        np.save(path, vol.data)
        np.save(path + ".affine.npy", vol.affine)
        for which in ("ours", "peer"):
            res = subprocess.run([sys.executable, __file__, "--memory-child", which,
                                  "--frames", str(args.frames), "--input", path],
                                 capture_output=True, text=True, check=True)
            m = json.loads(res.stdout)
            print(f"peak memory (RSS growth in a fresh process), {which}: "
                  f"{m['peak_growth_bytes'] / 2**20:.1f} MiB = "
                  f"{m['peak_growth_bytes'] / m['output_bytes']:.2f} x output"
                  + (" (target <= 2)" if which == "ours" else ""))


if __name__ == "__main__":
    main()
