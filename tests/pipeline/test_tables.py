"""Cohort-table phenotypes against hand-computed values: ED = frame 0, ES = smallest LV
(UK Biobank), voxel-counted columns with ``_voxel`` in their names, QC flags, and the
truth.json values beside the measured ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medflow.io import Volume, make_affine, write_nifti
from medflow.pipeline.tables import collect, volumes_row

SPACING = (2.0, 2.0, 10.0)  # 40 uL voxels: 25 voxels are 1 mL
CARDIAC = {"labels": [0, 1, 2, 3], "label_names": ["background", "LV", "myocardium", "RV"]}


def ring_cine(lv_voxels_per_slice, rv_voxels_per_slice, slices: int = 8) -> np.ndarray:
    """(24, 24, slices, T): per frame, the given LV and RV voxel counts in every slice and a
    myocardium block of 20 voxels per slice; frame 0 has the most LV only if asked to."""
    frames = len(lv_voxels_per_slice)
    lab = np.zeros((24, 24, slices, frames), np.uint8)
    for t, (n_lv, n_rv) in enumerate(zip(lv_voxels_per_slice, rv_voxels_per_slice)):
        for z in range(slices):
            flat = np.zeros(24 * 24, np.uint8)
            flat[:n_lv] = 1
            flat[200:220] = 2
            flat[300:300 + n_rv] = 3
            lab[:, :, z, t] = flat.reshape(24, 24)
    return lab


def write_seg(path, lab) -> None:
    write_nifti(Volume(lab, make_affine(SPACING), "label"), path)


def test_cardiac_row_by_hand(tmp_path):
    # LV per slice 100, 80, 50, 75 voxels; 8 slices of 40 uL: 32, 25.6, 16, 24 mL.
    lab = ring_cine([100, 80, 50, 75], [90, 80, 60, 70])
    write_seg(tmp_path / "seg.nii.gz", lab)
    row = volumes_row(tmp_path / "seg.nii.gz", CARDIAC)
    assert (row["ed_rule"], row["ed_frame"], row["es_frame"], row["frames"]) == ("first", 0, 2, 4)
    assert row["lvedv_voxel_ml"] == 32.0 and row["lvesv_voxel_ml"] == 16.0
    assert row["lvsv_voxel_ml"] == 16.0 and row["lvef_voxel_pct"] == 50.0
    assert row["lvm_voxel_g"] == pytest.approx(8 * 20 * 0.04 * 1.05)     # 6.4 mL x 1.05
    assert row["rvedv_voxel_ml"] == 28.8 and row["rvesv_voxel_ml"] == 19.2  # at LV ED/ES
    assert row["rvsv_voxel_ml"] == 9.6 and row["rvef_voxel_pct"] == pytest.approx(33.333)
    assert not any(k in row for k in ("lv_ef_pct", "lvef_pct", "lvedv_ml"))  # one name each
    assert isinstance(row["qc_pass"], bool)


def test_ed_is_frame_zero_even_when_later_frames_are_larger(tmp_path):
    # The largest LV is frame 1: the UK Biobank rule still takes frame 0 as ED.
    write_seg(tmp_path / "seg.nii.gz", ring_cine([100, 120, 50, 90], [90, 100, 60, 80]))
    row = volumes_row(tmp_path / "seg.nii.gz", CARDIAC)
    assert (row["ed_frame"], row["es_frame"]) == (0, 2)
    assert row["lvef_voxel_pct"] == 50.0


def test_qc_flags_a_flat_volume_curve_and_a_short_stack(tmp_path):
    write_seg(tmp_path / "flat.nii.gz", ring_cine([100, 99, 98, 100], [90, 80, 60, 70]))
    row = volumes_row(tmp_path / "flat.nii.gz", CARDIAC)
    assert row["qc_pass"] is False and "LV volume curve is flat" in row["qc_reasons"]
    write_seg(tmp_path / "short.nii.gz", ring_cine([100, 80, 50, 75], [90, 80, 60, 70], 4))
    row = volumes_row(tmp_path / "short.nii.gz", CARDIAC)
    assert row["qc_pass"] is False and "ED: 4 slices hold LV blood pool" in row["qc_reasons"]
    lab = ring_cine([100, 80, 50, 75], [90, 80, 60, 70])
    write_seg(tmp_path / "still.nii.gz", lab)
    row = volumes_row(tmp_path / "still.nii.gz", CARDIAC)       # the base never moves
    assert row["qc_pass"] is False and "LV blood pool at ES in the basal slice 0" in row["qc_reasons"]
    es_basal = lab[:, :, 0, 2]
    es_basal[es_basal == 1] = 0                                 # ES: slice 0 cuts the atrium
    write_seg(tmp_path / "good.nii.gz", lab)
    good = volumes_row(tmp_path / "good.nii.gz", CARDIAC)
    assert good["qc_pass"] is True and good["qc_reasons"] == ""


def test_other_label_sets_get_volumes_per_label(tmp_path):
    lab = np.zeros((10, 10, 4), np.uint8)
    lab[:5, :5, :2] = 1        # 50 voxels of 40 uL = 2 mL
    write_seg(tmp_path / "seg.nii.gz", lab)
    row = volumes_row(tmp_path / "seg.nii.gz", {"labels": [0, 1], "label_names": ["bg", "Tumour"]})
    assert row == {"frames": 1, "tumour_ml": 2.0}
    cine = np.stack([lab, lab * 0], axis=-1)
    write_seg(tmp_path / "cine.nii.gz", cine)
    row = volumes_row(tmp_path / "cine.nii.gz", {"labels": [0, 1], "label_names": ["bg", "T"]})
    assert (row["t_min_ml"], row["t_max_ml"]) == (0.0, 2.0)


def test_cohort_puts_truth_beside_the_measured_values(tmp_path):
    results = tmp_path / "results"
    folder = results / "segment" / "a"
    folder.mkdir(parents=True)
    write_seg(folder / "a_sa_seg.nii.gz", ring_cine([100, 80, 50, 75], [90, 80, 60, 70]))
    (folder / "a_sa_seg.json").write_text(json.dumps(CARDIAC))
    truth = {"lvef_pct": 55.0, "lvedv_ml": 33.0, "lvesv_ml": 14.85, "lv_mass_g": 7.0,
             "rvedv_ml": 30.0, "rvesv_ml": 18.0, "rvef_pct": 40.0}
    (tmp_path / "truth_a.json").write_text(json.dumps(truth))
    pd.DataFrame({"subject": ["a", "b"], "sa": ["a.nii.gz", "b.nii.gz"],
                  "truth": ["truth_a.json", ""]}).to_csv(tmp_path / "sheet.csv", index=False)
    cohort = collect(results, {"a": "ok", "b": "failed in segment"}, tmp_path / "sheet.csv")
    cols = list(cohort.columns)
    for true, measured in (("lvef_true_pct", "lvef_voxel_pct"), ("lvm_true_g", "lvm_voxel_g"),
                           ("lvesv_true_ml", "lvesv_voxel_ml"), ("rvef_true_pct", "rvef_voxel_pct")):
        assert cols.index(true) == cols.index(measured) + 1, true
    a = cohort.set_index("subject").loc["a"]
    assert a["lvef_true_pct"] == 55.0 and a["lvef_voxel_pct"] == 50.0 and a["lvm_true_g"] == 7.0
    assert pd.isna(cohort.set_index("subject").loc["b", "lvef_true_pct"])
    assert pd.read_parquet(results / "cohort.parquet")["lvef_true_pct"].iloc[0] == 55.0
    # without a truth column the table has no truth columns
    plain = collect(results, {"a": "ok"}, None)
    assert not [c for c in plain.columns if "_true_" in c]


def test_a_subject_that_fails_in_a_later_stage_keeps_what_it_finished(tmp_path):
    # Its segmentation was right; the motion fit after it failed: the cohort table keeps
    # the voxel phenotypes and their truth (as a Nextflow run would publish them).
    from medflow.pipeline.tables import finished

    results = tmp_path / "results"
    for s in ("a", "b"):
        folder = results / "segment" / s
        folder.mkdir(parents=True)
        write_seg(folder / f"{s}_sa_seg.nii.gz", ring_cine([100, 80, 50, 75], [90, 80, 60, 70]))
        (folder / f"{s}_sa_seg.json").write_text(json.dumps(CARDIAC))
    (tmp_path / "truth.json").write_text(json.dumps({"lvef_pct": 55.0}))
    pd.DataFrame({"subject": ["a", "b"], "sa": ["a.nii.gz", "b.nii.gz"],
                  "truth": ["truth.json", "truth.json"]}).to_csv(tmp_path / "s.csv", index=False)
    for late in ("failed in motion (exit 65): no LV", "cancelled in superres: interrupted"):
        cohort = collect(results, {"a": "ok", "b": late}, tmp_path / "s.csv").set_index("subject")
        assert cohort.loc["b", "lvef_voxel_pct"] == 50.0 and cohort.loc["b", "status"] == late
        assert cohort.loc["b", "lvef_true_pct"] == 55.0
    for early in ("failed in segment (exit 65): x", "failed in preprocess (exit 65): x",
                  "stopped: the train stage failed"):
        cohort = collect(results, {"a": "ok", "b": early}, tmp_path / "s.csv").set_index("subject")
        assert pd.isna(cohort.loc["b", "lvef_voxel_pct"]), early
        assert pd.isna(cohort.loc["b", "lvef_true_pct"]), early
    status = {"a": "ok", "b": "failed in motion (exit 1): x", "c": "failed in segment (exit 1)",
              "d": "stopped: SIGINT"}
    assert finished(status, "segment") == ["a", "b"]
    assert finished(status, "preprocess") == ["a", "b", "c"]
    assert finished(status, "motion") == ["a"]


@pytest.mark.parametrize("flagged", [[False, False, False, False], [False, True, False, False]])
def test_cluster_columns_with_and_without_flags(flagged):
    # A healthy cohort (no image flagged) crashed the cohort table and the report under
    # pandas 3 (groupby().apply on an empty frame returns a DataFrame, not a Series).
    from medflow.pipeline.tables import cluster_columns

    table = pd.DataFrame({"subject": ["a", "a", "b", "b"], "column": ["sa", "la_4ch"] * 2,
                          "cluster": [0, 1, 0, 0], "flagged": flagged,
                          "looks_like": [None, None, None, None] if not any(flagged)
                          else [None, "sa", None, None]})
    out = cluster_columns(table, ["a", "b"]).set_index("subject")
    assert list(out["sa_cluster"]) == [0, 0] and list(out["la_4ch_cluster"]) == [1, 0]
    expected = [0, 0] if not any(flagged) else [1, 0]
    assert list(out["cluster_flagged_n"]) == expected
    assert list(out["cluster_flags"]) == (["", ""] if not any(flagged)
                                          else ["la_4ch looks like sa", ""])
