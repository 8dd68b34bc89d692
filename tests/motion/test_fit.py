"""`estimate-motion-mesh fit` end to end on a tiny phantom (fast options): outputs,
sidecar, reproducibility, volumes against the phantom's truth, zero motion -> zero strain.
Accuracy at full settings is measured by benchmarks/motion (README there)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.motion.template import Topology

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_cli(monkeypatch, fast):
    """The CLI with the fast options (the fit's defaults take a minute per subject)."""
    from medflow.motion import fit

    monkeypatch.setattr(fit, "FitOptions", functools.partial(fit.FitOptions, **fast))


def _fit(runner, paths, out, *extra):
    args = ["estimate-motion-mesh", "fit", "--sa", str(paths["sa"]), "--la-2ch",
            str(paths["la_2ch"]), "--la-4ch", str(paths["la_4ch"]), "--out", str(out),
            "--threads", "1", *extra]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, heart_writer, fast):
    """One fast fit of the 3-frame phantom, twice (for the byte comparison)."""
    from click.testing import CliRunner
    from medflow.motion import fit

    folder = tmp_path_factory.mktemp("fit")
    heart, paths = heart_writer(folder)
    mp = pytest.MonkeyPatch()
    mp.setattr(fit, "FitOptions", functools.partial(fit.FitOptions, **fast))
    try:
        outs = []
        for k in range(2):
            outs.append(folder / f"out{k}")
            _fit(CliRunner(), paths, outs[-1], "--prefix", "sub", "--seed", "3")
    finally:
        mp.undo()
    return heart, paths, outs


def test_outputs_meshes_tables_and_sidecar(fitted):
    heart, paths, (out, _) = fitted
    topo = Topology()
    meshes = sorted((out / "sub_meshes").glob("frame_*.ply"))
    assert [m.name for m in meshes] == ["frame_000.ply", "frame_001.ply", "frame_002.ply"]
    import trimesh

    first = trimesh.load(meshes[0], process=False)
    assert first.vertices.shape == (topo.n_vertices, 3)
    assert np.array_equal(first.faces, topo.faces)
    disp = np.load(out / "sub_displacements.npy")
    assert disp.shape == (3, topo.n_vertices, 3) and not disp[0].any()
    assert disp[1:].std() > 0.5                                  # the heart moved
    last = trimesh.load(meshes[2], process=False)
    assert np.allclose(last.vertices, first.vertices + disp[2], atol=1e-3)
    row = pd.read_parquet(out / "sub_phenotypes.parquet").iloc[0]
    for col in ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "lvm_g", "rvedv_ml",
                "rvef_pct", "ecc_global_pct", "err_global_pct", "ell_global_pct",
                "wt_global_mm", "ecc_aha01_pct", "wt_aha16_mm", "ell_la6_pct",
                "lvef_voxel_pct", "lvedv_voxel_ml", "qc_pass", "qc_reasons",
                "fit_rms_sa_mm", "fit_rms_la_2ch_mm", "fit_rms_la_4ch_mm"):
        assert col in row.index, col
    frames = pd.read_parquet(out / "sub_frames.parquet")
    assert len(frames) == 3
    vertices = pd.read_parquet(out / "sub_vertices.parquet")
    assert len(vertices) == topo.n_vertices
    assert set(vertices["aha_segment"]) >= set(range(1, 17))
    side = json.loads((out / "sub_motion.json").read_text())
    assert side["tool"].startswith("estimate-motion-mesh")
    assert side["parameters"]["seed"] == 3
    assert set(side["inputs"]) >= {"seg_sa", "seg_la_2ch", "seg_la_4ch"}
    # The ED volume from the mesh against the phantom's analytic volume (fast options:
    # loose; the benchmark measures the default fit).
    assert row["lvedv_ml"] == pytest.approx(heart.volumes(0.0)["lv_ml"], rel=0.10)
    assert row["lvm_g"] == pytest.approx(1.05 * heart.volumes(0.0)["lv_myo_ml"], rel=0.15)


def test_same_inputs_and_seed_give_the_same_bytes(fitted):
    _, _, (a, b) = fitted
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".json":
            continue                                  # timings and output paths differ
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_zero_motion_gives_zero_strain_and_ef(runner, monkeypatch, fast, heart_writer,
                                              tmp_path):
    """A cine whose frames all show the ED heart: no strain, no ejection (the ED fit at
    its default settings: a half-converged ED mesh would keep converging in later frames,
    which reads as motion)."""
    import nibabel as nib

    from medflow.motion import fit

    monkeypatch.setattr(fit, "FitOptions", functools.partial(
        fit.FitOptions, **{**fast, "ed_iterations": 150, "ed_ffd_iterations": 40}))
    _, paths = heart_writer(tmp_path, frames=3)
    static = {}
    for view, p in paths.items():
        img = nib.load(str(p))
        data = np.asarray(img.dataobj)
        data = np.repeat(data[..., :1], data.shape[-1], axis=-1)
        static[view] = tmp_path / f"static_{view}.nii.gz"
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(static[view]))
    _fit(runner, static, tmp_path / "out")
    row = pd.read_parquet(tmp_path / "out" / "phenotypes.parquet").iloc[0]
    assert abs(row["lvef_pct"]) < 1.0
    for col in ("ecc_global_pct", "err_global_pct", "ell_global_pct"):
        assert abs(row[col]) < 1.0, (col, row[col])


def test_batch_mode_fits_every_subject(runner, fast_cli, heart_segs, tmp_path):
    _, paths = heart_segs
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,seg_sa,seg_la_4ch\n"
                     f"s1,{paths['sa']},{paths['la_4ch']}\n")
    result = runner.invoke(cli, ["estimate-motion-mesh", "fit", "--samplesheet", str(sheet),
                                 "--outdir", str(tmp_path / "res"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(tmp_path / "res" / "s1" / "s1_phenotypes.parquet").iloc[0]
    assert "fit_rms_la_4ch_mm" in row.index and "fit_rms_la_2ch_mm" not in row.index
