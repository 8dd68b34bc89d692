"""Heterogeneous demo cohorts: exact subgroup frequencies, stable assignment, what each
subgroup changes (and leaves alone), the samplesheet column and the schema."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from medflow.io import read_image
from medflow.io.samplesheet import load_samplesheet
from medflow.phantom.brats import write_brats_subject
from medflow.phantom.cardiac import write_cardiac_subject
from medflow.phantom.cli import demo_cohort
from medflow.phantom.subgroups import (BRATS_SUBGROUPS, CARDIAC_SUBGROUPS, apply_brats_subgroup,
                                       cardiac_subgroup_params, subgroup_of)
from medflow.phantom.heart import HeartModel
from medflow.phantom.brats import sample_brats_parameters

SHAPE = (48, 48, 32)


@pytest.mark.parametrize("kind,table", [("brats", BRATS_SUBGROUPS),
                                        ("cardiac", CARDIAC_SUBGROUPS)])
def test_every_block_of_twenty_holds_each_subgroup_exactly(kind, table):
    groups = [subgroup_of(kind, 3, i) for i in range(60)]
    for block in range(3):
        counts = Counter(groups[20 * block:20 * (block + 1)])
        assert counts == {name: n for name, (n, _) in table.items()}
    assert groups[:20] == [subgroup_of(kind, 3, i) for i in range(20)]  # stable
    assert groups != [subgroup_of(kind, 4, i) for i in range(60)]       # seeded
    with pytest.raises(ValueError):
        subgroup_of("microct", 0, 0)


def test_brats_subgroups_change_what_they_say(tmp_path):
    p = sample_brats_parameters(np.random.default_rng(0))
    assert apply_brats_subgroup(p, "common", 1) == p
    small = apply_brats_subgroup(p, "small", 1)
    assert small["necrosis_radius_mm"] < 4 and small["oedema_mm"] <= 6
    diffuse = apply_brats_subgroup(p, "diffuse", 1)
    assert diffuse["oedema_mm"] >= 22
    scanner = apply_brats_subgroup(p, "scanner_b", 1)
    assert scanner["necrosis_radius_mm"] == p["necrosis_radius_mm"]
    assert scanner["noise_sd"] == pytest.approx(1.5 * p["noise_sd"])
    vols = {}
    for group in ("common", "small", "scanner_b"):
        folder = tmp_path / group
        folder.mkdir()
        write_brats_subject(folder, "s", 7, SHAPE, subgroup=None if group == "common" else group)
        vols[group] = folder
    truth = {g: json.loads((f / "truth.json").read_text()) for g, f in vols.items()}
    assert "subgroup" not in truth["common"] and truth["small"]["subgroup"] == "small"
    assert truth["small"]["volumes"]["wt_ml"] < 0.3 * truth["common"]["volumes"]["wt_ml"]
    # a scanner changes the images, never the anatomy
    assert (vols["scanner_b"] / "seg.nii.gz").read_bytes() == (
        vols["common"] / "seg.nii.gz").read_bytes()
    assert (vols["scanner_b"] / "t1.nii.gz").read_bytes() != (
        vols["common"] / "t1.nii.gz").read_bytes()


def test_cardiac_subgroups_change_heart_or_contrast(tmp_path):
    hp = HeartModel.from_seed(5).params
    assert cardiac_subgroup_params(hp, "common", 5) == (hp, None)
    assert cardiac_subgroup_params(hp, "gre", 5) == (hp, "gre")
    thick, _ = cardiac_subgroup_params(hp, "hypertrophic", 5)
    assert thick.w >= 14 and thick.a < hp.a
    big, _ = cardiac_subgroup_params(hp, "dilated", 5)
    assert big.a > hp.a and big.lvef <= 0.3
    for group in ("common", "dilated"):
        (tmp_path / group).mkdir()
        write_cardiac_subject(tmp_path / group, "s", 5, frames=2,
                              subgroup=None if group == "common" else group)
    t = {g: json.loads((tmp_path / g / "truth.json").read_text()) for g in ("common", "dilated")}
    assert t["dilated"]["lvedv_ml"] > 1.5 * t["common"]["lvedv_ml"]
    assert t["dilated"]["lvef_pct"] < 31 and t["dilated"]["subgroup"] == "dilated"


def test_demo_cohort_heterogeneous_writes_the_subgroup_column(runner, tmp_path):
    out = tmp_path / "het"
    res = runner.invoke(demo_cohort, ["--kind", "brats", "--heterogeneous", "--subjects", "3",
                                      "--shape", "32,32,16", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    raw = pd.read_csv(out / "samplesheet.csv")
    assert list(raw.columns)[-1] == "subgroup"
    assert list(raw["subgroup"]) == [subgroup_of("brats", 2, i) for i in range(3)]
    for row in raw.itertuples():
        assert json.loads((out / row.truth).read_text())["subgroup"] == row.subgroup
    sheet = load_samplesheet(out / "samplesheet.csv")  # the schema accepts it, not a file
    assert list(sheet["subgroup"]) == list(raw["subgroup"])
    assert read_image(sheet.loc[0, "seg"], kind="label").shape3 == (32, 32, 16)
    bad = raw.assign(subgroup="rare one")
    bad.to_csv(out / "bad.csv", index=False)
    with pytest.raises(Exception, match="column 'subgroup'"):
        load_samplesheet(out / "bad.csv")
    res = runner.invoke(demo_cohort, ["--kind", "microct", "--heterogeneous", "--out",
                                      str(tmp_path / "m")])
    assert res.exit_code == 2 and "only for --kind brats or cardiac" in res.output
