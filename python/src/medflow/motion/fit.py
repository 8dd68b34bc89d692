"""Per-subject fitting (``estimate-motion-mesh fit``): the template to the end-diastolic
shape, then per-frame motion, both through the differentiable slicer.

1. ED shape: the template's 7 shape parameters, its pose and one in-plane shift per
   short-axis slice (breath-hold misregistration; the long-axis views anchor the
   position), then a coarse B-spline deformation for what the template cannot express.
2. Motion, frame by frame from the previous frame: the 13-parameter kinematic model
   (:mod:`medflow.motion.kinematic`: base descent, torsion, volume-preserving radial
   motion, RV squeeze) carries the large, global motion; a B-spline displacement on top
   (:mod:`medflow.motion.model`) fits the rest, with the priors of
   :mod:`medflow.motion.regularise` and a first-difference prior in time. Vertex i is the
   same material point in every frame.

Both stages minimise with L-BFGS: the slicer's loss is smooth between changes of which
triangles a plane cuts, and quasi-Newton steps fit thousands of control displacements in
a few dozen evaluations where first-order steps need hundreds. The few global
parameters (template, kinematic model) move whole cross-sections in and out of planes,
where L-BFGS's line search stalls: Adam with bounded steps takes them. Alone, the B-spline
fit finds poor local minima from far away and cannot tell sliding along a surface, which
no segmentation sees; the kinematic model settles both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from medflow.motion import ffd
from medflow.motion.initial import HeartFrame
from medflow.motion.kinematic import STEP as KINEMATIC_STEP, Kinematic, prior as kinematic_prior
from medflow.motion.kinematic import rotation_matrix
from medflow.motion.model import MotionModel
from medflow.motion.optim import adam, lbfgs
from medflow.motion.regularise import cell_volumes
from medflow.motion.slicer import PlaneTargets, cut, section_losses
from medflow.motion.template import Topology, closed_volumes, template_vertices


@dataclass
class FitOptions:
    """Hyper-parameters of :func:`fit_ed` and :func:`fit_motion` (saved in the sidecar).

    Weights are relative to the data term (mean squared contour distance, mm^2).
    """

    ed_iterations: int = 150           # Adam steps: template shape, pose, slice shifts
    ed_ffd_iterations: int = 40        # L-BFGS evaluations: the ED B-spline refinement
    # Per frame; None: more for short cines, whose frames are further apart.
    frame_kinematic_steps: int | None = None   # Adam steps: the kinematic model
    frame_iterations: int | None = None        # L-BFGS evaluations: the B-spline
    ed_spacing_mm: float = 20.0
    motion_spacing_mm: float = 12.0    # in-plane displacement grid
    long_spacing_mm: float = 25.0      # long-axis displacement grid
    area_weight: float = 0.5
    laplacian_weight: float = 1.0
    volume_weight: float = 100.0
    shear_weight: float = 1.0
    bending_weight: float = 0.01
    long_bending_weight: float = 1.0
    time_weight: float = 0.05
    shift_prior_mm: float = 10.0
    robust_mm: float = 8.0
    long_axis_weight: float = 1.0      # per long-axis plane, relative to a short-axis slice
    absent_weight: float = 0.1
    # --ed-shape only: planes of the high-resolution ED map, every ed_shape_spacing_mm
    # along each of its axes, weighing together ed_shape_weight times the acquired planes.
    # 0.3: on the demo the true shape helps as much as at 1.0, and a super-resolve map's
    # own volume bias passes less into the mesh (benchmarks/motion/README.md).
    ed_shape_weight: float = 0.3
    ed_shape_spacing_mm: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitOptions":
        """Options read back from a file (a model card), every value checked.

        Raises:
            TypeError: an unknown or missing field.
            ValueError: a value of the wrong type or out of range (iteration counts are
                integers >= 1, or None where a default exists; spacings and scales are
                numbers > 0, weights numbers >= 0, all finite).
        """
        opts = cls(**d)
        for name, value in asdict(opts).items():
            if name.endswith(("iterations", "steps")):
                optional = name.startswith("frame_")
                if value is None and optional:
                    continue
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            positive = name.endswith("_mm")
            if value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got "
                                 f"{value!r}")
        return opts

    def per_frame(self, frames: int) -> tuple[int, int]:
        """(kinematic steps, B-spline evaluations) per frame of a ``frames``-frame cine:
        20 and 15 for UK Biobank's 50 frames, up to 40 and 30 for 10 frames."""
        steps = self.frame_kinematic_steps or int(np.clip(400 // frames, 20, 40))
        evals = self.frame_iterations or int(np.clip(300 // frames, 15, 30))
        return steps, evals


#: Step sizes of the template's parameters: shape log-factors, rotation (rad), mm.
TEMPLATE_STEP = torch.tensor([0.01] * 7 + [0.005] * 3 + [0.5] * 3)


class PosedTemplate:
    """The template at a pose: ``R0 R(omega) template(shape0 exp(xi)) + origin0 + trans``.

    ``params`` (13,) = xi (7, log-scale factors of the shape), omega (3, rotation vector,
    radians), trans (3, mm); zero is the starting guess ``init``.
    """

    def __init__(self, topo: Topology, init: HeartFrame, dtype=torch.float32,
                 params: torch.Tensor | None = None) -> None:
        self.topo = topo
        self.init = init
        self.shape0 = torch.as_tensor(init.shape, dtype=dtype)
        self.rot0 = torch.as_tensor(init.rotation, dtype=dtype)
        self.origin0 = torch.as_tensor(init.origin, dtype=dtype)
        p = torch.zeros(13, dtype=dtype) if params is None else params.detach().clone()
        self.params = p.requires_grad_(True)

    def rotation(self) -> torch.Tensor:
        return self.rot0 @ rotation_matrix(self.params[7:10])

    def vertices(self) -> torch.Tensor:
        local = template_vertices(self.topo, self.shape0 * torch.exp(self.params[:7]))
        return local @ self.rotation().T + self.origin0 + self.params[10:13]

    def frame(self) -> HeartFrame:
        with torch.no_grad():
            return HeartFrame(self.rotation().numpy(),
                              (self.origin0 + self.params[10:13]).numpy(),
                              (self.shape0 * torch.exp(self.params[:7])).numpy())


@dataclass
class EDFit:
    """The fitted end-diastolic mesh and the posed template it refines."""

    vertices: np.ndarray        # (V, 3) world mm
    shifts: np.ndarray          # (n_sa, 2) in-plane shift of each short-axis slice, mm
    frame: HeartFrame           # the fitted template's heart frame and shape
    loss: dict


def data_loss(vertices, faces, face_cls, targets: PlaneTargets, shifts, opts: FitOptions):
    """Slicer loss of meshes (T, V, 3) against targets of T frames: (loss, terms)."""
    sec = cut(vertices, faces, face_cls, targets.origin, targets.normal)
    terms = section_losses(sec, targets, shifts, robust_mm=opts.robust_mm,
                           absent_weight=opts.absent_weight)
    return terms["distance"] + opts.area_weight * terms["area"], terms


def fit_ed(targets: PlaneTargets, n_sa: int, init: HeartFrame, topo: Topology,
           opts: FitOptions) -> EDFit:
    """Fit the template to frame 0 of ``targets`` (only frame 0 is used).

    Returns:
        :class:`EDFit` in world coordinates.
    """
    dt = targets.sdf.dtype
    ed = targets.frames(slice(0, 1))
    faces, face_cls = torch.as_tensor(topo.faces), torch.as_tensor(topo.surface_of_face)
    posed = PosedTemplate(topo, init, dt)
    shifts = torch.zeros(n_sa, 2, dtype=dt, requires_grad=True)

    def prior(s):
        return (s ** 2).sum() / (opts.shift_prior_mm ** 2 * max(n_sa, 1))

    pose_and_shifts = torch.cat([posed.params.detach(), shifts.detach().reshape(-1)])
    both = pose_and_shifts.requires_grad_(True)
    step = torch.cat([TEMPLATE_STEP, torch.full((2 * n_sa,), 0.3)]).to(dt)

    def joint_loss():
        posed.params = both[:13]
        return data_loss(posed.vertices()[None], faces, face_cls, ed,
                         both[13:].reshape(n_sa, 2), opts)[0] + prior(both[13:])

    adam(both, step, joint_loss, opts.ed_iterations)
    posed.params = both[:13].detach().clone().requires_grad_(True)
    shifts = both[13:].detach().reshape(n_sa, 2).clone().requires_grad_(True)
    with torch.no_grad():
        base, rot = posed.vertices(), posed.rotation()
    grid = ffd.ControlGrid.around(base.numpy(), rot.numpy(), opts.ed_spacing_mm, 10.0)
    weights = grid.weights(base.numpy()).to(dt)
    coeffs = torch.zeros(grid.size, 3, dtype=dt, requires_grad=True)

    def refine_loss():
        verts = (base + ffd.apply(weights, coeffs))[None]
        data = data_loss(verts, faces, face_cls, ed, shifts, opts)[0]
        return data + prior(shifts) + ffd.bending_energy(coeffs, grid.shape)

    lbfgs([coeffs, shifts], refine_loss, opts.ed_ffd_iterations)
    with torch.no_grad():
        verts = base + ffd.apply(weights, coeffs)
        _, terms = data_loss(verts[None], faces, face_cls, ed, shifts, opts)
    return EDFit(verts.numpy(), shifts.detach().numpy(), posed.frame(),
                 {"distance_mm2": float(terms["distance"]), "area_mm2": float(terms["area"])})


def fit_motion(targets: PlaneTargets, ed: EDFit, topo: Topology, opts: FitOptions,
               progress=None) -> tuple[np.ndarray, dict]:
    """Per-frame vertex positions (T, V, 3) whose frame 0 is the ED mesh.

    Returns:
        (vertices, info) with the final loss terms, per-plane residuals (``rms_mm``
        (T, P, C)), enclosed volumes (``volumes_ml`` (T, 3)), the kinematic parameters
        per frame and the range of the wall cells' volume ratios to ED.
    """
    dt = targets.sdf.dtype
    T = targets.sdf.shape[0]
    model = MotionModel.build(ed.vertices, ed.frame.rotation, topo, opts, dt)
    shifts = torch.as_tensor(ed.shifts, dtype=dt)
    kin = Kinematic(ed.vertices, ed.frame.rotation, ed.frame.origin, topo, ed.frame.shape[0],
                    dt)
    steps, evals = opts.per_frame(T)
    p = torch.zeros(KINEMATIC_STEP.shape[0], dtype=dt, requires_grad=True)
    coeffs = model.zeros(T)
    moved = torch.zeros(T, *model.base.shape, dtype=dt)   # the kinematic displacement
    kinematic = np.zeros((T, p.shape[0]))
    for t in range(1, T):
        frame_t = targets.frames(slice(t, t + 1))

        def kinematic_loss():
            verts = kin.vertices(p)[None]
            data = data_loss(verts, model.faces, model.face_cls, frame_t, shifts, opts)[0]
            return data + kinematic_prior(p)

        adam(p, KINEMATIC_STEP.to(dt), kinematic_loss, steps)   # from the previous frame
        with torch.no_grad():
            moved[t] = kin.vertices(p) - model.base
        kinematic[t] = p.detach().numpy()
        _refine(model, coeffs, moved, t, frame_t, shifts, opts, evals)
        if progress:
            progress(t)
    with torch.no_grad():
        verts = model.base + moved + model.displacement(coeffs)
    return verts.numpy(), summarise(verts, model, targets, shifts, topo, opts, kinematic)


def summarise(verts: torch.Tensor, model: MotionModel, targets: PlaneTargets,
              shifts: torch.Tensor, topo: Topology, opts: FitOptions,
              kinematic: np.ndarray) -> dict:
    """What ``measure`` needs of meshes (T, V, 3), however they were made (``fit`` or the
    network): the final loss terms, per-plane residuals (``rms_mm`` (T, P, C)), enclosed
    volumes (``volumes_ml`` (T, 3)), the kinematic parameters per frame (T, 13) and the
    range of the wall cells' volume ratios to ED."""
    with torch.no_grad():
        _, terms = data_loss(verts, model.faces, model.face_cls, targets, shifts, opts)
        ratio = cell_volumes(verts, model.cells) / model.cell_volume0
        return {"distance_mm2": float(terms["distance"]), "area_mm2": float(terms["area"]),
                "rms_mm": terms["rms_mm"].numpy(), "cell_volume_ratio_min": float(ratio.min()),
                "cell_volume_ratio_max": float(ratio.max()),
                "volumes_ml": closed_volumes(verts, topo).numpy(), "kinematic": kinematic}


def _refine(model: MotionModel, coeffs, moved, t: int, frame_t: PlaneTargets, shifts,
            opts: FitOptions, evals: int) -> None:
    """Fit frame t's B-spline refinement on top of its kinematic displacement, starting
    from frame t - 1's, with first differences in time (the last frame also to ED)."""
    T = moved.shape[0]
    c = [k[t - 1:t].clone().requires_grad_(True) for k in coeffs]
    ends = [(k[t - 1:t], k[:1] if t == T - 1 else None) for k in coeffs]

    def objective():
        verts = model.base + moved[t:t + 1] + model.displacement(c)
        data = data_loss(verts, model.faces, model.face_cls, frame_t, shifts, opts)[0]
        time = 0.0
        for k, (before, after) in zip(c, ends):
            seq = torch.cat([before, k] + ([after] if after is not None else []))
            time = time + ((seq[1:] - seq[:-1]) ** 2).sum() / k[0].numel()
        return data + model.priors(c, opts, moved[t:t + 1]) + opts.time_weight * time

    lbfgs(c, objective, evals)
    for k, ck in zip(coeffs, c):
        k[t] = ck.detach()[0]
