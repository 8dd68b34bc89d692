"""Accuracy of a subject's meshes against the phantom's truth.json (benchmarks only).

Tracking error: the distance at ES between each material vertex (LV and RV wall; not the
valve-plane caps, whose points are blood) and the analytic forward motion of its ED
position. Phenotype errors: measured minus true, volumes in % of the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medflow.motion.template import LV_ENDO, LV_EPI, Topology
from medflow.phantom.heart import HeartModel, HeartParams

PHENOTYPES = {"lvef_pct": "lvef_pct", "lvedv_ml": "lvedv_ml", "lvesv_ml": "lvesv_ml",
              "lvm_g": "lv_mass_g", "rvef_pct": "rvef_pct", "rvedv_ml": "rvedv_ml",
              "ecc_global_pct": "ecc_global_pct", "err_global_pct": "err_global_pct",
              "ell_global_pct": "ell_global_pct", "wt_global_mm": "wt_global_mm",
              # The voxel-counting twins (today's cohort-table method), for comparison.
              "lvef_voxel_pct": "lvef_pct", "lvedv_voxel_ml": "lvedv_ml",
              "lvesv_voxel_ml": "lvesv_ml", "lvm_voxel_g": "lv_mass_g",
              "rvef_voxel_pct": "rvef_pct", "rvedv_voxel_ml": "rvedv_ml"}
RELATIVE = ("lvedv_ml", "lvesv_ml", "lvm_g", "rvedv_ml", "lvedv_voxel_ml", "lvesv_voxel_ml",
            "lvm_voxel_g", "rvedv_voxel_ml")


def heart_of(truth: dict) -> HeartModel:
    m = dict(truth["model"])
    m["rotation"] = tuple(tuple(r) for r in m["rotation"])
    m["origin"] = tuple(m["origin"])
    return HeartModel(HeartParams(**m))


def material_vertices(topo: Topology) -> np.ndarray:
    """Vertices that are tissue (every vertex but the LV's valve-plane caps)."""
    keep = np.ones(topo.n_vertices, bool)
    for s in (LV_ENDO, LV_EPI):
        first = s * topo.lv_block + topo.levels * topo.angles + 1
        keep[first:first + topo.angles + 1] = False
    return keep


def tracking_error(vertices: np.ndarray, truth: dict, frame: int | None = None) -> dict:
    """Mean tracking error (mm) at ``frame`` (default ES) over all material vertices and
    over the LV wall (endocardium and epicardium)."""
    topo = Topology()
    heart = heart_of(truth)
    frames = int(truth["frames"])
    frame = int(truth["es_frame"]) if frame is None else frame
    true = heart.forward(vertices[0], frame / frames)
    err = np.linalg.norm(vertices[frame] - true, axis=1)
    keep = material_vertices(topo) & np.isfinite(err)
    lv = keep & np.isin(topo.surface_of_vertex, (LV_ENDO, LV_EPI))
    return {"track_es_mm": float(err[keep].mean()), "track_es_lv_mm": float(err[lv].mean()),
            "track_es_max_mm": float(err[keep].max())}


def phenotype_errors(row: dict, truth: dict) -> dict:
    """Measured minus true per phenotype (``<name>_err``; volumes and mass in %)."""
    out = {}
    for key, tkey in PHENOTYPES.items():
        if key in row and tkey in truth:
            est, tru = float(row[key]), float(truth[tkey])
            out[f"{key}_err"] = 100 * (est - tru) / tru if key in RELATIVE else est - tru
    return out


def load_truth(path: Path) -> dict:
    truth = json.loads(Path(path).read_text())
    if "ecc_global_pct" not in truth:      # a cohort written before the strain truth
        from medflow.phantom.motion_truth import strain_truth

        truth.update(strain_truth(heart_of(truth), int(truth["frames"])))
    return truth
