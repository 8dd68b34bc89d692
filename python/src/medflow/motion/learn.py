"""Training and applying the motion network (``estimate-motion-mesh train`` / ``predict``).

Per subject, both modes first fit the ED mesh as ``fit`` does (:func:`~medflow.motion.fit.fit_ed`,
a few seconds: the shape is one frame) and probe every frame's label maps at it
(:mod:`medflow.motion.probe`). The network (:mod:`medflow.motion.network`) then gives
every frame's motion in one pass: no per-frame optimisation, which is what ``fit`` spends
its time on.

Training is end to end through the slicer, as the multi-view motion seed trains: the loss
of every training subject is ``fit``'s objective evaluated at the network's meshes (the
contour distance and area terms of every plane and frame, the kinematic prior, the
smoothness, incompressibility and shear priors of the refinement), plus a term pulling
the meshes towards ``fit``'s own solution for that subject (the teacher; mean squared
vertex distance, mm^2). The teacher gives the network fit's choices where the
segmentations are silent (sliding along the wall, torsion); the slicer loss keeps it on
the data where they speak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medflow.motion.fit import EDFit, FitOptions, data_loss, fit_motion, summarise
from medflow.motion.kinematic import SIGMA, Kinematic
from medflow.motion.model import MotionModel
from medflow.motion.network import MotionNet, NetConfig
from medflow.motion.probe import NodeWeights, node_features, node_weights, vertex_probes
from medflow.motion.slicer import PlaneTargets
from medflow.motion.template import Topology


@dataclass
class Subject:
    """One subject ready for the network: its targets, ED fit and node features."""

    name: str
    targets: PlaneTargets
    ed: EDFit
    topo: Topology
    model: MotionModel
    kin: Kinematic
    weights: NodeWeights
    feats: torch.Tensor              # (T, K, FEATURES)
    shape: torch.Tensor              # (7,) the fitted template shape
    teacher: torch.Tensor | None = field(default=None)   # (T, V, 3) fit's meshes

    @property
    def shifts(self) -> torch.Tensor:
        return torch.as_tensor(self.ed.shifts, dtype=self.targets.sdf.dtype)


def prepare(name: str, targets: PlaneTargets, planes: list, ed: EDFit, topo: Topology,
            opts: FitOptions) -> Subject:
    """A subject's network inputs from its targets and ED fit."""
    dt = targets.sdf.dtype
    frame = ed.frame
    model = MotionModel.build(ed.vertices, frame.rotation, topo, opts, dt)
    kin = Kinematic(ed.vertices, frame.rotation, frame.origin, topo, frame.shape[0], dt)
    local = (ed.vertices - frame.origin) @ frame.rotation
    weights = node_weights(local, topo, float(frame.shape[0]), dt)
    cue, valid = vertex_probes(targets, planes, ed.shifts, ed.vertices, topo)
    feats = node_features(cue, valid, frame.rotation, weights)
    return Subject(name, targets, ed, topo, model, kin, weights, feats,
                   torch.as_tensor(frame.shape, dtype=dt))


