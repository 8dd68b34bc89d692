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
    assert table.loc["a", "lvedv_voxel_ml"] == 2.0 and table.loc["a", "lvesv_voxel_ml"] == 1.0
    assert table.loc["a", "lvef_voxel_pct"] == 50.0 and table.loc["a", "ed_rule"] == "first"
    # ED is frame 0 (UK Biobank), ES the smallest LV: b's LV grows, so its EF is 0, flagged
    assert table.loc["b", "ed_frame"] == 0 and table.loc["b", "es_frame"] == 0
    assert table.loc["b", "lvef_voxel_pct"] == 0.0 and not table.loc["b", "qc_pass"]
    assert "LV volume curve is flat" in table.loc["b", "qc_reasons"]
    assert table.loc["a", "lvm_voxel_g"] == 1.05
    assert table.loc["a", "rvedv_voxel_ml"] == 0.5 and table.loc["a", "sa_spacing_z_mm"] == 5.0
    assert table.loc["a", "unc_foreground_mean"] == 40.0
    assert (results / "segment" / "segment.parquet").exists()
    assert (results / "preprocess" / "preprocess.parquet").exists()
    page = (results / "report" / "index.html").read_text()
    assert "<h2>segment</h2>" in page and "lvef_voxel_pct" in page
    assert "measured against truth" not in page  # no truth.json: no comparison
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from a network
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "overlay_a.png" in images and "segment_volumes.png" in images
    for image in images:
        assert (results / "report" / image).is_file(), image
        assert (results / "report" / image).read_bytes()[:4] == b"\x89PNG"


def test_report_of_missing_folder(runner, tmp_path):
    res = runner.invoke(cli, ["report", "--results", str(tmp_path / "none")])
    assert res.exit_code == 66 and "results folder not found" in res.output


def test_report_shows_measured_against_truth(runner, results, tmp_path):
    """With the run's samplesheet naming truth.json files (as params.json records it), the
    cohort table carries the true values and the report compares them."""
    for sub, ef in (("a", 55.0), ("b", 10.0)):
        (tmp_path / f"truth_{sub}.json").write_text(json.dumps(
            {"lvef_pct": ef, "lvedv_ml": 2.1, "lvesv_ml": 1.0, "lv_mass_g": 1.0}))
    pd.DataFrame({"subject": ["a", "b"], "sa": ["a.nii.gz", "b.nii.gz"],
                  "truth": ["truth_a.json", "truth_b.json"]}).to_csv(tmp_path / "sheet.csv",
                                                                     index=False)
    (results / "pipeline_info").mkdir()
    (results / "pipeline_info" / "params.json").write_text(
        json.dumps({"input": str(tmp_path / "sheet.csv")}))
    res = runner.invoke(cli, ["report", "--results", str(results)])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(results / "cohort.parquet").set_index("subject")
    assert table.loc["a", "lvef_true_pct"] == 55.0 and table.loc["b", "lvm_true_g"] == 1.0
    page = (results / "report" / "index.html").read_text()
    assert "measured against truth" in page and "lvef_true_pct" in page
    # a: 50 vs 55, b: 0 vs 10 -> mean error -7.5 points, mean absolute 7.5
    assert "-7.5" in page
    assert (results / "report" / "truth.png").read_bytes()[:4] == b"\x89PNG"


def test_report_shows_calibration_when_probabilities_were_scored(runner, results):
    """With ECE/Brier columns in the score-uncertainty table (--save-probabilities): the
    per-region means, the reliability diagram and whether the segment sidecars say the
    probabilities were calibrated; without them, no calibration part."""
    from medflow.report.render import render_report

    folder = results / "uncertainty"
    folder.mkdir()
    table = pd.DataFrame({"subject": ["a", "b"], "score": [0.8, 0.7], "lv_ece": [0.02, 0.04],
                          "lv_brier": [0.01, 0.03], "rv_ece": [0.1, 0.2],
                          "rv_brier": [0.05, 0.07]})
    table.to_parquet(folder / "score-uncertainty.parquet")
    page = render_report(results).read_text()
    assert "<h2>uncertainty</h2>" in page and "<h3>calibration</h3>" in page
    assert "The probabilities were unknown." in page  # no sidecar says how they were made
    part = page.split("<h3>calibration</h3>")[1].split("</table>")[0]
    assert re.findall(r"<th>([^<]*)</th>", part) == [
        "region", "subjects", "ECE mean", "ECE max", "Brier mean"]
    # region, subjects, ECE mean and max, Brier mean
    assert re.findall(r"<td>([^<]*)</td>", part) == [
        "lv", "2", "0.03", "0.04", "0.02", "rv", "2", "0.15", "0.2", "0.06"]
    assert "curves_reliability.png" not in page  # no diagram written: none shown
    for subject, method in (("a", "temperature"), ("b", "none")):
        (results / "segment" / subject / f"{subject}_sa_seg.json").write_text(json.dumps(
            {"parameters": {"calibration": method}, "labels": LABELS}))
    (folder / "curves_reliability.png").write_bytes(b"\x89PNG\r\n")
    page = render_report(results).read_text()
    assert "were calibrated (temperature) for 1, not calibrated for 1." in page
    assert '<img src="../uncertainty/curves_reliability.png"' in page
    table.drop(columns=["lv_ece", "lv_brier", "rv_ece", "rv_brier"]).to_parquet(
        folder / "score-uncertainty.parquet")
    page = render_report(results).read_text()
    assert "<h2>uncertainty</h2>" in page and "calibration" not in page
