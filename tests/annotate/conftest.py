"""A tiny constructed pool with a subgroup the model has never seen, and a tiny model.

Subgroup ``a``: the tiny cine of tests/conftest.py (bright LV and RV blood pools, dark
myocardium). Subgroup ``b`` (unseen): the same anatomy imaged with another contrast (blood
as dark as the myocardium, brighter background) - a minority scanner. The model is trained
on the four labelled ``a`` subjects only; the pool holds six ``a`` and two ``b``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medflow.io import Volume, make_affine, write_nifti

SPACING = (1.8, 1.8, 10.0)
LABELLED = ["a0", "a1", "a2", "a3"]
POOL_A = ["a4", "a5", "a6", "a7", "a8", "a9"]
POOL_B = ["b0", "b1"]
TINY = ["--epochs", "16", "--patch", "24,20,6", "--channels", "4", "--levels", "2", "--lr", "0.01",
        "--val-fraction", "0", "--augment", "none", "--seed", "1"]


def affine():
    return make_affine(SPACING, origin=(-20.0, 10.0, 5.0))


def write_pool(folder, tiny_heart, labels_for=None):
    """Write the pool; ``labels_for`` (default LABELLED) have their seg_sa in the sheet."""
    labels_for = LABELLED if labels_for is None else labels_for
    rng = np.random.default_rng(5)
    rows = []
    for sub in LABELLED + POOL_A + POOL_B:
        img, lab = tiny_heart(rng)
        if sub.startswith("b"):  # unseen contrast: blood dark, background bright
            img = np.where(lab > 0, 90, 200).astype(np.float32)
            img = (img + rng.normal(0, 10, img.shape)).astype(np.int16)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        write_nifti(Volume(img, affine()), folder / sub / "sa.nii.gz")
        write_nifti(Volume(lab, affine(), "label"), folder / sub / "seg_sa.nii.gz")
        rows.append({"subject": sub, "sa": f"{sub}/sa.nii.gz",
                     "seg_sa": f"{sub}/seg_sa.nii.gz" if sub in labels_for else "",
                     "subgroup": sub[0]})
    with open(folder / "samplesheet.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["subject", "sa", "seg_sa", "subgroup"])
        w.writeheader()
        w.writerows(rows)
    return folder / "samplesheet.csv"


@pytest.fixture(scope="session")
def pool(tmp_path_factory, tiny_heart):
    return write_pool(tmp_path_factory.mktemp("pool"), tiny_heart)


@pytest.fixture(scope="session")
def pool_model(tmp_path_factory, pool):
    """A tiny model trained on the labelled ``a`` subjects only (seconds)."""
    import torch
    from click.testing import CliRunner

    from medflow.segment.cli import segment_cascaded

    torch.set_num_threads(1)
    train = pool.parent / "train.csv"
    lines = pool.read_text().splitlines()
    train.write_text("\n".join([lines[0], *[l for l in lines[1:] if l.split(",")[0] in
                                            LABELLED]]) + "\n")
    out = tmp_path_factory.mktemp("model") / "m"
    res = CliRunner().invoke(segment_cascaded, ["train", "--samplesheet", str(train),
                                                "--image-role", "sa", "--label-role",
                                                "seg_sa", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def groups():
    """The subjects: labelled (a), unlabelled a, unlabelled b (unseen subgroup)."""
    return {"labelled": LABELLED, "a": POOL_A, "b": POOL_B}


@pytest.fixture(scope="session")
def pool_writer(tiny_heart):
    """``pool_writer(folder, labels_for=None)`` -> samplesheet path."""
    return lambda folder, labels_for=None: write_pool(folder, tiny_heart, labels_for)
