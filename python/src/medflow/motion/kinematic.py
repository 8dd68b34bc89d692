"""The global part of the motion: a 13-parameter kinematic model of the ventricles.

The classic kinematic description of LV motion in cylindrical coordinates about the long
axis (Arts et al., Biophys J 1982 and later "torsion-shortening" models): longitudinal
shortening towards the apex, torsion linear along the axis, and radial inward motion that
keeps the wall's volume (``R^2 = (r^2 - D(z)) / lambda``: the Jacobian is exactly 1). The
RV crescent moves with the septum it is attached to and squeezes towards it by a factor
``nu(z)``. Its parameters, in the ED heart frame (z from the base plane, apex at -L):

    in-plane translation (2, mm), the apex's and the base's displacement along the axis
    (2, mm; in between it is linear, lambda = 1 + (base - apex) / L), tilt omega (2,
    rad), twist phi0 + tau (zeta + 1/2) (rad, zeta = z / L), the cavity term
    D(zeta) = a^2 (d0 + d1 zeta + d2 zeta^2) and log nu(zeta) = n0 + n1 zeta.

All zeros is the identity. It carries what segmentations see only indirectly (the base's
descent along the wall, torsion, the split of the wall's motion between its surfaces)
in a physiological way; a B-spline displacement on top fits the rest
(:mod:`medflow.motion.fit`).
"""

from __future__ import annotations

import numpy as np
import torch

from medflow.motion.template import LV_ENDO, LV_EPI, RV_ENDO, Topology

N_PARAMS = 13
#: Adam step per parameter (mm, rad, fraction of a^2, log-scale).
STEP = torch.tensor([0.5] * 4 + [0.003] * 2 + [0.005] * 2 + [0.03] * 3 + [0.03] * 2)
#: Prior scale per parameter: the data pin most of them; the apex moves little (the base
#: descends towards it), the wall's profile terms start flat, tilts are small. Without
#: these, pixel-level label noise lets the apex and the profile trade off freely.
SIGMA = torch.tensor([10.0, 10.0, 3.0, 30.0, 0.02, 0.02, 1.0, 1.0, 10.0, 0.2, 10.0, 10.0,
                      0.3])


def prior(p: torch.Tensor) -> torch.Tensor:
    """Gaussian prior of the parameters, in units of the data term (mm^2)."""
    return ((p / SIGMA.to(p.dtype)) ** 2).sum()


def rotation_matrix(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (3, 3) of a rotation vector (radians), differentiable."""
    k = torch.zeros(3, 3, dtype=omega.dtype)
    k = k.index_put((torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])), omega)
    return torch.linalg.matrix_exp(k - k.T)


class Kinematic:
    """The kinematic map of one subject's ED mesh (vertices (V, 3), world mm)."""

    def __init__(self, vertices: np.ndarray, rotation: np.ndarray, origin: np.ndarray,
                 topo: Topology, cavity_radius: float, dtype=torch.float32) -> None:
        self.R = torch.as_tensor(rotation, dtype=dtype)
        self.O = torch.as_tensor(origin, dtype=dtype)
        q = (torch.as_tensor(vertices, dtype=dtype) - self.O) @ self.R   # heart frame
        self.z = q[:, 2]
        self.r2 = q[:, 0] ** 2 + q[:, 1] ** 2
        self.theta = torch.atan2(q[:, 1], q[:, 0])
        epi_apex = q[LV_EPI * topo.lv_block + topo.levels * topo.angles, 2]
        self.length = float(-epi_apex)
        self.a2 = float(cavity_radius) ** 2
        surface = torch.as_tensor(topo.surface_of_vertex)
        # Cap vertices (the valve planes' discs) scale like their surface's basal ring.
        cap = torch.zeros(topo.n_vertices, dtype=torch.bool)
        ring_r2 = torch.ones(topo.n_vertices, dtype=dtype)
        for s in (LV_ENDO, LV_EPI):
            first = s * topo.lv_block + topo.levels * topo.angles + 1
            cap[first:first + topo.angles + 1] = True
            ring_r2[first:first + topo.angles + 1] = self.r2[topo.ring_ids(s)[0]].mean()
        self.cap, self.ring_r2 = cap, ring_r2
        # Each RV vertex's septal reference: r^2 of the inner-arc vertex at its angle.
        rv = torch.as_tensor(topo.rv_ring_ids())
        n = topo.rv_arc
        inner = torch.cat([rv[:, :1], rv[:, n + 1:].flip(1), rv[:, n:n + 1]], 1)  # (M, n+1)
        outer = rv[:, :n + 1]
        k = self.r2.clone()
        k[outer.reshape(-1)] = self.r2[inner.reshape(-1)]
        self.k = k
        self.is_rv = surface == RV_ENDO

    def vertices(self, p: torch.Tensor) -> torch.Tensor:
        """Vertices (V, 3) moved by parameters ``p`` (13,)."""
        shift, apex, base, omega = p[0:2], p[2], p[3], p[4:6]
        lam = 1.0 + (base - apex) / self.length
        zeta = self.z / self.length
        twist = p[6] + p[7] * (zeta + 0.5)
        d = self.a2 * (p[8] + p[9] * zeta + p[10] * zeta ** 2)
        nu = torch.exp(p[11] + p[12] * zeta)
        wall = (self.r2 - d) / lam
        rv = (self.k - d) / lam + nu * torch.clamp(self.r2 - self.k, min=0.0) / lam
        d_base = self.a2 * p[8]
        cap = self.r2 * (self.ring_r2 - d_base) / (lam * self.ring_r2)
        big_r2 = torch.where(self.is_rv, rv, torch.where(self.cap, cap, wall))
        big_r = torch.sqrt(torch.clamp(big_r2, min=1e-2))
        ang = self.theta + twist
        z = -self.length + apex + lam * (self.z + self.length)
        local = torch.stack([big_r * torch.cos(ang) + shift[0], big_r * torch.sin(ang)
                             + shift[1], z], -1)
        tilt = torch.stack([omega[0], omega[1], torch.zeros_like(omega[0])])
        return local @ (self.R @ rotation_matrix(tilt)).T + self.O
