"""The template heart mesh: LV endocardium, LV epicardium and RV endocardium as closed
surfaces with a fixed vertex order, built from a few shape parameters.

Heart frame (mm): z is the LV long axis pointing from apex to base, the base (mitral)
plane is z = 0, x points from the LV axis towards the RV (septum), y = z x x (anterior).

- LV endocardium: a truncated prolate ellipsoid, rings at ``u_l = l/L * pi/2`` with radius
  ``a cos u`` at height ``-c sin u`` (``l = 0`` the basal ring), an apex vertex, and a flat
  basal cap (the mitral plane). The epicardium: radii ``a + w_r``, ``c + w_c`` at the same
  ``(u, phi)``; endocardial vertex i and epicardial vertex i form a material pair across
  the wall (the wall grid of :mod:`medflow.cardiac.strain`).
- RV endocardium: a crescent wrapped around the septum, between the epicardium and
  ``r^2 = r_epi^2 + q cos^2(pi theta / 2 beta) cos^2 v`` for ``|theta| <= beta``, rings at
  ``v_m`` down to depth ``c_rv``, capped at the base and at its tip. Its two horns are
  the RV insertion points.

The classic simplified geometry of the ventricles (a prolate spheroidal LV with a
crescent RV); the subject's shape comes from fitting it to the images and deforming it.
Faces are oriented outwards (positive enclosed volume).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SURFACES = ("lv_endo", "lv_epi", "rv_endo")
LV_ENDO, LV_EPI, RV_ENDO = 0, 1, 2
#: Shape parameters, their order in the parameter vector and plausible starting values.
SHAPE_NAMES = ("a", "c", "w_r", "w_c", "rv_q", "rv_beta", "rv_c")


def _side(rings: np.ndarray) -> list[tuple[int, int, int]]:
    """Outward triangles between consecutive rings (rings (R, n) of vertex ids, each ring
    counter-clockwise about +z, ring r+1 below ring r)."""
    faces = []
    n = rings.shape[1]
    for r in range(rings.shape[0] - 1):
        for j in range(n):
            p00, p01 = rings[r, j], rings[r, (j + 1) % n]
            p10, p11 = rings[r + 1, j], rings[r + 1, (j + 1) % n]
            faces += [(p00, p10, p01), (p01, p10, p11)]
    return faces


def _strip_cap(outer: list[int], inner: list[int], up: bool) -> list[tuple[int, int, int]]:
    """Triangles between an outer and an inner arc of the same angles (horns shared at the
    ends): a crescent's flat cap, normal +z when ``up`` else -z."""
    faces = []
    for j in range(len(outer) - 1):
        tri = [(outer[j], outer[j + 1], inner[j + 1]), (outer[j], inner[j + 1], inner[j])]
        for f in tri:
            if len(set(f)) == 3:
                faces.append(f if up else (f[0], f[2], f[1]))
    return faces


@dataclass(frozen=True)
class Topology:
    """Vertex layout and faces of the template (independent of the shape parameters)."""

    levels: int = 16          # LV rings from the base to just above the apex
    angles: int = 40          # vertices per LV ring
    rv_levels: int = 12
    rv_arc: int = 16          # angular steps across the RV crescent
    faces: np.ndarray = field(init=False, repr=False)
    surface_of_face: np.ndarray = field(init=False, repr=False)
    surface_of_vertex: np.ndarray = field(init=False, repr=False)
    face_is_cap: np.ndarray = field(init=False, repr=False)
    n_vertices: int = field(init=False)

    def __post_init__(self) -> None:
        L, A = self.levels, self.angles
        lv_block = L * A + 1 + A + 1          # rings, apex, inner cap ring, cap centre
        rv_ring = 2 * self.rv_arc
        n = 2 * lv_block + self.rv_levels * rv_ring
        faces, owner, cap = [], [], []
        for s in (LV_ENDO, LV_EPI):
            o = s * lv_block
            rings = o + np.arange(L * A).reshape(L, A)
            apex, inner, centre = o + L * A, o + L * A + 1 + np.arange(A), o + L * A + 1 + A
            f = _side(rings)
            f += [(rings[-1, j], apex, rings[-1, (j + 1) % A]) for j in range(A)]
            cap += [False] * len(f) + [True] * (3 * A)
            for j in range(A):
                j1 = (j + 1) % A
                f += [(rings[0, j], rings[0, j1], inner[j1]), (rings[0, j], inner[j1], inner[j]),
                      (inner[j], inner[j1], centre)]
            faces += f
            owner += [s] * len(f)
        o = 2 * lv_block
        rings = o + np.arange(self.rv_levels * rv_ring).reshape(self.rv_levels, rv_ring)
        f = _side(rings)
        for r, up in ((0, True), (self.rv_levels - 1, False)):
            outer = list(rings[r, :self.rv_arc + 1])
            # ring layout: horn A, outer arc, horn B, inner arc back (see template_vertices)
            inner = ([rings[r, 0]] + list(rings[r, self.rv_arc + 1:][::-1])
                     + [rings[r, self.rv_arc]])
            f += _strip_cap(outer, inner, up)
        faces += f
        owner += [RV_ENDO] * len(f)
        cap += [False] * len(f)     # the RV's caps are not part of the LV wall
        sv = np.repeat([LV_ENDO, LV_EPI, RV_ENDO], [lv_block, lv_block, n - 2 * lv_block])
        object.__setattr__(self, "faces", np.asarray(faces, np.int64))
        object.__setattr__(self, "surface_of_face", np.asarray(owner, np.int64))
        object.__setattr__(self, "surface_of_vertex", sv)
        object.__setattr__(self, "face_is_cap", np.asarray(cap, bool))
        object.__setattr__(self, "n_vertices", int(n))

    @property
    def lv_block(self) -> int:
        return self.levels * self.angles + 2 + self.angles

    def ring_ids(self, surface: int) -> np.ndarray:
        """(L, A) vertex ids of the LV rings of ``LV_ENDO`` or ``LV_EPI`` (the wall grid)."""
        o = surface * self.lv_block
        return o + np.arange(self.levels * self.angles).reshape(self.levels, self.angles)

    def rv_ring_ids(self) -> np.ndarray:
        """(M, 2 n) vertex ids of the RV rings: horn A, outer arc, horn B, inner arc."""
        o = 2 * self.lv_block
        return o + np.arange(self.rv_levels * 2 * self.rv_arc).reshape(self.rv_levels, -1)

    def horn_ids(self) -> np.ndarray:
        """(M, 2) vertex ids of the RV horns (insertion points) per RV level: (-beta, +beta)."""
        r = self.rv_ring_ids()
        return np.stack([r[:, 0], r[:, self.rv_arc]], axis=1)

    def surface_faces(self, surface: int, caps: bool = True) -> np.ndarray:
        """Faces of one surface (without the LV's basal caps when ``caps`` is False)."""
        keep = self.surface_of_face == surface
        return self.faces[keep if caps else keep & ~self.face_is_cap]


