"""Benchmark: medflow's DICOM reader against dcm2niix on DICOM validation series.

Takes folders of DICOM series (for example checkouts of the dcm2niix author's validation
repositories ``dcm_qa``, ``dcm_qa_nih``, ``dcm_qa_ge``, ``dcm_qa_enh``; any folder of series
works) and converts every folder that directly holds DICOM files twice, in the same run:

  ours: medflow.io.dicom.read_dicom (every series) + write_nifti (.nii, uncompressed)
  peer: dcm2niix (the PyPI build, ``-z n -b n -d 0 -p n``: uncompressed, no sidecar, no
        recursion, and Philips values as the DICOM rescale gives them, as medflow reads
        them; dcm2niix's default ``-p y`` divides Philips data by a private scale slope)

Each dcm2niix output is matched with the medflow series of the same shape whose voxel
centres lie closest, after both are brought to the closest canonical (RAS) axis order, and
reported: voxel-centre distance (largest over the grid's corners, mm), the fraction of voxels
with equal values (dcm2niix's scaling applied), and the CPU time of each side (dcm2niix as
child-process CPU). A series medflow refuses is reported with its one-line error.

Run:  python benchmarks/preprocess/bench_dcm2niix.py DIR [DIR ...] [--json out.json]
      (the validation repositories are not part of medflow: fetch them yourself)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medflow.errors import MedflowError
from medflow.io.dicom import read_dicom
from medflow.io.images import nifti_image


def series_folders(roots: list[Path]) -> list[Path]:
    """Folders that directly hold at least one DICOM file (preamble or bare)."""
    out = set()
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file() and f.suffix.lower() not in (".nii", ".json", ".txt", ".bval",
                                                        ".bvec", ".md", ".sh", ".pdf", ".xlsx"):
                with open(f, "rb") as fh:
                    head = fh.read(132)
                if head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00"):
                    out.add(f.parent)
    return sorted(out)


def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    can = nib.as_closest_canonical(img)
    data = np.asarray(can.dataobj, dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, can.affine


def corner_distance(a: np.ndarray, b: np.ndarray, shape) -> float:
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape[:3]], indexing="ij")
                       ).reshape(3, -1)
    pts = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.abs((a @ pts)[:3] - (b @ pts)[:3]).max())


def run_dcm2niix(folder: Path, out: Path) -> tuple[float, float]:
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([exe, "-z", "n", "-b", "n", "-d", "0", "-p", "n", "-f", "%s_%p", "-o", str(out),
                    str(folder)], capture_output=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
            time.perf_counter() - wall)


def run_medflow(folder: Path, out: Path) -> tuple[list, str | None, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        vols = read_dicom(folder)
        for i, v in enumerate(vols):
            nib.save(nifti_image(v), str(out / f"medflow_{i}.nii"))
        error = None
    except MedflowError as exc:
        vols, error = [], exc.format_message()
    return vols, error, time.process_time() - cpu, time.perf_counter() - wall


def compare(folder: Path, tmp: Path) -> dict:
    (tmp / "d").mkdir()
    (tmp / "m").mkdir()
    d_cpu, d_wall = run_dcm2niix(folder, tmp / "d")
    vols, error, m_cpu, m_wall = run_medflow(folder, tmp / "m")
    ours = [(v.meta.get("series_description"), *canonical(nifti_image(v))) for v in vols]
    rows = []
    for ref_path in sorted((tmp / "d").glob("*.nii")):
        img = nib.load(str(ref_path))
        if img.get_data_dtype().names:  # RGB: medflow reads single-channel images only
            rows.append({"reference": ref_path.name, "shape": list(img.shape),
                         "medflow_series": "colour (not supported)",
                         "voxel_centre_distance_mm": None, "voxels_equal": None})
            continue
        ref, ref_affine = canonical(img)
        tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
        candidates = [(name, corner_distance(affine, ref_affine, ref.shape),
                       float(np.mean(np.abs(data - ref) <= tol)))
                      for name, data, affine in ours if data.shape == ref.shape]
        # the closest grid; among equally close ones (magnitude and phase share a grid)
        # the one whose voxels agree
        best = min(candidates, key=lambda c: (round(c[1], 2), -c[2]), default=None)
        rows.append({"reference": ref_path.name, "shape": list(ref.shape),
                     "medflow_series": best and best[0],
                     "voxel_centre_distance_mm": best and best[1],
                     "voxels_equal": best and best[2]})
    return {"folder": str(folder), "medflow_error": error, "medflow_series": len(vols),
            "series": rows, "cpu_s": {"medflow": m_cpu, "dcm2niix": d_cpu},
            "wall_s": {"medflow": m_wall, "dcm2niix": d_wall}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="Write every row here.")
    args = ap.parse_args()
    results = []
    for folder in series_folders(args.folders):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(compare(folder, Path(tmp)))
        r = results[-1]
        worst = [s for s in r["series"] if s["voxel_centre_distance_mm"] is None
                 or s["voxel_centre_distance_mm"] > 0.01 or s["voxels_equal"] < 1.0]
        print(f"{folder}: {len(r['series'])} dcm2niix output(s), {len(worst)} differ"
              + (f"; medflow: {r['medflow_error']}" if r["medflow_error"] else ""))
        for s in worst:
            print(f"    {s['reference']} {s['shape']}: medflow {s['medflow_series']!r} "
                  f"distance {s['voxel_centre_distance_mm']} mm, voxels equal "
                  f"{s['voxels_equal']}")
    rows = [s for r in results for s in r["series"]]
    matched = [s for s in rows if s["voxel_centre_distance_mm"] is not None]
    exact = [s for s in matched if s["voxel_centre_distance_mm"] <= 0.01
             and s["voxels_equal"] == 1.0]
    cpu = {k: sum(r["cpu_s"][k] for r in results) for k in ("medflow", "dcm2niix")}
    print(f"\n{len(results)} folders, {len(rows)} dcm2niix series: {len(matched)} matched by "
          f"shape, {len(exact)} with voxel centres within 0.01 mm and every voxel equal; "
          f"{sum(1 for r in results if r['medflow_error'])} folders refused by medflow")
    if matched:
        d = np.array([s["voxel_centre_distance_mm"] for s in matched])
        print(f"voxel-centre distance over matched series: median {np.median(d):.2g} mm, "
              f"max {d.max():.2g} mm")
    print(f"CPU: medflow {cpu['medflow']:.2f} s, dcm2niix {cpu['dcm2niix']:.2f} s, ratio "
          f"{cpu['medflow'] / max(cpu['dcm2niix'], 1e-9):.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