def meshes(net: MotionNet, s: Subject
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The network's meshes of every frame.

    Returns:
        (vertices (T, V, 3) world mm with frame 0 the ED mesh, kinematic parameters
        (T, 13), kinematic displacement (T, V, 3) and refinement displacement (T, V, 3)).
    """
    kin, nodes = net(s.feats, s.weights.position, s.weights.surface, s.shape)
    kin = torch.cat([torch.zeros_like(kin[:1]), kin[1:]])
    base = s.model.base
    moved = torch.stack([s.kin.vertices(p) for p in kin[1:]]) - base
    moved = torch.cat([torch.zeros_like(base)[None], moved])
    refine = (s.weights.spread @ nodes) @ s.model.rotation.T
    refine = torch.cat([torch.zeros_like(refine[:1]), refine[1:]])
    return base + moved + refine, kin, moved, refine


def loss(net: MotionNet, s: Subject, opts: FitOptions, teacher_weight: float
         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss of one subject (frames 1..T-1; frame 0 is the ED fit)."""
    verts, kin, moved, refine = meshes(net, s)
    later = s.targets.frames(slice(1, None))
    data, terms = data_loss(verts[1:], s.model.faces, s.model.face_cls, later, s.shifts, opts)
    prior = ((kin[1:] / SIGMA.to(kin.dtype)) ** 2).sum(-1).mean()
    field_prior = s.model.field_priors(refine[1:], opts, moved[1:])
    total = data + prior + field_prior
    parts = {"data_mm2": terms["distance"].item(), "prior": (prior + field_prior).item()}
    if s.teacher is not None and teacher_weight > 0:
        teach = ((verts[1:] - s.teacher[1:]) ** 2).sum(-1).mean()
        total = total + teacher_weight * teach
        parts["teacher_mm2"] = teach.item()
    return total, parts


def add_teacher(s: Subject, opts: FitOptions) -> np.ndarray:
    """Run ``fit``'s motion for a training subject; keeps its meshes as the teacher and
    returns its kinematic parameters (T, 13)."""
    verts, info = fit_motion(s.targets, s.ed, s.topo, opts)
    s.teacher = torch.as_tensor(verts, dtype=s.targets.sdf.dtype)
    return info["kinematic"]


def standardise(net: MotionNet, subjects: list[Subject], kinematic: list[np.ndarray]) -> None:
    """Set the network's output and input scales from the training cohort: the teacher's
    kinematic parameters and refinement size, and the ED template shapes."""
    k = np.concatenate([p[1:] for p in kinematic])
    floor = 0.01 * SIGMA.numpy()
    with torch.no_grad():
        net.kin_mean.copy_(torch.as_tensor(k.mean(0)))
        net.kin_std.copy_(torch.as_tensor(np.maximum(k.std(0), floor)))
        rms = []
        for s, p in zip(subjects, kinematic):
            moved = torch.stack([s.kin.vertices(torch.as_tensor(q, dtype=s.shape.dtype))
                                 for q in p])
            rms.append(float(((s.teacher - moved) ** 2).sum(-1).mean().sqrt()))
        net.node_std.fill_(max(float(np.mean(rms)), 0.5))
        shapes = torch.stack([s.shape for s in subjects])
        net.shape_mean.copy_(shapes.mean(0))
        net.shape_std.copy_(shapes.std(0).clamp(min=1e-3) if len(subjects) > 1
                            else shapes.abs().mean(0).clamp(min=1e-3))


def train(subjects: list[Subject], opts: FitOptions, kinematic: list[np.ndarray],
          epochs: int, lr: float = 2e-3, teacher_weight: float = 1.0, seed: int = 0,
          cfg: NetConfig | None = None, progress=None) -> tuple[MotionNet, list[dict]]:
    """Train the network on prepared subjects that carry their teacher.

    Args:
        subjects: from :func:`prepare`, each with :func:`add_teacher` run.
        kinematic: the teachers' kinematic parameters, per subject (T, 13).
        epochs: passes over the subjects (one Adam step per subject).

    Returns:
        (network in eval mode, one dict of mean loss terms per epoch).
    """
    torch.manual_seed(seed)
    net = MotionNet(cfg or NetConfig())
    standardise(net, subjects, kinematic)
    optim = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(epochs, 1))
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        for i in rng.permutation(len(subjects)):
            optim.zero_grad()
            value, parts = loss(net, subjects[i], opts, teacher_weight)
            value.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optim.step()
            for k, v in {"loss": value.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v / len(subjects)
        sched.step()
        history.append({"epoch": epoch + 1, **sums})
        if progress:
            progress(history[-1])
    return net.eval(), history


def predict(net: MotionNet, s: Subject, opts: FitOptions) -> tuple[np.ndarray, dict]:
    """Meshes (T, V, 3) world mm of one subject in one network pass, and the summary
    ``fit`` gives (:func:`~medflow.motion.fit.summarise`)."""
    with torch.no_grad():
        verts, kin, _, _ = meshes(net, s)
    info = summarise(verts, s.model, s.targets, s.shifts, s.topo, opts, kin.numpy())
    return verts.numpy(), info
