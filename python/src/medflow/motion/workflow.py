"""File-level steps behind ``estimate-motion-mesh fit``: views -> meshes -> measures ->
outputs, for one subject or every row of a samplesheet."""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.io.sidecar import Timer, make_sidecar
from medflow.motion.fit import EDFit, FitOptions, fit_ed, fit_motion
from medflow.motion.initial import initial_frame
from medflow.motion.inputs import Inputs, read_inputs
from medflow.motion.measures import mesh_wall, phenotypes, quality
from medflow.io.outputs import check_outputs
from medflow.motion.outputs import output_paths, vertex_table, write_subject
from medflow.motion.targets import build_targets
from medflow.motion.template import LV_ENDO, LV_EPI, Topology

log = logging.getLogger("medflow")
TOOL = "estimate-motion-mesh"


def residuals(rms: np.ndarray, planes: list[tuple[str, int]]) -> dict[str, float]:
    """Mean contour distance (mm) per view over its planes, frames and surfaces."""
    out = {}
    for view in dict.fromkeys(name for name, _ in planes):
        sel = [i for i, (name, _) in enumerate(planes) if name == view]
        vals = rms[:, sel]
        out[view] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def measure(inputs: Inputs, topo: Topology, vertices: np.ndarray, info: dict,
            planes: list, ed: EDFit) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """Phenotypes, QC, the per-frame table and the vertex table of fitted meshes."""
    sa = inputs.views[0]
    row, curves, geometry = phenotypes(topo, vertices, info["volumes_ml"],
                                       inputs.frame_interval_s, sa.labels, sa.spacing)
    res = residuals(info["rms_mm"], planes)
    row.update({f"fit_rms_{view}_mm": v for view, v in res.items()})
    row["wall_volume_ratio_min"] = info["cell_volume_ratio_min"]
    row["wall_volume_ratio_max"] = info["cell_volume_ratio_max"]
    row.update(quality(row, curves, sa.labels[..., row["ed_frame"]], res,
                       info["cell_volume_ratio_min"]))
    frames = pd.DataFrame({"frame": np.arange(vertices.shape[0]), **curves})
    wall, _ = mesh_wall(topo, vertices, row["ed_frame"])
    aha = np.zeros(topo.n_vertices, np.int64)
    aha[topo.ring_ids(LV_ENDO)] = wall.node_aha
    aha[topo.ring_ids(LV_EPI)] = wall.radial_aha
    geometry["slice_shifts_mm"] = ed.shifts.tolist()
    geometry["template_shape"] = ed.frame.shape.tolist()
    geometry["kinematic_per_frame"] = info["kinematic"].tolist()
    return row, frames, vertex_table(topo, vertices[row["ed_frame"]], aha), geometry


def fit_files(sa: Path, la_2ch: Path | None, la_4ch: Path | None, out: Path,
              prefix: str | None = None,
              opts: FitOptions | None = None, seed: int = 0, threads: int = 1) -> dict:
    """Fit one subject and write its outputs; returns the phenotype row.

    Args:
        sa, la_2ch, la_4ch: cine segmentations (UK Biobank labels); long-axis optional.
        out, prefix: output folder and file prefix (see :mod:`medflow.motion.outputs`).
        opts: fitting options; seed: torch seed (the fit is deterministic given it).
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    opts = opts or FitOptions()
    check_outputs(output_paths(out, prefix).values(), [sa, la_2ch, la_4ch])
    timer = Timer()
    inputs = read_inputs(sa, la_2ch, la_4ch)
    targets, planes = build_targets(inputs.views, {
        "la_2ch": opts.long_axis_weight, "la_4ch": opts.long_axis_weight})
    n_sa = inputs.views[0].labels.shape[2]
    init = initial_frame(inputs.views[0], inputs.views[1:])
    topo = Topology()
    timer.mark("read_s")
    ed = fit_ed(targets, n_sa, init, topo, opts)
    timer.mark("ed_fit_s")
    vertices, info = fit_motion(targets, ed, topo, opts)
    timer.mark("motion_fit_s")
    row, frames, vtable, geometry = measure(inputs, topo, vertices, info, planes, ed)
    params = {"options": opts.to_dict(), "seed": seed, "mode": "fit",
              "frame_interval_s": inputs.frame_interval_s}
    ins = {f"seg_{k}": p for k, p in inputs.paths.items()}
    sidecar = make_sidecar(f"{TOOL} fit", params, ins, timer, phenotypes=row,
                           geometry=geometry, losses={**ed.loss, "motion": {
                               k: v for k, v in info.items() if isinstance(v, float)}})
    write_subject(out, prefix, topo, vertices, row, frames, vtable, sidecar)
    return row


def _fit_row(args) -> tuple[str, str | None]:
    subject, paths, outdir, opts, seed = args
    from medflow.errors import MedflowError

    try:
        fit_files(paths["sa"], paths.get("la_2ch"), paths.get("la_4ch"), outdir / subject,
                  subject, opts, seed)
        return subject, None
    except MedflowError as exc:
        return subject, f"exit {exc.exit_code}: {exc.format_message()}"


def fit_batch(samplesheet: Path, outdir: Path, roles: dict[str, str], opts: FitOptions,
              seed: int, jobs: int) -> tuple[int, list[str]]:
    """Fit every subject of a samplesheet into ``outdir/<subject>/``.

    Args:
        roles: view -> samplesheet column (``sa``, ``la_2ch``, ``la_4ch``).

    Returns:
        (subjects done, one line per failed subject).
    """
    from medflow.io.samplesheet import load_samplesheet

    df = load_samplesheet(samplesheet, required_roles=(roles["sa"],))
    work = []
    for row in df.to_dict("records"):
        paths = {view: Path(row[col]) for view, col in roles.items()
                 if col in row and isinstance(row[col], str)}
        work.append((row["subject"], paths, Path(outdir), opts, seed))
    # Before any fit: no subject's output may overwrite an input (exit 2).
    check_outputs([p for subject, _, out, _, _ in work
                   for p in output_paths(out / subject, subject).values()],
                  [samplesheet, *(p for w in work for p in w[1].values())])
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_fit_row, work))
    else:
        results = [_fit_row(w) for w in work]
    failed = [f"{s}: {err}" for s, err in results if err]
    return len(results) - len(failed), failed
