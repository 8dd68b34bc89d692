"""`medflow pipeline --save-probabilities`: the segment stage's class probabilities, their
calibration scored by the uncertainty stage, the reliability diagram in the report; the
layout predict writes and the one score-uncertainty reads agree; a missing file stops the
stage with one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medflow.cli import cli
from medflow.io import read_image

SUBJECTS = ["s0", "s1", "s2"]


def pipeline(runner, sheet, out, *args, stages="segment,uncertainty"):
    return runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                               "--stages", stages, *args])


def test_predict_probabilities_are_what_score_uncertainty_reads(runner, cohort, tiny_model,
                                                                tmp_path):
    """predict writes a cine's probabilities as (X, Y, Z, T, C) with channel i the class of
    the i-th label of the model (0, 1, 2, 3); score-uncertainty's class layout for
    --regions cardiac must read LV/Myo/RV from channels 1/2/3: the label map predict wrote
    beside them is, voxel by voxel, the most probable region read that way."""
    from medflow.uncertainty.inputs import load_probabilities
    from medflow.uncertainty.regions import CARDIAC, known_labels

    image = cohort.parent / "s0" / "sa.nii.gz"
    seg, prob = tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz"
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(tiny_model),
                              "--input", str(image), "--output", str(seg),
                              "--probabilities", str(prob), "--no-ventricle-anatomy",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    labels = read_image(seg, "label")
    assert json.loads((tmp_path / "seg.json").read_text())["labels"] == \
        sorted(known_labels(CARDIAC))
    regions = load_probabilities(prob, CARDIAC, labels, seg, labels.data.shape, "classes")
    assert regions.shape == (*labels.data.shape, 3)  # every frame, LV/Myo/RV last
    background = 1 - regions.sum(-1, keepdims=True)
    argmax = np.argmax(np.concatenate([background, regions], -1), -1)
    assert len(np.unique(labels.data)) > 1  # the tiny model predicts some foreground
    assert (argmax == np.asarray(labels.data)).mean() > 0.999  # ties aside


def test_save_probabilities_scores_calibration_into_table_and_report(runner, cohort,
                                                                     tiny_model, tmp_path):
    from medflow.uncertainty.calibration import calibration_scores

    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--save-probabilities")
    assert res.exit_code == 0, res.output
    for s in SUBJECTS:
        seg = read_image(out / "segment" / s / f"{s}_sa_seg.nii.gz", "label")
        prob = read_image(out / "segment" / s / f"{s}_sa_prob.nii.gz", channels=True)
        assert prob.data.shape == (*seg.data.shape, 4) and np.allclose(prob.affine, seg.affine)
    table = pd.read_parquet(out / "uncertainty" / "score-uncertainty.parquet")
    for key in ("lv", "myo", "rv"):
        for metric in ("ece", "mce", "brier", "nll"):
            assert table[f"{key}_{metric}"].notna().all(), (key, metric)
    # the stage's number is the one computed here from the files: the LV channel (class 1)
    # against the true LV, over the image's field of view in every frame
    truth = np.asarray(read_image(cohort.parent / "s1" / "seg_sa.nii.gz", "label").data)
    fov = np.asarray(read_image(cohort.parent / "s1" / "sa.nii.gz").data)[..., :1] > 0
    fov = np.broadcast_to(fov, truth.shape)
    p = np.asarray(read_image(out / "segment" / "s1" / "s1_sa_prob.nii.gz",
                              channels=True).data)[..., 1]
    expected = calibration_scores(p[fov], truth[fov] == 1)
    row = table.set_index("subject").loc["s1"]
    assert abs(row["lv_ece"] - expected["ece"]) < 1e-6
    assert abs(row["lv_brier"] - expected["brier"]) < 1e-6
    assert "prob" in pd.read_csv(out / "uncertainty" / "samplesheet.csv")
    assert (out / "uncertainty" / "curves_reliability.png").is_file()
    assert "lv_ece" in pd.read_parquet(out / "cohort.parquet")
    page = (out / "report" / "index.html").read_text()
    assert "<h3>calibration</h3>" in page and "ECE mean" in page
    assert "The probabilities were not calibrated." in page  # the tiny model has none
    images = [part.split('"')[0] for part in page.split('<img src="')[1:]]
    assert "../uncertainty/curves_reliability.png" in images

    # a probability file gone (deleted, or segment ran without the flag): the uncertainty
    # stage fails with one line naming it (exit 66) and leaves no table behind
    missing = out / "segment" / "s1" / "s1_sa_prob.nii.gz"
    missing.unlink()
    res = pipeline(runner, cohort, out, "--model", str(tiny_model), "--save-probabilities",
                   "--resume", stages="uncertainty")
    assert res.exit_code == 66, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("medflow: error: unc")]
    assert len(errors) == 1 and str(missing) in errors[0] and "exit 66" in errors[0], errors
    assert not (out / "uncertainty" / "score-uncertainty.parquet").exists()
