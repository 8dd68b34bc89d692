"""One in-memory volume type: voxels plus a 4x4 RAS affine, and whether they are labels.

Spacing, origin and direction are derived from the affine, never stored twice (TorchIO's
Image pattern). Arrays are indexed (i, j, k[, t]) like nibabel; time is last. The time
between frames is not geometry and has no place in a 4x4 affine: it travels beside it as
``frame_interval_s`` (NIfTI ``pixdim[4]`` with ``xyzt_units``; DICOM TriggerTime steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["image", "label"]

#: Tolerance for "orthonormal": scanners and converters leave ~1e-5 rounding in directions.
ORTHONORMAL_TOL = 1e-3


@dataclass
class Volume:
    """Voxels with physical geometry.

    Args:
        data: array of shape (X, Y, Z) or (X, Y, Z, T).
        affine: 4x4 voxel-to-world matrix in RAS+ millimetres (the NIfTI convention).
        kind: ``"image"`` (interpolated linearly) or ``"label"`` (nearest neighbour only).
        meta: free-form provenance (series description, source format, ...) for sidecars.
        frame_interval_s: seconds between frames of a 4D volume (a cine's trigger-time
            step, an fMRI TR); None when the source does not say.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6)), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> v.spacing
        (2.0, 2.0, 3.0)
    """

    data: np.ndarray
    affine: np.ndarray
    kind: Kind = "image"
    meta: dict = field(default_factory=dict)
    frame_interval_s: float | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.kind not in ("image", "label"):
            raise ValueError(f"kind must be 'image' or 'label', got {self.kind!r}")
        if self.frame_interval_s is not None:
            step = float(self.frame_interval_s)
            if not (np.isfinite(step) and step > 0):
                raise ValueError(f"frame interval must be a positive number of seconds, "
                                 f"got {self.frame_interval_s!r}")
            self.frame_interval_s = step

    @property
    def shape3(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[:3])

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3]) if self.data.ndim == 4 else 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit vectors of the voxel axes in RAS."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def origin(self) -> np.ndarray:
        """World (RAS, mm) position of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None,
                  kind: Kind | None = None) -> "Volume":
        """A new Volume sharing meta and frame interval, with new voxels (and optionally a
        new affine/kind)."""
        return Volume(data, self.affine if affine is None else affine,
                      kind or self.kind, dict(self.meta), self.frame_interval_s)

    def geometry(self) -> dict:
        """Geometry as plain lists for JSON sidecars."""
        out = {"shape": [int(s) for s in self.data.shape], "spacing_mm": list(self.spacing),
               "origin_ras_mm": self.origin.tolist(), "affine": self.affine.tolist()}
        if self.data.ndim == 4:
            out["frame_interval_s"] = self.frame_interval_s
        return out


def make_affine(spacing, direction=None, origin=None) -> np.ndarray:
    """Build a RAS affine from spacing (3,), direction (3x3 unit columns) and origin (3,)."""
    a = np.eye(4)
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    a[:3, :3] = d * np.asarray(spacing, dtype=np.float64)
    if origin is not None:
        a[:3, 3] = origin
    return a


def geometry_problem(affine: np.ndarray) -> str | None:
    """Why an affine is unusable (zero/negative/NaN spacing, non-orthonormal), or None."""
    m = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        return "the affine contains NaN or infinite values"
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 1e-8):
        return f"zero voxel spacing {spacing.round(6).tolist()}"
    d = m[:3, :3] / spacing
    if np.abs(d.T @ d - np.eye(3)).max() > ORTHONORMAL_TOL:
        return "the direction matrix is not orthonormal (sheared or skewed voxel axes)"
    if abs(np.linalg.det(d)) < 0.5:
        return "the direction matrix is singular"
    return None


def same_space(a: Volume, b: Volume, atol: float = 1e-3) -> bool:
    """True when two volumes share the voxel grid (shape and affine; frames may differ)."""
    return same_grid((a.shape3, a.affine), (b.shape3, b.affine), atol)


def same_grid(a: tuple, b: tuple, atol: float = 1e-3) -> bool:
    """True when two ``(shape3, affine)`` grids are the same."""
    return tuple(a[0]) == tuple(b[0]) and np.allclose(a[1], b[1], atol=atol)


def nearest_on(data: np.ndarray, data_affine: np.ndarray, affine: np.ndarray,
               shape) -> np.ndarray:
    """A 3D array (e.g. labels) sampled at the voxel centres of another grid, nearest voxel.

    Args:
        data: (X, Y, Z) on the grid ``data_affine``.
        affine, shape: the grid to sample at (4x4, (X', Y', Z')).

    Returns:
        (X', Y', Z') of ``data``'s dtype; 0 where a centre falls outside ``data``.
    """
    data = np.asarray(data)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    to_data = np.linalg.inv(data_affine) @ affine
    src = np.rint(ijk @ to_data[:3, :3].T + to_data[:3, 3]).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.array(data.shape[:3])), axis=-1)
    out = np.zeros(tuple(shape), data.dtype)
    out[inside] = data[tuple(src[inside].T)]
    return out
