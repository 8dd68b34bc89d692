"""Shared fixtures: tiny seeded volumes with non-identity affines (TorchIO's tests/utils.py)."""

from __future__ import annotations

import csv

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


def tiny_heart_arrays(rng: np.random.Generator, frames: int = 2, shape=(24, 20, 6)):
    """A tiny (X, Y, Z, T) cine: int16 image and uint8 labels (LV disc 1, myocardium ring 2,
    RV 3), the LV shrinking frame by frame; the first and last slices are empty."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    img = np.zeros((*shape, frames), np.float32)
    lab = np.zeros((*shape, frames), np.uint8)
    cx, cy = 11 + rng.integers(-2, 3), 10 + rng.integers(-2, 3)
    for t in range(frames):
        r = 4.0 - t + rng.uniform(-0.5, 0.5)
        d = np.hypot(x - cx, y - cy)
        drv = np.hypot(x - cx - r - 5, y - cy)
        sl = np.zeros(shape[:2], np.uint8)
        sl[(drv < r + 1) & (d >= r + 2)] = 3
        sl[(d >= r) & (d < r + 2)] = 2
        sl[d < r] = 1
        for z in range(1, shape[2] - 1):
            lab[..., z, t] = sl
    img[lab == 1], img[lab == 2], img[lab == 3] = 300, 80, 260
    img += 40 + rng.normal(0, 10, img.shape)
    return img.astype(np.int16), lab


def write_tiny_cohort(folder, affine: np.ndarray, n: int = 3, seed: int = 0,
                      labelled: int | None = None):
    """``n`` tiny cine subjects (``sa``, ``seg_sa``) and their samplesheet; only the first
    ``labelled`` (default all) have their ``seg_sa`` in the sheet."""
    from medflow.io import write_nifti

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sub = f"s{i}"
        img, lab = tiny_heart_arrays(rng)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        write_nifti(Volume(img, affine), folder / sub / "sa.nii.gz")
        write_nifti(Volume(lab, affine, "label"), folder / sub / "seg_sa.nii.gz")
        keep = labelled is None or i < labelled
        rows.append({"subject": sub, "sa": f"{sub}/sa.nii.gz",
                     "seg_sa": f"{sub}/seg_sa.nii.gz" if keep else ""})
    with open(folder / "samplesheet.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "sa", "seg_sa"])
        w.writeheader()
        w.writerows(rows)
    return folder / "samplesheet.csv"


@pytest.fixture(scope="session")
def tiny_heart():
    """The tiny cine generator ``tiny_heart(rng, frames=2)`` (sub-folder conftests cannot
    import this file)."""
    return tiny_heart_arrays


@pytest.fixture(scope="session")
def tiny_cohort():
    """``tiny_cohort(folder, affine, n=3, seed=0, labelled=None)`` -> samplesheet path."""
    return write_tiny_cohort


def category_image(kind: str, rng: np.random.Generator, shape=(28, 24, 5)) -> np.ndarray:
    """A clearly recognisable kind of image (``disk``, ``stripes`` or ``speckle``), at a
    random intensity scale and offset, for the cluster-unsupervised tests."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    if kind == "disk":
        cx, cy, r = rng.uniform(10, 18), rng.uniform(9, 15), rng.uniform(5, 8)
        plane = (np.hypot(x - cx, y - cy) < r).astype(float)
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 7)
        plane = (np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period) > 0) * 1.0
    else:  # speckle: sparse bright dots
        plane = (rng.random(shape[:2]) > 0.93) * 1.0
    vol = np.repeat(plane[..., None], shape[2], 2) + 0.05 * rng.standard_normal(shape)
    return (vol * rng.uniform(50, 2000) + rng.uniform(0, 100)).astype(np.float32)


def write_category_cohort(folder, n: int = 5, seed: int = 0):
    """``n`` subjects with a disk, a stripes and a speckle image (columns of those names);
    ``samplesheet.csv`` and ``truth.csv`` (the same plus a truth column ``kind``)."""
    import pandas as pd

    from medflow.io import write_nifti

    rng = np.random.default_rng(seed)
    affine = make_affine((1.2, 1.2, 4.0))
    rows = []
    for i in range(n):
        row = {"subject": f"s{i}"}
        for kind in ("disk", "stripes", "speckle"):
            path = folder / f"s{i}" / f"{kind}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(Volume(category_image(kind, rng), affine), path)
            row[kind] = f"s{i}/{kind}.nii.gz"
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "samplesheet.csv", index=False)
    pd.DataFrame(rows).assign(kind="synthetic").to_csv(folder / "truth.csv", index=False)
    return folder / "samplesheet.csv"


@pytest.fixture(scope="session")
def category_cohort():
    """``category_cohort(folder, n=5, seed=0)`` -> samplesheet path (see
    :func:`write_category_cohort`)."""
    return write_category_cohort


#: Training arguments of cluster-unsupervised that make tests take seconds.
CLUSTER_FAST = ["--steps", "25", "--refine-steps", "10", "--batch", "16", "--seed", "0"]


@pytest.fixture(scope="session")
def cluster_fast():
    return CLUSTER_FAST
