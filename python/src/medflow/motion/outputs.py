"""Writing one subject's results atomically: meshes per frame (PLY, same vertex order),
vertex displacements, the per-frame table, the phenotype row, the vertex table and the
JSON sidecar. Names are ``<prefix>_<what>`` inside the output folder (the pipeline's
``<subject>_...`` layout) or plain ``<what>`` without a prefix.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.io.atomic import atomic_outputs
from medflow.io.sidecar import write_json
from medflow.io.tables import write_table
from medflow.motion.template import SURFACES, Topology

OUTPUTS = {"phenotypes": "phenotypes.parquet", "frames": "frames.parquet",
           "vertices": "vertices.parquet", "displacements": "displacements.npy",
           "meshes": "meshes", "sidecar": "motion.json"}


def output_paths(out: Path, prefix: str | None) -> dict[str, Path]:
    """Output name -> path (``<out>/<prefix>_<file>`` or ``<out>/<file>``)."""
    lead = f"{prefix}_" if prefix else ""
    return {k: Path(out) / f"{lead}{v}" for k, v in OUTPUTS.items()}


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """A binary little-endian PLY of one mesh (float32 vertices, int32 triangles): the
    same bytes for the same mesh (no timestamps or comments)."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), faces, process=False)
    return trimesh.exchange.ply.export_ply(mesh, encoding="binary", include_attributes=False)


def write_subject(out: Path, prefix: str | None, topo: Topology, vertices: np.ndarray,
                  row: dict, frames: pd.DataFrame, vertex_table: pd.DataFrame,
                  sidecar: dict) -> dict[str, Path]:
    """Write everything for one subject (all files appear together or not at all).

    Args:
        vertices: (T, V, 3) world mm.
        row: the phenotype row (one subject).
        frames: the per-frame table; vertex_table: one row per vertex.
        sidecar: the JSON sidecar dict.

    Returns:
        Output name -> path.
    """
    paths = output_paths(out, prefix)
    Path(out).mkdir(parents=True, exist_ok=True)
    disp = (vertices - vertices[:1]).astype(np.float32)
    with atomic_outputs() as o:
        write_table(pd.DataFrame([row]), o.path(paths["phenotypes"]))
        write_table(frames, o.path(paths["frames"]))
        write_table(vertex_table, o.path(paths["vertices"]))
        buf = io.BytesIO()
        np.save(buf, disp, allow_pickle=False)
        o.path(paths["displacements"]).write_bytes(buf.getvalue())
        for t, v in enumerate(vertices):
            o.path(paths["meshes"] / f"frame_{t:03d}.ply").write_bytes(ply_bytes(v, topo.faces))
        write_json(sidecar, o.path(paths["sidecar"]))
    # A rerun with fewer frames must not leave the old run's extra meshes beside the new.
    written = {f"frame_{t:03d}.ply" for t in range(len(vertices))}
    for old in paths["meshes"].glob("frame_*.ply"):
        if old.name not in written:
            old.unlink()
    return paths


def vertex_table(topo: Topology, ed_vertices: np.ndarray, aha: np.ndarray) -> pd.DataFrame:
    """One row per vertex: id, surface name, AHA segment (LV wall rings; 0 elsewhere) and
    the ED position (mm)."""
    return pd.DataFrame({"vertex": np.arange(topo.n_vertices),
                         "surface": np.asarray(SURFACES)[topo.surface_of_vertex],
                         "aha_segment": aha.astype(np.int16),
                         "x_ed_mm": ed_vertices[:, 0], "y_ed_mm": ed_vertices[:, 1],
                         "z_ed_mm": ed_vertices[:, 2]})
