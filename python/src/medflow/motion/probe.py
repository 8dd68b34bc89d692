"""What the motion network sees: every frame's label maps probed at the ED mesh, pooled
onto a fixed set of surface points (the network's input and output nodes).

**Probes.** Each ED vertex is projected onto the nearest short-axis slice and onto each
long-axis plane it lies near. There the signed distance maps of its surface's label
class (:mod:`medflow.motion.targets`) give the contour's displacement since ED along the
in-plane normal: ``-(d_t - d_0) n_t``, with ``d`` the signed distance and ``n_t`` its unit
gradient at frame t. Subtracting ``d_0`` removes what the projection itself adds where the
surface is oblique to the plane. It is the step an ICP iteration would take, measured once
per frame. The slots are the short-axis stack, the 2-chamber and the 4-chamber plane.

**Nodes.** Fixed vertex ids per surface (LV rings every 3rd level and 5th angle, the apex
and the cap centre; RV rings every 3rd level and 4th step). Each node pools the probes of
its surface's vertices with Gaussian weights on the ED mesh (sigma = the nodes' median
spacing). The same weights, normalised per vertex, spread the network's per-node
displacements back onto every vertex. Node ids and weights come from the vertex order
and the subject's own ED mesh: no eigen-decomposition, so they are the same on every
machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medflow.motion.slicer import PlaneTargets, bilinear
from medflow.motion.template import LV_ENDO, LV_EPI, Topology

SLOTS = ("sa", "la_2ch", "la_4ch")
PER_SLOT = 4                     # displacement cue (3, heart frame) and coverage (1)
FEATURES = len(SLOTS) * PER_SLOT
#: A long-axis plane informs the vertices within this distance of it (mm).
LA_REACH_MM = 4.0
#: Signed distances beyond this (mm) are "class absent here", not a displacement.
FAR_MM = 30.0


def node_ids(topo: Topology) -> np.ndarray:
    """(K,) vertex ids of the network's nodes, grouped by surface."""
    ids = []
    for s in (LV_ENDO, LV_EPI):
        rings = topo.ring_ids(s)
        ids.append(rings[::3, ::5].ravel())
        first = s * topo.lv_block + topo.levels * topo.angles
        ids.append(np.array([first, first + topo.angles + 1]))   # apex, cap centre
    rv = topo.rv_ring_ids()
    ids.append(rv[::3, ::4].ravel())
    return np.concatenate(ids)


@dataclass
class NodeWeights:
    """Gaussian pooling between vertices and nodes of one subject's ED mesh.

    Attributes:
        pool: (K, V) weights of each node over its surface's vertices (rows sum to 1).
        spread: (V, K) weights of each vertex over its surface's nodes (rows sum to 1).
        position: (K, 3) node ED positions in the heart frame, over the LV cavity radius.
        surface: (K,) surface of each node.
    """

    pool: torch.Tensor
    spread: torch.Tensor
    position: torch.Tensor
    surface: torch.Tensor


def node_weights(ed_local: np.ndarray, topo: Topology, cavity_radius: float,
                 dtype=torch.float32) -> NodeWeights:
    """Pooling weights for an ED mesh given in the heart frame (V, 3) mm."""
    ids = node_ids(topo)
    surf_v = topo.surface_of_vertex
    surf_k = surf_v[ids]
    centres = ed_local[ids]
    d2 = ((ed_local[:, None, :] - centres[None]) ** 2).sum(-1)            # (V, K)
    gap = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    gap[surf_k[:, None] != surf_k[None]] = np.inf
    np.fill_diagonal(gap, np.inf)
    sigma = float(np.median(gap.min(1)))
    w = np.exp(-d2 / (2 * sigma ** 2)) * (surf_v[:, None] == surf_k[None])
    w = np.maximum(w, 1e-12 * (surf_v[:, None] == surf_k[None]))
    t = lambda a: torch.as_tensor(a, dtype=dtype)                        # noqa: E731
    return NodeWeights(pool=t((w / w.sum(0, keepdims=True)).T),
                       spread=t(w / w.sum(1, keepdims=True)),
                       position=t(centres / cavity_radius),
                       surface=torch.as_tensor(surf_k))


def _gradient(maps, key, x, y, size, pix):
    """Unit in-plane gradient (along u, v) of bilinear maps by central differences."""
    h = 0.5
    gx = (bilinear(maps, key, x + h, y, size)[0] - bilinear(maps, key, x - h, y, size)[0]) \
        / (2 * h * pix[:, 0])
    gy = (bilinear(maps, key, x, y + h, size)[0] - bilinear(maps, key, x, y - h, size)[0]) \
        / (2 * h * pix[:, 1])
    norm = torch.sqrt(gx ** 2 + gy ** 2).clamp(min=1e-6)
    return gx / norm, gy / norm


