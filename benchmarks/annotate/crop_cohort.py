"""Centre-crop the in-plane axes of a cohort's image and label columns (the cardiac
simulation's cost: 184 x 160 short-axis slices become 96 x 96 at the same 1.8 mm).

    python benchmarks/annotate/crop_cohort.py demo/card/samplesheet.csv demo/card96 96,96 sa seg_sa

Writes <out>/<subject>/<role>.nii.gz (geometry kept: the affine's origin moves with the
crop) and <out>/samplesheet.csv with the other columns (e.g. subgroup) unchanged.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.io.images import read_image, write_nifti
from medflow.io.samplesheet import is_label_role, load_samplesheet
from medflow.io.volume import Volume


def crop(vol: Volume, size) -> Volume:
    lo = [(n - s) // 2 for n, s in zip(vol.data.shape[:2], size)]
    data = np.asarray(vol.data)[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1]]
    affine = vol.affine.copy()
    affine[:3, 3] = vol.affine[:3, :3] @ np.array([lo[0], lo[1], 0.0]) + vol.affine[:3, 3]
    return Volume(np.ascontiguousarray(data), affine, vol.kind)


def main(sheet_path, out, size, roles):
    out = Path(out)
    sheet = load_samplesheet(sheet_path)
    size = [int(v) for v in size.split(",")]
    rows = []
    for row in sheet.to_dict("records"):
        new = {k: v for k, v in row.items() if k not in roles and k != "truth"}
        for role in roles:
            kind = "label" if is_label_role(role) else "image"
            dst = out / row["subject"] / f"{role}.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(crop(read_image(row[role], kind=kind), size), dst)
            new[role] = f"{row['subject']}/{role}.nii.gz"
        rows.append(new)
    keep = ["subject", *roles, *[c for c in ("subgroup",) if c in sheet.columns]]
    pd.DataFrame(rows)[keep].to_csv(out / "samplesheet.csv", index=False)
    print(out / "samplesheet.csv")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
