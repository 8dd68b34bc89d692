"""Shared fixtures: tiny seeded volumes with non-identity affines (TorchIO's tests/utils.py)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from medflow.io import Volume, make_affine


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def oblique_affine(spacing=(1.5, 2.0, 3.0), origin=(-10.0, 5.0, 20.0), angle=0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array(
        [[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2), np.cos(angle / 2)]])
    return make_affine(spacing, rot, origin)


@pytest.fixture
def oblique():
    """The oblique-affine factory, for tests in sub-folders (conftest is not importable
    under pytest's importlib mode): ``oblique(spacing=..., origin=..., angle=...)``."""
    return oblique_affine


@pytest.fixture
def image3d() -> Volume:
    rng = np.random.default_rng(0)
    data = rng.normal(100, 20, size=(10, 20, 30)).astype(np.float32)
    return Volume(data, oblique_affine())


@pytest.fixture
def label3d() -> Volume:
    data = np.zeros((10, 20, 30), np.uint8)
    data[2:8, 4:16, 5:25] = 1
    data[4:6, 8:12, 10:20] = 2
    return Volume(data, oblique_affine(), kind="label")
