"""High-resolution label maps as training shapes for the prior, and the canonical-grid
inputs of its encoder (clean, or degraded like a thick-slice stack).

Sample, then apply: :func:`draw_augmentation` and :func:`draw_stack` draw every random
number; the functions that build inputs and targets apply them deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.superres.geometry import (Frame, apply_affine, canonical_frame, rotation_matrix,
                                       transform, voxel_points)
from medflow.superres.prior import PriorConfig

#: Thick-slice degradation simulated for the encoder (UK Biobank short axis).
STACK_SPACING_MM, STACK_SHIFT_SD_MM, STACK_SHIFT_MAX_MM = 10.0, 2.0, 5.0


def class_map(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Label values -> class indices (uint8); ValueError naming unknown values."""
    lab = np.asarray(labels)
    unknown = sorted(set(np.unique(lab).tolist()) - set(values))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the prior's labels {list(values)}")
    lut = np.zeros(int(max(max(values), lab.max())) + 1, np.uint8)
    lut[list(values)] = np.arange(len(values), dtype=np.uint8)
    return lut[lab]


def class_edges(classes: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another class (both sides of every boundary)."""
    edge = np.zeros(classes.shape, bool)
    for axis in range(classes.ndim):
        a = [slice(None)] * classes.ndim
        b = [slice(None)] * classes.ndim
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        diff = classes[tuple(a)] != classes[tuple(b)]
        edge[tuple(a)] |= diff
        edge[tuple(b)] |= diff
    return edge


@dataclass
class Shape:
    """One high-resolution label map ready for training.

    Attributes:
        classes: (X, Y, Z) class indices (uint8).
        affine: its voxel-to-world matrix.
        frame: its canonical frame (:func:`canonical_frame` of the map itself).
        boundary: flat indices of voxels within one voxel of a class change.
    """

    classes: np.ndarray
    affine: np.ndarray
    frame: Frame
    boundary: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray, affine: np.ndarray, values: tuple[int, ...]
                    ) -> "Shape":
        classes = class_map(labels, values)
        frame = canonical_frame(labels, affine)
        return cls(classes, np.asarray(affine, np.float64), frame,
                   np.flatnonzero(class_edges(classes)))

    def classes_at(self, canonical: np.ndarray, augmentation: np.ndarray) -> np.ndarray:
        """Class at canonical points (N, 3) of the augmented shape ``{A q}`` (nearest)."""
        q = transform(canonical, np.linalg.inv(augmentation))
        ijk = np.rint(apply_affine(np.linalg.inv(self.affine), self.frame.to_world(q)))
        ijk = ijk.astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.array(self.classes.shape)), axis=1)
        out = np.zeros(len(ijk), np.uint8)
        out[inside] = self.classes[tuple(ijk[inside].T)]
        return out


def draw_augmentation(rng: np.random.Generator, scale: float = 0.08, degrees: float = 4.0
                      ) -> np.ndarray:
    """A random 3x3 linear map: per-axis scaling in [1 - scale, 1 + scale] after a rotation
    of up to ``degrees`` about a random axis (new shapes and poses near the data)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = rotation_matrix(axis * np.radians(rng.uniform(-degrees, degrees)))
    return np.diag(rng.uniform(1.0 - scale, 1.0 + scale, size=3)) @ rot


def draw_stack(rng: np.random.Generator, cfg: PriorConfig) -> dict:
    """A simulated acquisition in the canonical frame: slice positions along z (random
    phase) and each slice's in-plane shift (mm), as :func:`stack_input` applies them."""
    lo = cfg.origin_mm[2] + rng.uniform(0.0, STACK_SPACING_MM)
    z = np.arange(lo, cfg.origin_mm[2] + cfg.spacing_mm * cfg.shape[2], STACK_SPACING_MM)
    shifts = np.clip(rng.normal(0.0, STACK_SHIFT_SD_MM, size=(len(z), 2)),
                     -STACK_SHIFT_MAX_MM, STACK_SHIFT_MAX_MM)
    return {"z_mm": z, "shifts_mm": shifts}


def canonical_points(cfg: PriorConfig) -> np.ndarray:
    """Canonical mm of every canonical voxel centre, (X, Y, Z, 3)."""
    axes = [cfg.origin_mm[i] + cfg.spacing_mm * np.arange(cfg.shape[i]) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def one_hot(classes: np.ndarray, n: int) -> np.ndarray:
    """(...) class indices -> (n, ...) float32 one-hot."""
    return (np.arange(n).reshape((n,) + (1,) * classes.ndim) == classes[None]).astype(np.float32)


def clean_input(shape: Shape, cfg: PriorConfig, augmentation: np.ndarray) -> np.ndarray:
    """Encoder input of the whole shape: class fractions of each canonical voxel, from
    2 x 2 x 2 nearest samples, (C, X, Y, Z) float32."""
    grid = canonical_points(cfg)
    out = np.zeros((cfg.n_classes, *cfg.shape), np.float32)
    quarter = cfg.spacing_mm / 4.0
    for offset in np.array(np.meshgrid(*[[-quarter, quarter]] * 3, indexing="ij")).reshape(3, -1).T:
        cls = shape.classes_at((grid + offset).reshape(-1, 3), augmentation).reshape(cfg.shape)
        out += one_hot(cls, cfg.n_classes) / 8.0
    return out


def stack_input(shape: Shape, cfg: PriorConfig, augmentation: np.ndarray, stack: dict
                ) -> np.ndarray:
    """Encoder input of the shape seen as a thick-slice stack: each canonical voxel takes
    the class of the nearest simulated slice, at its position displaced by that slice's
    shift (what :func:`stack_to_canonical` builds from a real stack), (C, X, Y, Z)."""
    grid = canonical_points(cfg)
    z, shifts = stack["z_mm"], stack["shifts_mm"]
    nearest = np.abs(grid[..., 2, None] - z).argmin(axis=-1)
    pts = grid.copy()
    pts[..., 2] = z[nearest]
    pts[..., :2] -= shifts[nearest]
    cls = shape.classes_at(pts.reshape(-1, 3), augmentation).reshape(cfg.shape)
    return one_hot(cls, cfg.n_classes)


def target_points(shape: Shape, n: int, rng: np.random.Generator, augmentation: np.ndarray,
                  boundary_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Supervision at the map's own voxel centres: ``n`` of them (half near a boundary),
    as canonical points (n, 3) of the augmented shape and their classes (n,)."""
    nb = min(int(n * boundary_fraction), len(shape.boundary))
    idx = np.concatenate([rng.choice(shape.boundary, nb),
                          rng.integers(0, shape.classes.size, n - nb)])
    ijk = np.stack(np.unravel_index(idx, shape.classes.shape), axis=1).astype(np.float64)
    q = transform(shape.frame.to_canonical(apply_affine(shape.affine, ijk)), augmentation)
    return q.astype(np.float32), shape.classes.reshape(-1)[idx].astype(np.int64)


def stack_to_canonical(classes: np.ndarray, affine: np.ndarray, frame: Frame,
                       cfg: PriorConfig) -> np.ndarray:
    """Encoder input from a real stack (X, Y, K) of class indices: each canonical voxel
    takes the nearest stack pixel's class (background outside the stack), (C, X, Y, Z)."""
    world = frame.to_world(canonical_points(cfg).reshape(-1, 3))
    inv = np.linalg.inv(affine)
    ijk = np.rint(apply_affine(inv, world)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(classes.shape[:3])), axis=1)
    cls = np.zeros(len(world), np.uint8)
    cls[inside] = classes[tuple(ijk[inside].T)]
    return one_hot(cls.reshape(cfg.shape), cfg.n_classes)


def shape_points(shape: Shape) -> np.ndarray:
    """World positions of every voxel of a shape's map, (X, Y, Z, 3)."""
    return voxel_points(shape.affine, shape.classes.shape)