def template_vertices(topo: Topology, shape: torch.Tensor) -> torch.Tensor:
    """Vertices (V, 3) of the template in the heart frame for shape parameters.

    Args:
        topo: the layout.
        shape: (7,) tensor in :data:`SHAPE_NAMES` order, mm and radians: LV cavity radii
            a, c; wall thickness w_r (equator), w_c (apex); RV crescent size rv_q (mm^2),
            half-angle rv_beta and depth rv_c.

    Returns:
        (V, 3) tensor, differentiable in ``shape``.
    """
    a, c, wr, wc, q, beta, crv = shape.unbind()
    L, A = topo.levels, topo.angles
    dt = shape.dtype
    u = torch.arange(L, dtype=dt) / L * (torch.pi / 2)
    phi = torch.arange(A, dtype=dt) / A * (2 * torch.pi)
    cu, su = torch.cos(u)[:, None], torch.sin(u)[:, None]
    parts = []
    for ra, rc in ((a, c), (a + wr, c + wc)):
        r = ra * cu
        rings = torch.stack([r * torch.cos(phi), r * torch.sin(phi), (-rc * su).expand(L, A)],
                            dim=-1).reshape(-1, 3)
        apex = torch.stack([ra * 0, ra * 0, -rc])[None]
        inner = torch.stack([0.5 * ra * torch.cos(phi), 0.5 * ra * torch.sin(phi),
                             torch.zeros_like(phi)], dim=-1)
        centre = torch.zeros(1, 3, dtype=dt)
        parts += [rings, apex, inner, centre]
    # RV rings: depth v in [0, ~pi/2), crescent over theta in [-beta, beta].
    M, n = topo.rv_levels, topo.rv_arc
    v = torch.arange(M, dtype=dt) / M * (0.47 * torch.pi)
    z = -crv * torch.sin(v)                                     # (M,)
    k = (a + wr) ** 2 * torch.clamp(1 - (z / (c + wc)) ** 2, min=1e-4)
    theta = -beta + 2 * beta * torch.arange(n + 1, dtype=dt) / n   # (n+1,)
    bump = torch.cos(torch.pi * theta / (2 * beta)) ** 2
    r_out = torch.sqrt(k[:, None] + q * bump[None] * torch.cos(v)[:, None] ** 2)
    r_in = torch.sqrt(k)[:, None].expand(M, n + 1)
    out = torch.stack([r_out * torch.cos(theta), r_out * torch.sin(theta),
                       z[:, None].expand(M, n + 1)], dim=-1)           # (M, n+1, 3)
    inn = torch.stack([r_in * torch.cos(theta), r_in * torch.sin(theta),
                       z[:, None].expand(M, n + 1)], dim=-1)
    ring = torch.cat([out[:, :n + 1], inn[:, 1:n].flip(1)], dim=1)    # horn A .. horn B .. back
    parts.append(ring.reshape(-1, 3))
    return torch.cat(parts, dim=0)


def closed_volumes(vertices: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Enclosed volume of each surface (..., 3) in mL, for vertices (..., V, 3) in mm:
    the divergence theorem over the outward triangles (sum of signed tetrahedra)."""
    f = torch.as_tensor(topo.faces)
    tri = vertices[..., f, :]                                        # (..., F, 3, 3)
    six = (tri[..., 0, :] * torch.cross(tri[..., 1, :], tri[..., 2, :], dim=-1)).sum(-1)
    owner = torch.as_tensor(topo.surface_of_face)
    out = torch.zeros((*six.shape[:-1], 3), dtype=six.dtype)
    out = out.index_add(-1, owner, six)
    return out / 6.0 / 1000.0
