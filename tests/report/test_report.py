"""`medflow report` on a results folder laid out as both runners write it, without
cohort.parquet (as after a Nextflow run): tables are gathered, the page renders, every
image it references exists, and the volumes are the known ones."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io import Volume, make_affine, write_nifti

SPACING = (2.0, 2.0, 5.0)  # 20 ul voxels: 50 voxels are 1 ml
LABELS, NAMES = [0, 1, 2, 3], ["background", "LV", "myocardium", "RV"]


def write_subject(results, subject: str, lv_voxels: tuple[int, int]) -> None:
    """A two-frame segmentation with a known LV blood pool size per frame."""
    affine = make_affine(SPACING, origin=(3.0, -4.0, 5.0))
    seg = np.zeros((20, 20, 4, 2), np.uint8)
    for t, n in enumerate(lv_voxels):
        lv = np.zeros(20 * 20 * 2, np.uint8)
        lv[:n] = 1
        seg[:, :, 1:3, t] = lv.reshape(20, 20, 2)             # LV: n voxels in slices 1-2
        seg[10:15, 10:20, 0, t] = 2                           # myocardium: 50 voxels
        seg[0:5, 15:20, 3, t] = 3                             # RV: 25 voxels
    image = (seg * 100 + 20).astype(np.int16)
    pre, segdir = results / "preprocess" / subject, results / "segment" / subject
    pre.mkdir(parents=True)
    segdir.mkdir(parents=True)
    write_nifti(Volume(image, affine), pre / f"{subject}_sa_preproc.nii.gz")
    (pre / f"{subject}_sa_preproc.json").write_text(json.dumps({
        "parameters": {"role": "image", "samplesheet_column": "sa"},
        "output_geometry": {"shape": list(image.shape), "spacing_mm": list(SPACING)},
        "timings": {"total_s": 0.1}}))
    write_nifti(Volume(seg, affine, "label"), segdir / f"{subject}_sa_seg.nii.gz")
    write_nifti(Volume((seg > 0).astype(np.uint8) * 40, affine),
                segdir / f"{subject}_sa_unc.nii.gz")
    (segdir / f"{subject}_sa_seg.json").write_text(json.dumps(
        {"labels": LABELS, "label_names": NAMES}))


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    write_subject(folder, "a", (100, 50))   # ED 2 ml, ES 1 ml: EF 50 %
    write_subject(folder, "b", (150, 200))  # ED is frame 1 (4 ml), ES frame 0 (3 ml)
    return folder


def test_report_gathers_tables_and_renders(runner, results):
    res = runner.invoke(cli, ["report", "--results", str(results)])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(results / "cohort.parquet").set_index("subject")
    assert table.loc["a", "lv_ed_ml"] == 2.0 and table.loc["a", "lv_es_ml"] == 1.0
    assert table.loc["a", "lv_ef_pct"] == 50.0
    assert table.loc["b", "ed_frame"] == 1 and table.loc["b", "lv_ef_pct"] == 25.0
    assert table.loc["a", "myo_ed_ml"] == 1.0 and table.loc["a", "myo_mass_g"] == 1.05
    assert table.loc["a", "rv_ed_ml"] == 0.5 and table.loc["a", "sa_spacing_z_mm"] == 5.0
    assert table.loc["a", "unc_foreground_mean"] == 40.0
    assert (results / "segment" / "segment.parquet").exists()
    assert (results / "preprocess" / "preprocess.parquet").exists()
    page = (results / "report" / "index.html").read_text()
    assert "<h2>segment</h2>" in page and "lv_ef_pct" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from a network
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "overlay_a.png" in images and "segment_volumes.png" in images
    for image in images:
        assert (results / "report" / image).is_file(), image
        assert (results / "report" / image).read_bytes()[:4] == b"\x89PNG"


def test_report_of_missing_folder(runner, tmp_path):
    res = runner.invoke(cli, ["report", "--results", str(tmp_path / "none")])
    assert res.exit_code == 66 and "results folder not found" in res.output
