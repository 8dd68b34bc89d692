"""How close can voxel counting get to the true LV volumes? The floor of issue 16's targets.

The phantom's short-axis labels are those of each 10 mm slab's centre plane (an annotator
labels a voxel one class or another), while ``truth.json`` holds the heart model's analytic
volumes. At end systole the base has moved into the slab below its end-diastolic one, and
that slab is only part ventricle; a binary label map counts it whole or not at all. This
script renders, for the held-out demo subjects (16-23 of ``demo-cohort --seed 0``), the LV
blood pool three ways on the cine's own grid and compares each with the truth:

- ``centre``: the centre plane (what ``seg_sa`` holds: a perfect segmentation);
- ``majority``: a voxel is LV when most of its slab is (the best a binary label can do);
- ``fraction``: each voxel counts the fraction of its slab that is LV (partial volume; no
  binary label map can hold it).

Run (seconds):
    python benchmarks/segment/partial_volume_floor.py --frames 10
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from medflow.cardiac import LV_BLOOD
from medflow.phantom import cine_planes as cp
from medflow.phantom.cardiac import frame_times, subject_truth
from medflow.phantom.cli import subject_seed
from medflow.phantom.heart import HeartModel

PLANES = 20  # samples across the slab for the partial-volume fraction


def lv_volumes_ml(heart: HeartModel, t: float) -> dict[str, float]:
    """LV blood-pool volume (mL) at cycle fraction t, counted three ways (module doc)."""
    affine, shape = cp.sa_geometry(heart)
    centre = cp.grid_points(affine, shape)
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    thickness = cp.SA_SLICE_THICKNESS_MM
    voxel_ml = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0))) / 1000.0
    offsets = (np.arange(PLANES) + 0.5) / PLANES * thickness - thickness / 2
    frac = np.mean([heart.labels_at((centre + o * normal).reshape(-1, 3), t) == LV_BLOOD
                    for o in offsets], axis=0)
    mid = heart.labels_at(centre.reshape(-1, 3), t) == LV_BLOOD
    return {"centre": float(mid.sum()) * voxel_ml,
            "majority": float((frac > 0.5).sum()) * voxel_ml,
            "fraction": float(frac.sum()) * voxel_ml}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--subjects", default="16-23", help="first-last index of the cohort")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    first, last = (int(x) for x in a.subjects.split("-"))
    errors: dict[str, dict[str, list[float]]] = {}
    for i in range(first, last + 1):
        heart = HeartModel.from_seed(subject_seed(a.seed, i), a.frames)
        truth = subject_truth(heart, a.frames)
        es_t = float(frame_times(a.frames)[truth["es_frame"]])
        ed, es = lv_volumes_ml(heart, 0.0), lv_volumes_ml(heart, es_t)
        row = {"subject": f"sub-{i:03d}"}
        for way in ed:
            lvef = 100.0 * (ed[way] - es[way]) / ed[way]
            e = errors.setdefault(way, {"lvef": [], "lvedv": [], "lvesv": []})
            e["lvef"].append(lvef - truth["lvef_pct"])
            e["lvedv"].append(100.0 * (ed[way] / truth["lvedv_ml"] - 1))
            e["lvesv"].append(100.0 * (es[way] / truth["lvesv_ml"] - 1))
            row[way] = {"lvef_error_points": round(e["lvef"][-1], 2),
                        "lvesv_error_pct": round(e["lvesv"][-1], 2)}
        print(json.dumps(row))
    summary = {way: {f"{k}_mean_abs": round(float(np.mean(np.abs(v))), 2)
                     for k, v in e.items()} for way, e in errors.items()}
    print(json.dumps({"frames": a.frames, "subjects": a.subjects, "summary": summary},
                     indent=1))


if __name__ == "__main__":
    main()