def vertex_probes(targets: PlaneTargets, planes: list[tuple[str, int]], shifts: np.ndarray,
                  ed_vertices: np.ndarray, topo: Topology) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex displacement cues of every frame, world axes.

    Args:
        targets: all frames' targets; planes: (view, slice) per plane (``build_targets``).
        shifts: (n_sa, 2) the ED fit's in-plane slice shifts, mm.
        ed_vertices: (V, 3) the ED mesh, world mm.

    Returns:
        (cue (T, S, V, 3) mm, valid (T, S, V) bool) for the slots :data:`SLOTS`.
    """
    dt = targets.sdf.dtype
    T, P, C = targets.present.shape
    V = ed_vertices.shape[0]
    verts = torch.as_tensor(ed_vertices, dtype=dt)
    h = verts @ targets.normal.T - (targets.origin * targets.normal).sum(-1)   # (V, P)
    view = np.array([name for name, _ in planes])
    cls = torch.as_tensor(topo.surface_of_vertex)       # surface i is label class i
    cue = torch.zeros(T, len(SLOTS), V, 3, dtype=dt)
    valid = torch.zeros(T, len(SLOTS), V, dtype=torch.bool)
    maps = targets.sdf.reshape(-1, *targets.sdf.shape[-2:])
    shift = torch.as_tensor(shifts, dtype=dt)
    for s, name in enumerate(SLOTS):
        idx = np.flatnonzero(view == name)
        if idx.size == 0:
            continue
        hs = h[:, idx].abs()
        best = hs.argmin(1)
        plane = torch.as_tensor(idx)[best]                                     # (V,)
        if name == "sa":
            gaps = np.diff(np.sort((targets.origin[idx] @ targets.normal[idx[0]]).numpy()))
            reach = 0.5 * float(np.median(gaps)) if gaps.size else LA_REACH_MM
        else:
            reach = LA_REACH_MM
        near = hs.gather(1, best[:, None])[:, 0] <= reach
        o, n = targets.origin[plane], targets.normal[plane]
        u, v = targets.u[plane], targets.v[plane]
        pix, crop, size = targets.pixel[plane], targets.crop[plane], targets.size[plane]
        si = targets.shift_index[plane]
        off = torch.where((si >= 0)[:, None], shift[si.clamp(min=0)] if len(shift) else 0.0,
                          torch.zeros_like(pix))
        p = verts - h[torch.arange(V), plane][:, None] * n - o
        x = ((p * u).sum(-1) + off[:, 0]) / pix[:, 0] - crop[:, 0]
        y = ((p * v).sum(-1) + off[:, 1]) / pix[:, 1] - crop[:, 1]
        key0 = plane * C + cls
        d0 = bilinear(maps, key0, x, y, size)[0]
        for t in range(T):
            key = (t * P + plane) * C + cls
            d = bilinear(maps, key, x, y, size)[0]
            gx, gy = _gradient(maps, key, x, y, size, pix)
            normal = gx[:, None] * u + gy[:, None] * v
            cue[t, s] = -(d - d0)[:, None] * normal
            present = targets.present[t].reshape(-1)[plane * C + cls]
            valid[t, s] = near & present & (d.abs() < FAR_MM) & (d0.abs() < FAR_MM)
    cue = torch.where(valid[..., None], cue, torch.zeros_like(cue))
    return cue, valid


def node_features(cue: torch.Tensor, valid: torch.Tensor, rotation: np.ndarray,
                  weights: NodeWeights) -> torch.Tensor:
    """Pool vertex cues onto the nodes: (T, K, FEATURES) = per slot the weighted mean
    cue in the heart frame (mm) and the fraction of the node's weight that had a probe."""
    R = torch.as_tensor(rotation, dtype=cue.dtype)
    local = cue @ R                                                   # (T, S, V, 3)
    m = valid.to(cue.dtype)
    covered = torch.einsum("kv,tsv->tsk", weights.pool, m)             # (T, S, K)
    summed = torch.einsum("kv,tsvc->tskc", weights.pool, local * m[..., None])
    mean = summed / covered.clamp(min=1e-6)[..., None]
    feats = torch.cat([mean, covered[..., None]], -1)                  # (T, S, K, 4)
    return feats.permute(0, 2, 1, 3).reshape(cue.shape[0], -1, FEATURES)
