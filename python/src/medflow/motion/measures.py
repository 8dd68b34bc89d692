"""What the meshes measure: volumes per frame, UK Biobank phenotypes, strain, wall
thickness and quality control, through the shared definitions in :mod:`medflow.cardiac`.
"""

from __future__ import annotations

import numpy as np

from medflow.cardiac.aha import aha_axes, short_axis_angle
from medflow.cardiac.phenotypes import ventricular_phenotypes, voxel_phenotypes
from medflow.cardiac.qc import plausibility_reasons, short_axis_qc, volume_curve_reasons
from medflow.cardiac.strain import (WallGrid, label_wall, peak_strain, strain_curves,
                                    wall_thickness)
from medflow.motion.template import LV_ENDO, LV_EPI, Topology

#: A view whose mean contour distance exceeds this is flagged (mm).
MAX_FIT_RMS_MM = 3.0
#: A wall cell shrinking below this fraction of its ED volume means the mesh folds.
MIN_WALL_VOLUME_RATIO = 0.25


def mesh_wall(topo: Topology, vertices: np.ndarray, ed_frame: int = 0
              ) -> tuple[WallGrid, dict]:
    """The LV wall grid of the meshes, labelled with AHA segments at ED.

    The long axis runs from the endocardial apex vertex to the centre of the basal
    endocardial ring; the septal direction and the RV insertion angles come from the RV
    horns (the crescent's edges) at the RV levels that lie in the LV's basal two thirds.

    Returns:
        (wall, geometry): geometry holds ``insertions_deg`` and the axes (for the sidecar).
    """
    ed = vertices[ed_frame]
    endo_ids, epi_ids = topo.ring_ids(LV_ENDO), topo.ring_ids(LV_EPI)
    base = ed[endo_ids[0]].mean(0)
    apex = ed[LV_ENDO * topo.lv_block + topo.levels * topo.angles]
    axis = base - apex
    horns = ed[topo.horn_ids()]                                    # (M, 2, 3)
    depth = (base - horns.mean(1)) @ axis / (axis @ axis)
    use = (depth > 0.05) & (depth < 2.0 / 3.0)
    use = use if use.any() else np.ones(len(depth), bool)
    mid = horns[use].mean(1).mean(0)                                # septal mid-direction
    centre = base - axis * ((base - mid) @ axis) / (axis @ axis)
    axes = aha_axes(axis, mid - centre)
    ang = short_axis_angle(horns[use].reshape(-1, 3), centre, axes).reshape(-1, 2)
    # The anterior insertion point is the horn with the smaller angle (anterior is 0).
    lo, hi = np.sort(ang, axis=1).mean(0)
    lo, hi = float(np.clip(lo, 1.0, 89.0)), float(np.clip(hi, 91.0, 179.0))
    wall = label_wall(vertices[:, endo_ids], vertices[:, epi_ids], axis, mid - centre, base,
                      apex, (lo, hi), ed_frame)
    return wall, {"insertions_deg": [lo, hi], "apex_to_base": axes["apex_to_base"].tolist(),
                  "lv_to_sep": axes["lv_to_sep"].tolist(), "base_mm": base.tolist(),
                  "apex_mm": apex.tolist()}


def _voxel_name(key: str) -> str:
    """``lvef_pct`` -> ``lvef_voxel_pct`` (the voxel-counting twin of a mesh column)."""
    head, _, unit = key.rpartition("_")
    return f"{head}_voxel_{unit}" if head else f"{key}_voxel"


def phenotypes(topo: Topology, vertices: np.ndarray, volumes_ml: np.ndarray,
               frame_interval_s: float | None, sa_labels: np.ndarray | None = None,
               sa_spacing=None) -> tuple[dict, dict, dict]:
    """Phenotypes of one subject's meshes.

    Args:
        topo: template layout; vertices: (T, V, 3) mm; volumes_ml: (T, 3) enclosed volumes
            of LV endocardium, LV epicardium, RV endocardium.
        frame_interval_s: time between frames (None: no heart rate, no LVCO).
        sa_labels, sa_spacing: the short-axis segmentation, for the ``_voxel`` twins.

    Returns:
        (row, curves, geometry): the phenotype row (``lvedv_ml`` ... strain, wall
        thickness, ``*_voxel_*``), per-frame curves (volumes and global strain) and the
        AHA geometry.
    """
    lv, epi, rv = volumes_ml[:, 0], volumes_ml[:, 1], volumes_ml[:, 2]
    myo = epi - lv
    row = ventricular_phenotypes(lv, myo, rv, frame_interval_s, "first")
    wall, geometry = mesh_wall(topo, vertices, row["ed_frame"])
    curves = strain_curves(wall)
    row.update(peak_strain(curves))
    epi_faces = topo.surface_faces(LV_EPI, caps=False)   # the wall, not the valve plane
    row.update(wall_thickness(wall, vertices[row["ed_frame"]], epi_faces))
    if sa_labels is not None:
        vox = voxel_phenotypes(sa_labels, sa_spacing, frame_interval_s, "first")
        for key, value in vox.items():
            if not key.endswith("_per_frame") and key not in ("ed_rule", "ed_frame"):
                row[_voxel_name(key) if key != "es_frame" else "es_frame_voxel"] = value
    per_frame = {"lv_ml": lv, "myo_ml": myo, "rv_ml": rv,
                 **{f"{k}_global_pct": curves[k]["global"] for k in ("ecc", "err", "ell")}}
    return row, per_frame, geometry


def quality(row: dict, per_frame: dict, sa_ed_labels: np.ndarray, residual_mm: dict,
            wall_volume_ratio_min: float) -> dict:
    """QC columns: ``qc_pass`` and ``qc_reasons`` (``"; "``-joined), from the ukbb_cardiac
    short-axis rules on the ED segmentation, the mesh volume curves, the plausibility
    ranges, the fit residual per view (``fit_rms_<view>_mm`` > 3 mm) and a wall cell
    whose volume collapses or inverts (ratio to ED < 0.25: the mesh folds); a fit without
    a long-axis view is flagged (it misses the base: on the demo cohort's true labels LVEF
    6.9 points low on average, benchmarks/motion/README.md)."""
    reasons = [f"short axis: {r}" for r in short_axis_qc(sa_ed_labels)]
    if not set(residual_mm) - {"sa"}:
        reasons.append("short axis only: no long-axis view shows the base")
    reasons += volume_curve_reasons(per_frame["lv_ml"], "LV", row["ed_frame"])
    reasons += volume_curve_reasons(per_frame["rv_ml"], "RV", row["ed_frame"])
    reasons += plausibility_reasons(row)
    for view, rms in residual_mm.items():
        if np.isfinite(rms) and rms > MAX_FIT_RMS_MM:
            reasons.append(f"fit residual on {view} {rms:.1f} mm > {MAX_FIT_RMS_MM:g} mm")
    if not wall_volume_ratio_min > MIN_WALL_VOLUME_RATIO:
        reasons.append(f"the motion folds the myocardium (a wall cell keeps "
                       f"{wall_volume_ratio_min:.2f} of its ED volume)")
    return {"qc_pass": not reasons, "qc_reasons": "; ".join(reasons)}
