"""Tiny cine segmentations of the analytic phantom heart, written without images (labels
only, a second or two): a 3-frame short-axis stack and 2-/4-chamber planes."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.io import Volume, write_nifti

FAST = dict(ed_iterations=40, ed_ffd_iterations=5, frame_kinematic_steps=8,
            frame_iterations=4)


def write_heart(folder, frames: int = 3, seed: int = 3, drop: str | None = None):
    """Write seg_sa / seg_la_2ch / seg_la_4ch of one phantom heart; returns their paths.

    ``drop="la_2ch"`` leaves that view out.
    """
    from medflow.phantom import cine_planes as cp
    from medflow.phantom.heart import HeartModel

    heart = HeartModel.from_seed(seed, frames)
    times = np.arange(frames) / frames
    grids = {"sa": cp.sa_geometry(heart), "la_2ch": cp.la_geometry(heart, "2ch"),
             "la_4ch": cp.la_geometry(heart, "4ch")}
    paths = {}
    for view, (affine, shape) in grids.items():
        if view == drop:
            continue
        pts = cp.grid_points(affine, shape).reshape(-1, 3)
        lab = np.stack([heart.labels_at(pts, float(t)).reshape(shape) for t in times], -1)
        paths[view] = folder / f"seg_{view}.nii.gz"
        write_nifti(Volume(lab, affine, kind="label"), paths[view])
    return heart, paths


@pytest.fixture(scope="session")
def heart_segs(tmp_path_factory):
    """(HeartModel, {view: path}) of a 3-frame phantom, written once per session."""
    return write_heart(tmp_path_factory.mktemp("heart"))


@pytest.fixture
def fast_options():
    from medflow.motion.fit import FitOptions

    return FitOptions(**FAST)


@pytest.fixture(scope="session")
def heart_writer():
    """:func:`write_heart` (test modules cannot import conftest under importlib mode)."""
    return write_heart


@pytest.fixture(scope="session")
def fast():
    """The fast fitting options, as keyword arguments."""
    return dict(FAST)
