"""A tiny 3-subject cine cohort (rings and discs, 1.8 x 1.8 x 10 mm, oblique affine) and a
tiny model trained on it once per session (seconds)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from medflow.io import Volume, make_affine, write_nifti

SHAPE = (24, 20, 6)
SPACING = (1.8, 1.8, 10.0)
# Quality does not matter here, only that a real model runs: one epoch, no validation.
TINY = ["--epochs", "1", "--patch", "16,16,16", "--channels", "4", "--levels", "2",
        "--val-fraction", "0", "--seed", "3"]


def heart(rng: np.random.Generator, frames: int = 2):
    """A (X, Y, Z, T) int16 image and uint8 labels: LV disc 1, myocardium ring 2, RV 3."""
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    img = np.zeros((*SHAPE, frames), np.float32)
    lab = np.zeros((*SHAPE, frames), np.uint8)
    cx, cy = 11 + rng.integers(-2, 3), 10 + rng.integers(-2, 3)
    for t in range(frames):
        r = 4.0 - t + rng.uniform(-0.5, 0.5)
        d = np.hypot(x - cx, y - cy)
        drv = np.hypot(x - cx - r - 5, y - cy)
        sl = np.zeros(SHAPE[:2], np.uint8)
        sl[(drv < r + 1) & (d >= r + 2)] = 3
        sl[(d >= r) & (d < r + 2)] = 2
        sl[d < r] = 1
        for z in range(1, SHAPE[2] - 1):
            lab[..., z, t] = sl
    img[lab == 1], img[lab == 2], img[lab == 3] = 300, 80, 260
    img += 40 + rng.normal(0, 10, img.shape)
    return img.astype(np.int16), lab


def affine():
    # Oblique and not RAS, so the pipeline's reorientation really moves axes.
    c, s = np.cos(0.2), np.sin(0.2)
    direction = np.array([[-c, -s, 0], [0, 0, 1.0], [s, -c, 0]])
    return make_affine(SPACING, direction, origin=(-20.0, 10.0, 5.0))


def write_cohort(folder, n: int = 3, seed: int = 0, labelled: int | None = None):
    """``n`` subjects; the first ``labelled`` (default all) have a seg_sa column."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sub = f"s{i}"
        img, lab = heart(rng)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        write_nifti(Volume(img, affine()), folder / sub / "sa.nii.gz")
        write_nifti(Volume(lab, affine(), "label"), folder / sub / "seg_sa.nii.gz")
        keep = labelled is None or i < labelled
        rows.append({"subject": sub, "sa": f"{sub}/sa.nii.gz",
                     "seg_sa": f"{sub}/seg_sa.nii.gz" if keep else ""})
    with open(folder / "samplesheet.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "sa", "seg_sa"])
        w.writeheader()
        w.writerows(rows)
    return folder / "samplesheet.csv"


@pytest.fixture(scope="session")
def base_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"))


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
