"""`medflow score-uncertainty` through CliRunner: case and cohort modes, outputs, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from medflow.cli import cli
from medflow.io import Volume, read_image, write_nifti
from medflow.uncertainty import brats_regions, score_case

SHAPE = "48,48,32"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("brats")
    result = CliRunner().invoke(cli, ["demo-cohort", "--kind", "brats", "--with-predictions",
                                      "--subjects", "2", "--shape", SHAPE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def case_args(folder: Path, **replace) -> list[str]:
    files = {"--truth": "seg", "--prediction": "pred", "--mask": "mask",
             "--uncertainty-wt": "unc_wt", "--uncertainty-tc": "unc_tc",
             "--uncertainty-et": "unc_et"}
    args = []
    for opt, role in files.items():
        args += [opt, str(replace.get(role, folder / f"{role}.nii.gz"))]
    return args


def run(runner, args):
    return runner.invoke(cli, ["score-uncertainty", *args])


def test_single_case_table_matches_the_core(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    out = tmp_path / "scores.parquet"
    plot = tmp_path / "curves.png"
    result = run(runner, case_args(sub) + ["--probabilities", str(sub / "prob.nii.gz"),
                                           "--out", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(out).iloc[0]
    assert row["subject"] == "pred"
    for col in ("wt_auc_dice", "wt_auc_ftp", "wt_auc_ftn", "wt_score", "tc_score", "et_score",
                "score", "wt_ece", "wt_mce", "wt_brier", "wt_nll", "et_nll"):
        assert col in row.index
    seg = read_image(sub / "seg.nii.gz", "label").data
    pred = read_image(sub / "pred.nii.gz", "label").data
    mask = read_image(sub / "mask.nii.gz").data > 0
    unc = {r.name: read_image(sub / f"unc_{r.key}.nii.gz").data for r in brats_regions()}
    expected, _ = score_case(seg, pred, unc, mask, brats_regions())
    for k, v in expected.items():
        assert row[k] == pytest.approx(v, abs=1e-12)
    sidecar = json.loads((tmp_path / "scores.json").read_text())
    assert sidecar["tool"] == "score-uncertainty" and "truth" in sidecar["inputs"]
    assert plot.stat().st_size > 0 and (tmp_path / "curves_reliability.png").exists()


def test_same_inputs_same_bytes(runner, cohort, tmp_path):
    sub = cohort / "sub-001"
    for name in ("a.parquet", "b.parquet"):
        assert run(runner, case_args(sub) + ["--out", str(tmp_path / name)]).exit_code == 0
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_4d_and_region_equals_file_forms_agree(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    vols = [read_image(sub / f"unc_{k}.nii.gz") for k in ("wt", "tc", "et")]
    stacked = tmp_path / "unc.nii.gz"
    write_nifti(vols[0].with_data(np.stack([v.data for v in vols], -1)), stacked)
    base = case_args(sub)[:6]
    forms = {"4d": ["--uncertainty", str(stacked)],
             "eq": [a for k in ("WT", "TC", "ET") for a in
                    ("--uncertainty", f"{k}={sub / f'unc_{k.lower()}.nii.gz'}")],
             "opt": case_args(sub)[6:]}
    tables = {}
    for name, extra in forms.items():
        out = tmp_path / f"{name}.parquet"
        assert run(runner, base + extra + ["--out", str(out)]).exit_code == 0
        tables[name] = pd.read_parquet(out)
    pd.testing.assert_frame_equal(tables["4d"], tables["opt"])
    pd.testing.assert_frame_equal(tables["eq"], tables["opt"])


def test_cohort_mode_on_the_demo_samplesheet(runner, cohort, tmp_path):
    outdir = tmp_path / "res"
    result = run(runner, ["--samplesheet", str(cohort / "samplesheet.csv"), "--outdir",
                          str(outdir), "--fit-temperature"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(outdir / "score-uncertainty.parquet")
    assert rows["subject"].tolist() == ["sub-000", "sub-001"]
    assert {"wt_temperature", "wt_ece_ts", "et_nll_ts"} <= set(rows.columns)
    assert (rows["wt_nll_ts"] <= rows["wt_nll"] + 1e-9).all()
    summary = pd.read_parquet(outdir / "summary.parquet").set_index("metric")
    assert summary.loc["score", "mean"] == pytest.approx(rows["score"].mean())
    assert summary.loc["wt_score", "median"] == pytest.approx(rows["wt_score"].median())
    assert summary.loc["score", "std"] == pytest.approx(rows["score"].std())
    curves = pd.read_parquet(outdir / "curves.parquet")
    assert len(curves) == 2 * 3 * 41
    for name in ("curves.png", "curves_reliability.png", "score-uncertainty.json"):
        assert (outdir / name).exists()


def test_other_label_conventions(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    files = {}
    for role in ("seg", "pred"):  # BraTS 2023: enhancing tumour is 3
        vol = read_image(sub / f"{role}.nii.gz", "label")
        files[role] = tmp_path / f"{role}.nii.gz"
        write_nifti(vol.with_data(np.where(vol.data == 4, 3, vol.data)), files[role])
    out = tmp_path / "et3.parquet"
    ref = tmp_path / "et4.parquet"
    assert run(runner, case_args(sub) + ["--out", str(ref)]).exit_code == 0
    result = run(runner, case_args(sub, **files) + ["--et-label", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref))
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"Core": [1, 3], "Whole": [1, 2, 3]}))
    result = run(runner, case_args(sub, **files)[:6] + [
        "--regions", str(regions), "--uncertainty", f"Core={sub / 'unc_tc.nii.gz'}",
        "--uncertainty", f"Whole={sub / 'unc_wt.nii.gz'}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert table["core_score"][0] == pytest.approx(pd.read_parquet(ref)["tc_score"][0])


def test_rescale_maps_unit_interval_maps(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    scaled = {}
    for k in ("wt", "tc", "et"):
        vol = read_image(sub / f"unc_{k}.nii.gz")
        scaled[f"unc_{k}"] = tmp_path / f"u_{k}.nii.gz"
        write_nifti(vol.with_data(vol.data.astype(np.float32) / 100), scaled[f"unc_{k}"])
    out = tmp_path / "r.parquet"
    args = case_args(sub, **scaled)
    assert run(runner, args + ["--out", str(out)]).exit_code == 0  # [0, 1] is inside [0, 100]
    assert run(runner, args + ["--rescale", "--out", str(out)]).exit_code == 0
    ref = tmp_path / "ref.parquet"
    assert run(runner, case_args(sub) + ["--out", str(ref)]).exit_code == 0
    assert pd.read_parquet(out)["score"][0] == pytest.approx(pd.read_parquet(ref)["score"][0],
                                                             abs=0.01)


def write_like(src: Path, dst: Path, data=None, affine=None, kind="image") -> Path:
    vol = read_image(src, kind)
    write_nifti(Volume(vol.data if data is None else data,
                       vol.affine if affine is None else affine, kind), dst)
    return dst


def test_bad_inputs_exit_with_contract_codes_and_write_nothing(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    seg = read_image(sub / "seg.nii.gz", "label")
    shifted = seg.affine.copy()
    shifted[0, 3] += 4.0
    bad = {
        "geometry": ({"pred": write_like(sub / "pred.nii.gz", tmp_path / "p.nii.gz",
                                         affine=shifted, kind="label")}, [], 65,
                     ["p.nii.gz", "seg.nii.gz"]),
        "range": ({"unc_tc": write_like(sub / "unc_tc.nii.gz", tmp_path / "u.nii.gz",
                                        data=np.full(seg.shape3, 150.0, np.float32))}, [], 65,
                  ["u.nii.gz", "[0, 100]"]),
        "labels": ({"seg": write_like(sub / "seg.nii.gz", tmp_path / "s.nii.gz",
                                      data=np.where(seg.data == 2, 3, seg.data), kind="label")},
                   [], 65, ["s.nii.gz", "[3]"]),
        "empty mask": ({"mask": write_like(sub / "mask.nii.gz", tmp_path / "m.nii.gz",
                                           data=np.zeros(seg.shape3, np.uint8))}, [], 65,
                       ["m.nii.gz", "empty"]),
        "missing": ({"unc_et": tmp_path / "nope.nii.gz"}, [], 66, ["nope.nii.gz"]),
        "prob": ({}, ["--probabilities", str(sub / "unc_wt.nii.gz")], 65, ["4D"]),
    }
    for name, (replace, extra, code, words) in bad.items():
        out = tmp_path / f"{name}.parquet"
        result = run(runner, case_args(sub, **replace) + extra + ["--out", str(out)])
        assert result.exit_code == code, (name, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and all(w in lines[0] for w in words), (name, result.output)
        assert not out.exists() and not list(tmp_path.glob(f".{name}*"))
    # the out-of-range map is accepted once rescaled from its own scale
    result = run(runner, case_args(sub, unc_tc=tmp_path / "u.nii.gz")
                 + ["--rescale", "0,200", "--out", str(tmp_path / "ok.parquet")])
    assert result.exit_code == 0, result.output


def test_usage_errors(runner, cohort, tmp_path):
    sub = cohort / "sub-000"
    assert run(runner, case_args(sub)[:8] + ["--out", str(tmp_path / "x.parquet")]).exit_code == 2
    assert run(runner, case_args(sub) + ["--regions", "cardiac", "--et-label", "3",
                                         "--out", str(tmp_path / "x.parquet")]).exit_code == 2
    assert run(runner, ["--samplesheet", str(cohort / "samplesheet.csv")]).exit_code == 2
    help_text = run(runner, ["--help"]).output
    assert "Example" in help_text and "--verbose" in help_text


def test_cine_frames_are_pooled_and_cine_misuse_is_refused(runner, cohort, tmp_path):
    # A 4D (X, Y, Z, T) case, as the pipeline scores cardiac cines: two identical frames
    # score exactly as the 3D case (every measure is a ratio of pooled counts).
    sub = cohort / "sub-000"
    cine = {}
    for role, kind in (("seg", "label"), ("pred", "label"), ("mask", "image"),
                       ("unc_wt", "image"), ("unc_tc", "image"), ("unc_et", "image")):
        data = read_image(sub / f"{role}.nii.gz", kind).data
        frames = data if role == "mask" else np.stack([data, data], -1)
        cine[role] = write_like(sub / f"{role}.nii.gz", tmp_path / f"{role}.nii.gz", frames,
                                kind=kind)
    out3d, out4d = tmp_path / "3d.parquet", tmp_path / "4d.parquet"
    assert run(runner, case_args(sub) + ["--out", str(out3d)]).exit_code == 0
    result = run(runner, case_args(sub, **cine) + ["--out", str(out4d)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out4d), pd.read_parquet(out3d))

    one_frame = write_like(sub / "pred.nii.gz", tmp_path / "pred3d.nii.gz", kind="label")
    stacked = write_like(sub / "unc_wt.nii.gz", tmp_path / "unc4.nii.gz", np.stack(
        [read_image(sub / f"unc_{k}.nii.gz").data for k in ("wt", "tc", "et")], -1))
    bad = {
        "shape": (case_args(sub, **{**cine, "pred": one_frame}), ["pred3d.nii.gz", "shape"]),
        "one file": (case_args(sub, **cine)[:6] + ["--uncertainty", str(stacked)],
                     ["unc4.nii.gz", "one uncertainty map per region"]),
        "probabilities": (case_args(sub, **cine) + ["--probabilities",
                                                    str(sub / "prob.nii.gz")],
                          ["prob.nii.gz", "shape [48, 48, 32, 2, 3]"]),
    }
    for name, (args, words) in bad.items():
        out = tmp_path / f"{name}.parquet"
        result = run(runner, args + ["--out", str(out)])
        assert result.exit_code == 65, (name, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and all(w in lines[0] for w in words), (name, result.output)
        assert not out.exists()


def test_outputs_never_overwrite_inputs(runner, cohort, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(cohort / "sub-000", sub)
    before = {p.name: p.read_bytes() for p in sub.iterdir()}
    for extra in (["--out", str(sub / "seg.nii.gz")],
                  ["--out", str(tmp_path / "s.parquet"), "--plot", str(sub / "unc_wt.nii.gz")]):
        result = run(runner, case_args(sub) + extra)
        assert result.exit_code == 2 and "would overwrite the input" in result.output, extra
        assert {p.name: p.read_bytes() for p in sub.iterdir()} == before
    assert not (tmp_path / "s.parquet").exists()
    # cohort mode: an input stored under the name of the cohort table
    folder = tmp_path / "cohort"
    shutil.copytree(cohort, folder)
    table = folder / "score-uncertainty.parquet"
    shutil.copy(folder / "sub-000" / "seg.nii.gz", table)
    sheet = folder / "samplesheet.csv"
    sheet.write_text(sheet.read_text().replace("sub-000/seg.nii.gz", "score-uncertainty.parquet"))
    result = run(runner, ["--samplesheet", str(sheet), "--outdir", str(folder)])
    assert result.exit_code == 2 and "would overwrite the input" in result.output


def test_cine_probabilities_per_region_or_per_class(runner, cohort, tmp_path):
    """A cine's probabilities, (X, Y, Z, T, C) as segment-cascaded predict writes them,
    are scored: two identical frames give the 3D case's calibration columns, whether the
    channels are regions or classes (WT/TC/ET <- the sums of classes 1+2+4, 1+4, 4)."""
    sub = cohort / "sub-000"
    cine = {}
    for role, kind in (("seg", "label"), ("pred", "label"), ("unc_wt", "image"),
                       ("unc_tc", "image"), ("unc_et", "image")):
        data = read_image(sub / f"{role}.nii.gz", kind).data
        cine[role] = write_like(sub / f"{role}.nii.gz", tmp_path / f"{role}.nii.gz",
                                np.stack([data, data], -1), kind=kind)
    wt, tc, et = np.moveaxis(np.asarray(read_image(sub / "prob.nii.gz").data, np.float64), -1, 0)
    classes = np.stack([1 - wt, tc - et, wt - tc, et], -1).clip(0, 1)  # labels 0, 1, 2, 4
    by_class = write_like(sub / "prob.nii.gz", tmp_path / "classes.nii.gz",
                          np.stack([classes, classes], 3).astype(np.float32))
    by_region = write_like(sub / "prob.nii.gz", tmp_path / "regions.nii.gz", np.stack(
        [read_image(sub / "prob.nii.gz").data] * 2, 3))
    out3d = tmp_path / "3d.parquet"
    assert run(runner, case_args(sub) + ["--probabilities", str(sub / "prob.nii.gz"),
                                         "--out", str(out3d)]).exit_code == 0
    expected = pd.read_parquet(out3d)
    for name, prob, channels in (("regions", by_region, "regions"),
                                 ("classes", by_class, "classes")):
        out = tmp_path / f"{name}.parquet"
        result = run(runner, case_args(sub, **cine) + ["--probabilities", str(prob),
                                                       "--prob-channels", channels,
                                                       "--out", str(out)])
        assert result.exit_code == 0, (name, result.output)
        got = pd.read_parquet(out)
        for col in ("wt_ece", "tc_ece", "et_ece", "wt_brier", "et_nll"):
            assert got[col].iloc[0] == pytest.approx(expected[col].iloc[0], abs=1e-4), (name, col)
    # the class layout read as regions is refused: 4 channels where 3 regions are scored
    result = run(runner, case_args(sub, **cine) + ["--probabilities", str(by_class),
                                                   "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 65 and "classes.nii.gz" in result.output
    assert "a channel per region: WT, TC, ET" in result.output
    # ... and regions read as classes: 3 channels where background + 3 labels are expected
    result = run(runner, case_args(sub, **cine) + ["--probabilities", str(by_region),
                                                   "--prob-channels", "classes",
                                                   "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 65 and "a channel per class: label 0, label 1" in result.output
    # class channels must be one distribution per voxel: these sum to 1.5
    doubled = write_like(sub / "prob.nii.gz", tmp_path / "doubled.nii.gz",
                         np.stack([classes, classes], 3).astype(np.float32) * 0.5 + 0.25)
    result = run(runner, case_args(sub, **cine) + ["--probabilities", str(doubled),
                                                   "--prob-channels", "classes",
                                                   "--out", str(tmp_path / "y.parquet")])
    assert result.exit_code == 65 and "do not sum to 1" in result.output
    assert "doubled.nii.gz" in result.output and not (tmp_path / "y.parquet").exists()
