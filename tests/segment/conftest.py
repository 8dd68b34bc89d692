"""Tiny synthetic cine cohorts (rings and discs, 1.8 x 1.8 x 10 mm) and a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.io import make_affine

SPACING = (1.8, 1.8, 10.0)


def affine():
    return make_affine(SPACING, origin=(-20.0, 10.0, 5.0))


TINY = ["--epochs", "2", "--patch", "16,16,6", "--channels", "4", "--levels", "2",
        "--val-fraction", "0.25", "--seed", "3"]


def train_tiny(runner, cohort, out, epochs: str, *flags: str):
    """``segment-cascaded train`` of ``cohort`` into ``out`` at TINY's architecture (the
    default validation split and seed), for ``epochs``, with ``flags``; the click result."""
    from medflow.segment.cli import segment_cascaded

    return runner.invoke(segment_cascaded, ["train", "--samplesheet", str(cohort), "--out",
                                            str(out), *TINY[:-4], "--epochs", epochs, *flags])


@pytest.fixture(scope="session")
def cohort(tmp_path_factory, tiny_cohort):
    return tiny_cohort(tmp_path_factory.mktemp("cohort"), affine(), n=4)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, cohort):
    """A tiny model trained once for the session (seconds)."""
    import torch
    from click.testing import CliRunner

    from medflow.segment.cli import segment_cascaded

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("model") / "m"
    res = CliRunner().invoke(segment_cascaded, ["train", "--samplesheet", str(cohort),
                                                "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    return out
