#!/usr/bin/env python3
"""Build the mixed demo set with known categories for cluster-unsupervised.

From `medflow demo-cohort` outputs (cardiac cine in both contrasts: short axis, 2- and
4-chamber; BraTS-style t1, t1ce, t2, flair; microCT) and the small real scans that ship
with pydicom and nibabel, one samplesheet with a ``group`` column: the category of an
image is ``<group>/<column>`` (e.g. ``ssfp/sa``, ``gre/la_4ch``, ``brats/flair``,
``real-ct/image``).

A view in another contrast is another category, as the four BraTS sequences are: the
intensity augmentations are monotone curves (scale), which keep the order of tissues, and
SSFP -> GRE changes that order (bright blood to grey blood, fat brightest) just as T1 ->
T2 does. The benchmark also scores views alone (``cardiac/sa`` for both contrasts).

Default sizes: 30 SSFP and 3 GRE cardiac subjects, 10 BraTS subjects, 3 microCT volumes
and 9 real scans: 151 images in 15 categories of 1 to 30 images (30 SSFP short axes vs 3
GRE ones or 3 microCT volumes: 10:1; the two one-of-a-kind real scans 30:1).

    python benchmarks/cluster/mixed_set.py --out /tmp/mixed
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Real scans: (category, package, file). Grouped by what they show; MR_small (a 64 x 64
#: head MR slice) and the abdominal MR are the only ones of their kind.
REAL = [
    ("real-ct", "pydicom", "CT_small.dcm"),               # body CT slice, 128 x 128
    ("real-ct", "pydicom", "693_J2KI.dcm"),               # head CT, 512 x 512, JPEG 2000
    ("real-ct", "pydicom", "J2K_pixelrep_mismatch.dcm"),  # head CT, 512 x 512, JPEG 2000
    ("real-mr-head", "pydicom", "MR_small.dcm"),          # 64 x 64 MR slice
    ("real-mr-abdomen", "pydicom", "examples_overlay.dcm"),  # abdominal MR, 484 x 300
    ("real-brain-mr", "nibabel", "anatomical.nii"),       # 33 x 41 x 25 brain
    ("real-brain-mr", "nibabel", "example4d.nii.gz"),     # 128 x 96 x 24 x 2 brain EPI
    ("real-brain-mr", "nibabel", "functional.nii"),       # 17 x 21 x 3 x 20 brain EPI
    ("real-brain-mr", "nibabel", "example_nifti2.nii.gz"),  # 32 x 20 x 12 x 2 brain
]
COLUMNS = ["subject", "group", "sa", "la_2ch", "la_4ch", "t1", "t1ce", "t2", "flair", "image"]


def real_path(package: str, name: str) -> Path:
    if package == "pydicom":
        from pydicom.data import get_testdata_file

        return Path(get_testdata_file(name))
    import nibabel.testing

    return Path(nibabel.testing.data_path) / name


def demo(medflow: str, out: Path, *args: str) -> list[dict]:
    """Run `medflow demo-cohort` once (kept when already there); its samplesheet rows."""
    sheet = out / "samplesheet.csv"
    if not sheet.exists():
        subprocess.run([medflow, "demo-cohort", "--out", str(out), *args], check=True,
                       stdout=subprocess.DEVNULL)
    with open(sheet) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k, v in r.items():
            if k != "subject" and v:
                r[k] = str(out / v)
    return rows


def build(out: Path, ssfp: int = 30, gre: int = 3, brats: int = 10, microct: int = 3,
          seed: int = 0, jobs: int = 2) -> Path:
    """Write ``out/samplesheet.csv`` (and the cohorts it names); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    medflow = shutil.which("medflow", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")])) or "medflow"
    rows = []
    j = ["--jobs", str(jobs)]
    for contrast, n in (("ssfp", ssfp), ("gre", gre)):
        for r in demo(medflow, out / f"cardiac_{contrast}", "--kind", "cardiac", "--subjects",
                      str(n), "--frames", "10", "--contrast", contrast, "--seed",
                      str(seed + (contrast == "gre")), *j):
            rows.append({"subject": f"{contrast}-{r['subject']}", "group": contrast,
                         "sa": r["sa"], "la_2ch": r["la_2ch"], "la_4ch": r["la_4ch"]})
    for r in demo(medflow, out / "brats", "--kind", "brats", "--subjects", str(brats),
                  "--seed", str(seed), *j):
        rows.append({"subject": f"brats-{r['subject']}", "group": "brats",
                     **{s: r[s] for s in ("t1", "t1ce", "t2", "flair")}})
    for r in demo(medflow, out / "microct", "--kind", "microct", "--subjects", str(microct),
                  "--shape", "128,128,128", "--seed", str(seed), *j):
        rows.append({"subject": f"microct-{r['subject']}", "group": "microct",
                     "image": r["image"]})
    for group, package, name in REAL:
        stem = name.split(".")[0].replace("_", "-")
        rows.append({"subject": f"real-{stem}", "group": group,
                     "image": str(real_path(package, name))})
    sheet = out / "samplesheet.csv"
    with open(sheet, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ssfp", type=int, default=30)
    ap.add_argument("--gre", type=int, default=3)
    ap.add_argument("--brats", type=int, default=10)
    ap.add_argument("--microct", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(build(a.out, a.ssfp, a.gre, a.brats, a.microct, a.seed))


if __name__ == "__main__":
    main()
