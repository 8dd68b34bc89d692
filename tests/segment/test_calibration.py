"""Post-hoc calibration: the fits on synthetic logits, and `calibrate` -> `predict` end to end."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from medflow.cli import cli
from medflow.segment.calibrate import CALIBRATION, roi_mask
from medflow.segment.calibration import fit_global_temperature, fit_local, top_label_ece

torch.set_num_threads(1)
CAL = ["--copies", "0", "--max-voxels", "2000", "--epochs", "3", "--seed", "1"]


def overconfident(n: int, factor: float, seed: int, c: int = 4):
    """Logits of a model ``factor`` times over-confident, and labels drawn from the truth."""
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(n, c, generator=g)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return factor * z, y


@pytest.mark.parametrize("factor", [0.5, 2.0, 4.0])
def test_global_temperature_recovers_the_generating_temperature(factor):
    z, y = overconfident(60_000, factor, seed=int(factor * 10))
    assert fit_global_temperature(z, y) == pytest.approx(factor, rel=0.05)


def shifted(n: int, fraction: float, seed: int):
    """Voxels of which ``fraction`` are 'shifted': their prediction moves under perturbation
    (high spread feature) and their labels ignore the logits; the others are calibrated and
    stable. Features as :func:`calibration.local_features` lays them out (log p, spread)."""
    z, y = overconfident(n, 3.0, seed)
    g = torch.Generator().manual_seed(seed + 1)
    moved = torch.rand(n, generator=g) < fraction
    y = torch.where(moved, torch.randint(0, 4, (n,), generator=g), y)
    z = torch.where(moved[:, None], z, z / 3.0)       # stable voxels: calibrated logits
    spread = torch.where(moved[:, None], 0.3, 0.01) * torch.ones(n, 4)
    return torch.cat([torch.log_softmax(z, 1), spread], 1), z, y


def test_local_calibrator_lowers_ece_under_a_shift_where_global_temperature_cannot():
    f, z, y = shifted(40_000, 0.2, seed=0)             # validation: few shifted voxels
    t = fit_global_temperature(z, y)
    net = fit_local(f, z, y, t, epochs=5, seed=0)
    f2, z2, y2 = shifted(40_000, 0.7, seed=5)          # test: a strong shift
    with torch.no_grad():
        raw = top_label_ece(torch.softmax(z2, 1), y2).ece()
        glob = top_label_ece(torch.softmax(z2 / t, 1), y2).ece()
        local = top_label_ece(torch.softmax(z2 / net(f2), 1), y2).ece()
    assert local < 0.5 * raw and local < 0.5 * glob, (raw, glob, local)


def test_local_fit_is_deterministic_for_a_seed():
    f, z, y = shifted(5_000, 0.3, seed=2)
    a, b = (fit_local(f, z, y, 1.0, epochs=2, seed=4) for _ in range(2))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_roi_is_the_widened_foreground_box():
    lab = np.zeros((40, 40, 5), np.uint8)
    lab[18:22, 18:22, 2] = 1
    roi = roi_mask(lab, margin=3)
    assert roi.sum() == 10 * 10 * 3 and roi[15, 15, 1] and not roi[14, 15, 2]
    assert not roi_mask(np.zeros((4, 4, 4))).any()


@pytest.fixture(scope="module")
def calibrated(tiny_model, cohort, tmp_path_factory):
    """A copy of the tiny model with a temperature calibrator fitted on its cohort."""
    from click.testing import CliRunner

    model = tmp_path_factory.mktemp("cal") / "m"
    shutil.copytree(tiny_model, model)
    res = CliRunner().invoke(cli, ["segment-cascaded", "calibrate", "--model", str(model),
                                   "--samplesheet", str(cohort), "--method", "temperature",
                                   *CAL])
    assert res.exit_code == 0, res.output
    return model


def test_calibrate_stores_calibrator_with_the_models_checksum(calibrated):
    from medflow.io.sidecar import sha256

    entry = json.loads((calibrated / "model.json").read_text())["calibration"]
    assert entry["method"] == "temperature"
    assert entry["model_sha256"] == sha256(calibrated / "model.safetensors")
    assert (calibrated / CALIBRATION).exists() and (calibrated / "calibrate.json").exists()
    v = entry["validation"]
    assert v["temperature"] > 0 and v["ece_temperature"] <= v["ece_uncalibrated"] + 1e-9


def _nll_in_roi(prob_path, seg_path) -> float:
    p = np.asarray(nib.load(prob_path).dataobj, dtype=np.float64)       # X, Y, Z, T, C
    lab = np.asarray(nib.load(seg_path).dataobj).astype(int)
    roi = np.stack([roi_mask(lab[..., t]) for t in range(lab.shape[3])], -1) & (lab.sum((0, 1, 2)) > 0)
    picked = np.take_along_axis(p, lab[..., None], -1)[..., 0]
    return float(-np.log(np.clip(picked[roi], 1e-7, 1)).mean())


def test_calibrated_predict_writes_better_calibrated_probabilities(runner, calibrated, cohort,
                                                                   tmp_path):
    sheet = pd.read_csv(cohort)
    img = cohort.parent / sheet["sa"][0]
    seg = cohort.parent / sheet["seg_sa"][0]
    out = {}
    for flag in ("--calibration", "--no-calibration"):
        d = tmp_path / flag.strip("-")
        res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(calibrated),
                                  "--input", str(img), "--output", str(d / "seg.nii.gz"),
                                  "--probabilities", str(d / "prob.nii.gz"), flag])
        assert res.exit_code == 0, res.output
        out[flag] = d
    side = json.loads((out["--calibration"] / "seg.json").read_text())
    assert side["parameters"]["calibration"] == "temperature"
    assert side["calibration"]["temperature"] > 0 and "calibrator" in side["inputs"]
    plain = json.loads((out["--no-calibration"] / "seg.json").read_text())
    assert plain["parameters"]["calibration"] == "none" and plain["calibration"] is None
    a, b = (np.asarray(nib.load(out[f] / "prob.nii.gz").dataobj)
            for f in ("--calibration", "--no-calibration"))
    assert not np.allclose(a, b, atol=1e-4)
    assert (_nll_in_roi(out["--calibration"] / "prob.nii.gz", seg)
            < _nll_in_roi(out["--no-calibration"] / "prob.nii.gz", seg))


def test_local_calibrator_end_to_end(runner, tiny_model, cohort, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    res = runner.invoke(cli, ["segment-cascaded", "calibrate", "--model", str(model),
                              "--samplesheet", str(cohort), "--method", "local", *CAL[:-2],
                              "--copies", "1"])
    assert res.exit_code == 0, res.output
    assert "local" in res.output
    img = cohort.parent / pd.read_csv(cohort)["sa"][0]
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(model), "--input",
                              str(img), "--output", str(tmp_path / "s.nii.gz")])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "s.json").read_text())
    assert side["calibration"]["method"] == "local"


def test_calibrator_of_another_model_is_refused(runner, calibrated, cohort, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(calibrated, other)
    weights = load_file(str(other / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01            # another model, same architecture
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    img = cohort.parent / pd.read_csv(cohort)["sa"][0]
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(other), "--input",
                              str(img), "--output", str(tmp_path / "s.nii.gz")])
    assert res.exit_code == 65 and "another model" in res.output
    assert not (tmp_path / "s.nii.gz").exists()
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(other), "--input",
                              str(img), "--output", str(tmp_path / "s.nii.gz"),
                              "--no-calibration"])
    assert res.exit_code == 0, res.output


def test_calibrator_file_not_in_the_card_is_refused(runner, calibrated, tiny_model, cohort,
                                                     tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    shutil.copy(calibrated / CALIBRATION, plain / CALIBRATION)
    img = cohort.parent / pd.read_csv(cohort)["sa"][0]
    res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(plain), "--input",
                              str(img), "--output", str(tmp_path / "s.nii.gz")])
    assert res.exit_code == 65 and "not recorded" in res.output


def test_validation_without_labels_is_refused(runner, tiny_model, cohort, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    sheet = pd.read_csv(cohort)
    no_column = tmp_path / "nolabels.csv"
    sheet.assign(sa=[str(cohort.parent / p) for p in sheet["sa"]])[["subject", "sa"]].to_csv(
        no_column, index=False)
    empty = tmp_path / "empty_labels"
    empty.mkdir()
    rows = []
    for _, r in sheet.iterrows():
        lab = nib.load(cohort.parent / r["seg_sa"])
        path = empty / f"{r['subject']}_seg.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(lab.shape, np.uint8), lab.affine), path)
        rows.append({"subject": r["subject"], "sa": str(cohort.parent / r["sa"]),
                     "seg_sa": str(path)})
    background = tmp_path / "background.csv"
    pd.DataFrame(rows).to_csv(background, index=False)
    blank = tmp_path / "blank.csv"
    pd.DataFrame(rows).assign(seg_sa="").to_csv(blank, index=False)
    for sheet_path in (no_column, background, blank):
        res = runner.invoke(cli, ["segment-cascaded", "calibrate", "--model", str(model),
                                  "--samplesheet", str(sheet_path), *CAL])
        assert res.exit_code == 65, res.output
        assert str(sheet_path.name) in res.output
    assert not (model / CALIBRATION).exists()
    assert "calibration" not in json.loads((model / "model.json").read_text())


def test_calibration_entry_that_is_not_a_mapping_is_65(tiny_model, tmp_path):
    from medflow.errors import InvalidDataError
    from medflow.segment.calibrate import load_calibrator

    with pytest.raises(InvalidDataError, match="'calibration' entry is not a mapping") as err:
        load_calibrator(tiny_model, {"calibration": [1]})
    assert str(tiny_model / "model.json") in err.value.message


def test_validation_labels_that_are_not_labels_name_the_file(runner, tiny_model, cohort,
                                                             tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    sheet = pd.read_csv(cohort)
    wrong = tmp_path / "image_as_labels.csv"
    sheet.assign(sa=[str(cohort.parent / p) for p in sheet["sa"]],
                 seg_sa=[str(cohort.parent / p) for p in sheet["sa"]]).to_csv(wrong, index=False)
    res = runner.invoke(cli, ["segment-cascaded", "calibrate", "--model", str(model),
                              "--samplesheet", str(wrong), *CAL])
    assert res.exit_code == 65, res.output
    assert f"{cohort.parent / sheet['sa'][0]}: unknown label values" in res.output
    assert not (model / CALIBRATION).exists()


def test_spread_frames_keeps_evenly_spaced_frames_per_subject():
    from types import SimpleNamespace

    from medflow.segment.calibrate import spread_frames

    samples = [SimpleNamespace(subject=s, frame=t) for s in "ab" for t in range(20)]
    picked = spread_frames(samples, 5)
    assert [(p.subject, p.frame) for p in picked][:5] == [("a", t) for t in (0, 5, 10, 14, 19)]
    assert len(picked) == 10 and len(spread_frames(samples[:2], 5)) == 2
