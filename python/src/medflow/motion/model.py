"""The motion model shared by ``fit`` and the network: B-spline displacements of the ED
mesh's vertices and the priors on them (:mod:`medflow.motion.regularise`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medflow.motion import ffd
from medflow.motion.regularise import cell_volumes, graph_laplacian, mesh_edges, wall_cells
from medflow.motion.template import LV_ENDO, LV_EPI, Topology


@dataclass
class MotionModel:
    """What the motion of one subject is made of (shared by ``fit`` and the network).

    The displacement of the ED vertices, in heart-frame components: the in-plane (x, y)
    components on a fine B-spline grid (they change sharply across the thickening wall),
    the long-axis (z) component on a coarse one (it varies slowly from base to apex, and
    no segmentation sees it inside the wall). Coefficients are a pair
    ``(in_plane (..., K_fine, 2), long_axis (..., K_coarse, 1))`` in mm.
    """

    base: torch.Tensor          # (V, 3) ED vertices
    fine: ffd.ControlGrid
    coarse: ffd.ControlGrid
    w_fine: ffd.Weights
    w_coarse: ffd.Weights
    rotation: torch.Tensor      # (3, 3) heart axes (the grids' axes) in world
    edges: torch.Tensor         # (E, 2) mesh edges (the Laplacian's graph)
    cells: torch.Tensor         # (N, 8) wall cells
    cell_volume0: torch.Tensor  # (N,) their ED volumes
    pairs: torch.Tensor         # (M, 2) endocardial and epicardial vertex of each pair
    across: torch.Tensor        # (M, 3) unit ED direction across the wall, per pair
    faces: torch.Tensor
    face_cls: torch.Tensor

    @classmethod
    def build(cls, ed_vertices: np.ndarray, rotation: np.ndarray, topo: Topology,
              opts, dtype=torch.float32) -> "MotionModel":
        fine = ffd.ControlGrid.around(ed_vertices, rotation, opts.motion_spacing_mm, 10.0)
        coarse = ffd.ControlGrid.around(ed_vertices, rotation, opts.long_spacing_mm, 10.0)
        base = torch.as_tensor(ed_vertices, dtype=dtype)
        cells = torch.as_tensor(wall_cells(topo))
        pairs = torch.as_tensor(np.stack([topo.ring_ids(LV_ENDO).ravel(),
                                          topo.ring_ids(LV_EPI).ravel()], 1))
        across = base[pairs[:, 1]] - base[pairs[:, 0]]
        return cls(base, fine, coarse, fine.weights(ed_vertices).to(dtype),
                   coarse.weights(ed_vertices).to(dtype),
                   torch.as_tensor(rotation, dtype=dtype), mesh_edges(topo),
                   cells, cell_volumes(base, cells), pairs,
                   across / torch.linalg.norm(across, dim=-1, keepdim=True),
                   torch.as_tensor(topo.faces), torch.as_tensor(topo.surface_of_face))

    def zeros(self, *lead: int) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.base.dtype
        return (torch.zeros(*lead, self.fine.size, 2, dtype=dt),
                torch.zeros(*lead, self.coarse.size, 1, dtype=dt))

    def displacement(self, coeffs) -> torch.Tensor:
        """Vertex displacements (..., V, 3), world axes, mm."""
        local = torch.cat([ffd.apply(self.w_fine, coeffs[0]),
                           ffd.apply(self.w_coarse, coeffs[1])], -1)
        return local @ self.rotation.T

    def vertices(self, coeffs) -> torch.Tensor:
        return self.base + self.displacement(coeffs)

    def priors(self, coeffs, opts, moved: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted sum of the priors on the B-spline displacement (mean over frames).

        Args:
            coeffs: the B-spline coefficients (the refinement).
            opts: a :class:`~medflow.motion.fit.FitOptions` (the weights).
            moved: (..., V, 3) the displacement the refinement is added to (the kinematic
                model's), or None.

        Returns:
            Laplacian smoothness and transmural shear of the refinement, the wall cells'
            volume change it causes, and the coefficients' bending energy.
        """
        bend = (opts.bending_weight * ffd.bending_energy(coeffs[0], self.fine.shape)
                + opts.long_bending_weight * ffd.bending_energy(coeffs[1], self.coarse.shape))
        return self.field_priors(self.displacement(coeffs), opts, moved) + bend

    def field_priors(self, disp: torch.Tensor, opts, moved: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """The priors of :meth:`priors` that act on vertex displacements (..., V, 3), mm,
        whatever made them: Laplacian smoothness, wall-cell volume change and transmural
        shear (weights from ``opts``)."""
        lap = graph_laplacian(disp, self.edges, self.base.shape[0])
        smooth = (lap ** 2).sum(-1).mean()
        start = self.base if moved is None else self.base + moved
        ref = self.cell_volume0 if moved is None else cell_volumes(start, self.cells).detach()
        vol = cell_volumes(start + disp, self.cells)
        incompressible = (((vol - ref) / self.cell_volume0) ** 2).mean()
        # Transmural shear: endocardium and epicardium of a pair slide together (the
        # difference of their displacements across the wall is thickening, not shear).
        rel = disp[..., self.pairs[:, 1], :] - disp[..., self.pairs[:, 0], :]
        shear = rel - (rel * self.across).sum(-1, keepdim=True) * self.across
        shear = (shear ** 2).sum(-1).mean()
        return (opts.laplacian_weight * smooth + opts.volume_weight * incompressible
                + opts.shear_weight * shear)
