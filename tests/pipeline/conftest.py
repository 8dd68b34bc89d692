"""A tiny 3-subject cine cohort (rings and discs, 1.8 x 1.8 x 10 mm, oblique affine) and a
tiny model trained on it once per session (seconds)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medflow.io import make_affine

SPACING = (1.8, 1.8, 10.0)
# Quality does not matter here, only that a real model runs: one epoch, no validation.
TINY = ["--epochs", "1", "--patch", "16,16,16", "--channels", "4", "--levels", "2",
        "--val-fraction", "0", "--seed", "3"]


def affine():
    # Oblique and not RAS, so the pipeline's reorientation really moves axes.
    c, s = np.cos(0.2), np.sin(0.2)
    direction = np.array([[-c, -s, 0], [0, 0, 1.0], [s, -c, 0]])
    return make_affine(SPACING, direction, origin=(-20.0, 10.0, 5.0))


@pytest.fixture(scope="session")
def base_cohort(tmp_path_factory, tiny_cohort):
    return tiny_cohort(tmp_path_factory.mktemp("cohort"), affine())


@pytest.fixture
def cohort(base_cohort, tmp_path):
    """A private copy of the cohort (tests change its files)."""
    shutil.copytree(base_cohort.parent, tmp_path / "cohort")
    return tmp_path / "cohort" / "samplesheet.csv"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, base_cohort):
    """A tiny model trained once for the session on the cohort as it is stored."""
    import torch
    from click.testing import CliRunner

    from medflow.segment.cli import segment_cascaded

    torch.set_num_threads(1)  # tests share two cores
    out = tmp_path_factory.mktemp("model") / "m"
    res = CliRunner().invoke(segment_cascaded, ["train", "--samplesheet", str(base_cohort),
                                                "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    return out
