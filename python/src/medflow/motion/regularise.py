"""Priors on the motion: smooth along the surfaces, near-incompressible wall, smooth
longitudinal field.

- Surface smoothness: the graph Laplacian of the displacement on the mesh: sliding along a surface, which no segmentation
  sees, is spread evenly between what the images pin down (the base plane, the apex, the
  RV insertions), as in the mesh-motion seed's Laplacian loss.
- Incompressibility: the volume of every wall cell (the hexahedron between an
  endocardial and the matching epicardial quad of the ring grid) stays its ED volume; the
  myocardium is nearly incompressible (the biomechanics-informed regularisation seed
  learns this property; here it is imposed directly).
- Longitudinal smoothness: the bending energy of the displacement's long-axis component
  on the control grid, stronger than for the in-plane components, which must change
  sharply across the wall as it thickens.
"""

from __future__ import annotations

import numpy as np
import torch

from medflow.motion.template import LV_ENDO, LV_EPI, Topology

# Five tetrahedra filling a hexahedron with corners 0-3 (one face) and 4-7 (the other).
_TETS = ((0, 1, 3, 4), (1, 2, 3, 6), (1, 4, 5, 6), (3, 4, 6, 7), (1, 3, 4, 6))


def mesh_edges(topo: Topology) -> torch.Tensor:
    """(E, 2) undirected edges of the mesh, each once."""
    f = topo.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return torch.as_tensor(np.unique(np.sort(e, axis=1), axis=0))


def graph_laplacian(values: torch.Tensor, edges: torch.Tensor, n: int) -> torch.Tensor:
    """Uniform graph Laplacian ``x_i - mean of x over i's neighbours`` of per-vertex
    values (..., V, D) (the mesh-motion seed's Laplacian smoothness)."""
    i, j = edges[:, 0], edges[:, 1]
    deg = torch.zeros(n, dtype=values.dtype).index_add(0, i, torch.ones_like(i, dtype=values.dtype))
    deg = deg.index_add(0, j, torch.ones_like(j, dtype=values.dtype))
    total = torch.zeros_like(values).index_add(-2, i, values[..., j, :])
    total = total.index_add(-2, j, values[..., i, :])
    return values - total / deg[:, None]


def wall_cells(topo: Topology) -> np.ndarray:
    """(N, 8) vertex ids of the wall cells: endocardial quad corners (l, a), (l, a+1),
    (l+1, a+1), (l+1, a), then the same epicardial corners."""
    en, ep = topo.ring_ids(LV_ENDO), topo.ring_ids(LV_EPI)
    quad = lambda g: np.stack([g[:-1], np.roll(g, -1, 1)[:-1], np.roll(g, -1, 1)[1:],  # noqa
                               g[1:]], -1).reshape(-1, 4)
    return np.concatenate([quad(en), quad(ep)], axis=1)


def cell_volumes(vertices: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Signed volumes (..., N) of hexahedral cells (N, 8) of vertices (..., V, 3) (mm^3;
    the sign is fixed by the corner order, so only ratios are used)."""
    p = vertices[..., cells, :]                                     # (..., N, 8, 3)
    vol = 0.0
    for a, b, c, d in _TETS:
        pa = p[..., a, :]
        vol = vol + ((p[..., b, :] - pa) * torch.cross(p[..., c, :] - pa, p[..., d, :] - pa,
                                                        dim=-1)).sum(-1)
    return vol / 6.0
