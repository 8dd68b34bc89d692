"""Tiny hearts from the demo cohort's analytic model on coarse grids, a tiny shape prior
trained on them once per session (seconds), and stacks degraded from known shapes."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.io import Volume, make_affine, write_nifti
from medflow.phantom.heart import HeartModel
from medflow.superres.geometry import voxel_points

#: A coarse prior: 6 mm canonical voxels, big enough for the phantom's ventricles.
TINY_PRIOR = dict(shape=(24, 16, 24), spacing_mm=6.0, origin_mm=(-45.0, -45.0, -72.0),
                  latent=4, channels=(4, 8, 8), head_channels=4)


def heart_grid(heart: HeartModel, spacing: float = 3.0):
    """A grid with the heart's axes (x to the RV, -y, base to apex), like the cohort's gt."""
    lo, hi = heart.extent_heart()
    lo, hi = lo - 6.0, hi + 6.0
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
    axes = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]).T
    corner = np.array([lo[0], hi[1], hi[2]])
    affine = make_affine((spacing,) * 3, heart.rot @ axes, heart.to_world(corner[None])[0])
    return affine, shape


def heart_labels(seed: int, t: float = 0.0, spacing: float = 3.0):
    heart = HeartModel.from_seed(seed)
    affine, shape = heart_grid(heart, spacing)
    labels = heart.labels_at(voxel_points(affine, shape).reshape(-1, 3), t).reshape(shape)
    return labels, affine, heart


def stack_of(labels_at, heart: HeartModel, shifts_mm: np.ndarray | None, pixel=3.0,
             spacing=10.0, size=(44, 40)):
    """A short-axis stack through the heart (slice 0 at the base), labels of each slice's
    centre plane seen through per-slice shifts (truth.json's convention)."""
    from medflow.phantom.cine_planes import grid_points

    n = int(np.ceil(-heart.apex_z / spacing)) + 1
    axes = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]).T
    half = np.array([(size[0] - 1) / 2.0, (size[1] - 1) / 2.0, 0.0])
    centre = np.array([15.0, 0.0, -0.5 * spacing])
    corner = centre - axes @ (half * np.array([pixel, pixel, spacing]))
    affine = make_affine((pixel, pixel, spacing), heart.rot @ axes,
                         heart.to_world(corner[None])[0])
    shape = (*size, n)
    pts = grid_points(affine, shape, None if shifts_mm is None else shifts_mm[:n])
    return labels_at(pts.reshape(-1, 3)).reshape(shape).astype(np.uint8), affine


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory):
    """A prior trained for a few seconds on one phantom heart (ED and ES), saved as a
    model folder; returns (folder, network). Its shapes are coarse (6 mm voxels, 200
    steps), which is all the tests need: they compare with shapes it decodes itself."""
    import torch

    from medflow.superres.modelio import save_model
    from medflow.superres.prior import PriorConfig
    from medflow.superres.shapes import Shape
    from medflow.superres.train_prior import train_prior

    torch.set_num_threads(1)
    cfg = PriorConfig(**TINY_PRIOR)
    shapes = [Shape.from_labels(*heart_labels(2, t)[:2], cfg.labels) for t in (0.0, 0.35)]
    net, _, _ = train_prior(shapes, [], cfg, epochs=200, batch=2, lr=1e-2, points=4000,
                            seed=0)
    folder = tmp_path_factory.mktemp("prior") / "prior"
    save_model(folder, net, "latent", {"training": {"shapes": len(shapes)}, "validation": {}})
    return folder, net


@pytest.fixture
def write_volume(tmp_path):
    def write(name, data, affine, kind="label"):
        path = tmp_path / name
        write_nifti(Volume(np.asarray(data), affine, kind=kind), path)
        return path
    return write
