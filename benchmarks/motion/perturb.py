"""Degrade a phantom cohort's segmentations the way a segmentation model errs, to measure
estimate-motion-mesh on imperfect input (no trained model is needed):

- ``atrium``: the most basal short-axis slice holding LV at ED keeps that LV blood pool in
  every frame, as a model does when the slice cuts the atrium at end-systole (the error
  behind make demo's low voxel-counted LVEF; issue 17);
- ``boundary``: each class of every slice and frame is eroded or dilated by one pixel at
  random (p = 1/3 each), a Dice of ~0.9 on the blood pools.

    python benchmarks/motion/perturb.py --samplesheet demo/samplesheet.csv \
        --out /tmp/perturbed [--kinds atrium,boundary] [--seed 0]

Writes ``<out>/<subject>/seg_*.nii.gz`` and ``<out>/samplesheet.csv`` (other columns point to
the original files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from medflow.io import Volume, read_image, write_nifti
from medflow.io.samplesheet import load_samplesheet

SEGS = ("seg_sa", "seg_la_2ch", "seg_la_4ch")


def atrium_as_lv(sa: np.ndarray) -> np.ndarray:
    """(X, Y, Z, T) labels with the basal ED LV blood pool kept in every frame."""
    out = sa.copy()
    has = np.flatnonzero((sa[..., 0] == 1).any((0, 1)))
    k = has[0]                                   # the phantom's slice 0 is the base
    pool = sa[:, :, k, 0] == 1
    for t in range(sa.shape[3]):
        sl = out[:, :, k, t]
        sl[pool & (sl == 0)] = 1
    return out


def boundary_noise(lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-pixel random erosion/dilation of each class per slice and frame."""
    out = lab.copy()
    for k in range(lab.shape[2]):
        for t in range(lab.shape[3]):
            sl = out[:, :, k, t]
            for c in (1, 2, 3):
                move = rng.integers(3)
                mask = sl == c
                if move == 1:
                    sl[mask & ~ndimage.binary_erosion(mask)] = 0
                elif move == 2:
                    sl[ndimage.binary_dilation(mask) & (sl == 0)] = c
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplesheet", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kinds", default="atrium,boundary")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))
    sheet = load_samplesheet(args.samplesheet)
    rng = np.random.default_rng(args.seed)
    rows = []
    for rec in sheet.to_dict("records"):
        folder = Path(args.out) / rec["subject"]
        folder.mkdir(parents=True, exist_ok=True)
        for col in SEGS:
            vol = read_image(rec[col], kind="label")
            lab = np.asarray(vol.data).astype(np.uint8)
            if col == "seg_sa" and "atrium" in kinds:
                lab = atrium_as_lv(lab)
            if "boundary" in kinds:
                lab = boundary_noise(lab, rng)
            rec[col] = str(folder / f"{col}.nii.gz")
            write_nifti(Volume(lab, vol.affine, kind="label"), rec[col])
        rows.append(rec)
    import pandas as pd

    pd.DataFrame(rows).to_csv(Path(args.out) / "samplesheet.csv", index=False)


if __name__ == "__main__":
    main()
