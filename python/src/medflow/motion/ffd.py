"""Free-form deformation: a cubic B-spline displacement field on a regular control grid
(Rueckert et al., IEEE TMI 1999; MIRTK's FFD, the registration ukbb_cardiac uses).

The grid is aligned with the heart frame. A field's displacement at a point is a fixed
linear map of the control displacements, so for points that do not move in the
parametrisation (the ED mesh vertices: the motion is Lagrangian) the 64 weights of each
point are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uniform cubic B-spline weights (N, 4) and their derivatives (N, 4) at t in [0, 1)."""
    t2, t3 = t * t, t * t * t
    w = np.stack([(1 - t) ** 3, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3], 1) / 6
    d = np.stack([-(1 - t) ** 2, 3 * t2 - 4 * t, -3 * t2 + 2 * t + 1, t2], 1) / 2
    return w, d


@dataclass(frozen=True)
class ControlGrid:
    """Control points ``origin + R @ (spacing * ijk)``; R's columns are the grid axes.

    Attributes:
        origin: (3,) world mm of control point (0, 0, 0).
        rotation: (3, 3) grid axes in world (columns).
        spacing: control point spacing, mm.
        shape: (nx, ny, nz) control points.
    """

    origin: np.ndarray
    rotation: np.ndarray
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def around(cls, points: np.ndarray, rotation: np.ndarray, spacing: float,
               margin: float = 0.0) -> "ControlGrid":
        """The grid covering ``points`` (N, 3, world mm) plus ``margin`` mm, every point
        with its full 4 x 4 x 4 support inside the grid."""
        local = (np.asarray(points) @ np.asarray(rotation))        # (N, 3) in grid axes
        lo, hi = local.min(0) - margin, local.max(0) + margin
        n = np.ceil((hi - lo) / spacing).astype(int) + 4
        lo_c = lo - spacing * 1.0 - 1e-6                            # one point before lo
        return cls(np.asarray(rotation) @ lo_c, np.asarray(rotation, np.float64),
                   float(spacing), tuple(int(v) for v in n))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def weights(self, points: np.ndarray, derivatives: bool = False):
        """B-spline weights at world points (N, 3): a :class:`Weights` (and, with
        ``derivatives``, three more: the weights' derivatives along world x, y, z, /mm).

        Raises:
            ValueError: a point's support leaves the grid.
        """
        local = (np.asarray(points, np.float64) - self.origin) @ self.rotation / self.spacing
        base = np.floor(local).astype(np.int64) - 1
        t = local - np.floor(local)
        if (base < 0).any() or (base + 3 >= np.asarray(self.shape)).any():
            raise ValueError("a point lies outside the control grid")
        wb, db = zip(*(_basis(t[:, k]) for k in range(3)))
        offs = np.stack(np.meshgrid(*(np.arange(4),) * 3, indexing="ij"), -1).reshape(-1, 3)
        idx = base[:, None, :] + offs[None]                                  # (N, 64, 3)
        flat = torch.as_tensor(np.ravel_multi_index((idx[..., 0], idx[..., 1], idx[..., 2]),
                                                    self.shape))
        w = wb[0][:, offs[:, 0]] * wb[1][:, offs[:, 1]] * wb[2][:, offs[:, 2]]
        if not derivatives:
            return Weights(flat, torch.as_tensor(w))
        grads = []
        for k in range(3):
            parts = [db[j] if j == k else wb[j] for j in range(3)]
            grads.append(parts[0][:, offs[:, 0]] * parts[1][:, offs[:, 1]]
                         * parts[2][:, offs[:, 2]] / self.spacing)          # d/d(local k)
        # Grid axis derivatives -> world axis derivatives: d/dx_world = R[:, k] d/dlocal_k.
        world = [sum(self.rotation[i, k] * grads[k] for k in range(3)) for i in range(3)]
        return Weights(flat, torch.as_tensor(w)), [Weights(flat, torch.as_tensor(g))
                                                    for g in world]


@dataclass(frozen=True)
class Weights:
    """Each point's 64 control points (``index`` (N, 64)) and weights (``value`` (N, 64))."""

    index: torch.Tensor
    value: torch.Tensor

    def to(self, dtype) -> "Weights":
        return Weights(self.index, self.value.to(dtype))


def apply(weights: Weights, coeffs: torch.Tensor) -> torch.Tensor:
    """Displacements (..., N, 3) from weights and control coefficients (..., K, 3)
    (leading dimensions, e.g. frames, are batched)."""
    picked = coeffs[..., weights.index, :]                                 # (..., N, 64, 3)
    return (picked * weights.value[..., None]).sum(-2)


def bending_energy(coeffs: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Mean squared second differences of control displacements (..., K, D) on the grid
    (pure and mixed; zero for any affine field, so rotations and stretches are free)."""
    c = coeffs.reshape(*coeffs.shape[:-2], *shape, coeffs.shape[-1])
    dims = (-4, -3, -2)
    total = 0.0
    for i, d in enumerate(dims):
        total = total + (torch.diff(c, n=2, dim=d) ** 2).mean()
        first = torch.diff(c, dim=d)
        for e in dims[i + 1:]:
            total = total + 2 * (torch.diff(first, dim=e) ** 2).mean()
    return total
