"""The learned mode: probes of known label motion, training through the slicer, model
folders and `predict`'s outputs and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medflow.cli import cli
from medflow.motion.fit import FitOptions
from medflow.motion.probe import node_features, node_ids, node_weights, vertex_probes
from medflow.motion.targets import View, build_targets
from medflow.motion.template import LV_ENDO, Topology, template_vertices

SHAPE = torch.tensor([25.0, 70.0, 9.0, 8.0, 600.0, 1.0, 50.0])


def _ellipsoid_cine(shift_mm: float):
    """Short-axis labels of the template's LV cavity (frame 0) and the same cavity moved
    by ``shift_mm`` along x (frame 1): 1.5 mm pixels, 8 mm slices, base at z = 0."""
    a, c = float(SHAPE[0]), float(SHAPE[1])
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = [-60.0, -60.0, -60.0]
    ii, jj, kk = np.meshgrid(np.arange(81), np.arange(81), np.arange(8), indexing="ij")
    x, y, z = (affine[:3, :3] @ np.stack([ii, jj, kk]).reshape(3, -1)).reshape(3, *ii.shape)
    x, y, z = x + affine[0, 3], y + affine[1, 3], z + affine[2, 3]
    labels = []
    for dx in (0.0, shift_mm):
        inside = ((x - dx) ** 2 + y ** 2) / a ** 2 + z ** 2 / c ** 2 < 1
        labels.append((inside & (z < 0)).astype(np.int16))
    return View("sa", np.stack(labels, -1), affine)


def test_probes_of_a_moved_cavity_recover_the_motion():
    """A cavity moved by 3 mm along x: every probed LV endocardial vertex's cue is the
    motion's normal component ((d . n) n), whose mean round a circle is d / 2."""
    topo = Topology()
    view = _ellipsoid_cine(3.0)
    targets, planes = build_targets([view])
    verts = template_vertices(topo, SHAPE).numpy()
    cue, valid = vertex_probes(targets, planes, np.zeros((len(planes), 2)), verts, topo)
    rings = topo.ring_ids(LV_ENDO).ravel()
    ok = valid[1, 0, rings]
    assert ok.sum() > 100                      # the stack cuts many rings
    assert not valid[:, 1:].any()              # no long-axis views given
    assert torch.all(cue[0] == 0)              # ED: no motion
    moved = cue[1, 0, rings][ok]
    assert moved[:, 0].mean() == pytest.approx(1.5, abs=0.25)
    assert moved[:, 1].abs().mean() < 1.0 and moved[:, 2].abs().max() < 1e-6
    assert torch.linalg.norm(moved, dim=-1).max() < 3.0 + 1.0


def test_node_features_pool_cues_into_the_heart_frame():
    topo = Topology()
    verts = template_vertices(topo, SHAPE).numpy()
    w = node_weights(verts, topo, 25.0)
    K = len(node_ids(topo))
    assert w.pool.shape == (K, topo.n_vertices) and w.spread.shape == (topo.n_vertices, K)
    assert torch.allclose(w.pool.sum(1), torch.ones(K), atol=1e-5)
    assert torch.allclose(w.spread.sum(1), torch.ones(topo.n_vertices), atol=1e-5)
    # Weights never cross surfaces (endocardium and epicardium move differently).
    surf = torch.as_tensor(topo.surface_of_vertex)
    assert torch.all(w.spread[surf[:, None] != w.surface[None]] < 1e-9)
    cue = torch.zeros(1, 3, topo.n_vertices, 3)
    cue[..., 0] = 2.0                              # 2 mm along world x everywhere
    valid = torch.ones(1, 3, topo.n_vertices, dtype=torch.bool)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # heart x = world y
    feats = node_features(cue, valid, rot, w).reshape(1, K, 3, 4)
    assert torch.allclose(feats[..., :3], torch.tensor([0.0, -2.0, 0.0]), atol=1e-5)
    assert torch.allclose(feats[..., 3], torch.ones(1, K, 3), atol=1e-5)


@pytest.fixture(scope="module")
def trained(heart_writer, fast, tmp_path_factory):
    """A model trained on two tiny phantom hearts (seed 3, 5) for a few epochs."""
    from medflow.motion.workflow import train_files

    root = tmp_path_factory.mktemp("learn")
    rows = ["subject,seg_sa,seg_la_2ch,seg_la_4ch"]
    for seed in (3, 5):
        folder = root / f"sub-{seed}"
        folder.mkdir()
        _, paths = heart_writer(folder, frames=3, seed=seed)
        rows.append(f"sub-{seed},{paths['sa']},{paths['la_2ch']},{paths['la_4ch']}")
    sheet = root / "samplesheet.csv"
    sheet.write_text("\n".join(rows) + "\n")
    roles = {"sa": "seg_sa", "la_2ch": "seg_la_2ch", "la_4ch": "seg_la_4ch"}
    card = train_files(sheet, roles, root / "model", epochs=40, seed=0, threads=1,
                       opts=FitOptions(**fast))
    return root, sheet, card


def test_training_through_the_slicer_lowers_the_loss(trained):
    _, _, card = trained
    hist = card["history"]
    assert len(hist) == 40 and card["subjects"] == ["sub-3", "sub-5"]
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["teacher_mm2"] < hist[0]["teacher_mm2"]


def test_same_seed_same_weights(trained, fast):
    from medflow.motion.workflow import train_files
    from medflow.io.weights import read_tensors

    root, sheet, _ = trained
    roles = {"sa": "seg_sa", "la_2ch": "seg_la_2ch", "la_4ch": "seg_la_4ch"}
    train_files(sheet, roles, root / "again", epochs=3, seed=0, threads=1,
                opts=FitOptions(**fast))
    train_files(sheet, roles, root / "again2", epochs=3, seed=0, threads=1,
                opts=FitOptions(**fast))
    a, b = read_tensors(root / "again" / "model.safetensors"), \
        read_tensors(root / "again2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_predict_writes_fits_outputs_from_the_saved_model(trained, runner, heart_segs,
                                                          tmp_path):
    root, _, _ = trained
    heart, paths = heart_segs
    out = tmp_path / "pred"
    (out / "meshes").mkdir(parents=True)
    (out / "meshes" / "frame_009.ply").write_bytes(b"from an older, longer run")
    args = ["estimate-motion-mesh", "predict", "--model", str(root / "model"), "--sa",
            str(paths["sa"]), "--la-2ch", str(paths["la_2ch"]), "--la-4ch",
            str(paths["la_4ch"]), "--out", str(out), "--threads", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["displacements.npy", "frames.parquet", "meshes", "motion.json",
                     "phenotypes.parquet", "vertices.parquet"]
    side = json.loads((out / "motion.json").read_text())
    assert side["tool"] == "estimate-motion-mesh predict"
    assert side["parameters"]["mode"] == "predict"
    assert sorted(p.name for p in (out / "meshes").iterdir()) == [
        "frame_000.ply", "frame_001.ply", "frame_002.ply"]        # the stale frame is gone
    disp = np.load(out / "displacements.npy")
    assert disp.shape == (3, Topology().n_vertices, 3) and np.all(disp[0] == 0)
    assert np.abs(disp[1:]).max() > 0.5        # the heart moves


@pytest.mark.parametrize("kind", ["missing", "no_weights", "corrupt_weights", "other_tool",
                                  "wrong_shape", "negative_width", "bad_fit_option",
                                  "zero_spacing"])
def test_bad_model_folder(kind, trained, runner, heart_segs, tmp_path):
    root, _, _ = trained
    _, paths = heart_segs
    model = tmp_path / "model"
    if kind != "missing":
        model.mkdir()
        card = json.loads((root / "model" / "model.json").read_text())
        weights = (root / "model" / "model.safetensors").read_bytes()
        if kind == "other_tool":
            card["format"] = "medflow-super-resolve"
        if kind == "wrong_shape":
            card["config"]["hidden"] = 32
        if kind == "negative_width":
            card["config"]["hidden"] = -1
        if kind == "bad_fit_option":
            card["fit_options"]["ed_iterations"] = "many"
        if kind == "zero_spacing":
            card["fit_options"]["ed_spacing_mm"] = 0
        (model / "model.json").write_text(json.dumps(card))
        if kind == "corrupt_weights":
            (model / "model.safetensors").write_bytes(weights[:100])
        elif kind != "no_weights":
            (model / "model.safetensors").write_bytes(weights)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["estimate-motion-mesh", "predict", "--model", str(model),
                                 "--sa", str(paths["sa"]), "--out", str(out)])
    code = 66 if kind in ("missing", "no_weights") else 65
    assert result.exit_code == code, result.output
    line = result.output.strip()
    assert "\n" not in line and str(model) in line, line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["no_lv", "missing_file"])
def test_train_refuses_a_bad_subject_and_leaves_no_model_folder(kind, runner, heart_segs,
                                                                 tmp_path):
    """A training subject with unusable segmentations stops training before any model is
    written: 65 (or 66 for a missing file) naming the file."""
    from medflow.io import Volume, read_image, write_nifti

    _, paths = heart_segs
    bad = tmp_path / "bad_sa.nii.gz"
    if kind == "no_lv":
        vol = read_image(paths["sa"], kind="label")
        data = np.asarray(vol.data).copy()
        data[np.isin(data, (1, 2))] = 0
        write_nifti(Volume(data, vol.affine, kind="label"), bad)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("subject,seg_sa,seg_la_2ch,seg_la_4ch\n"
                     f"sub-a,{bad},{paths['la_2ch']},{paths['la_4ch']}\n"
                     f"sub-b,{paths['sa']},{paths['la_2ch']},{paths['la_4ch']}\n")
    model = tmp_path / "model"
    result = runner.invoke(cli, ["estimate-motion-mesh", "train", "--samplesheet", str(sheet),
                                 "--out", str(model), "--epochs", "1", "--threads", "1"])
    assert result.exit_code == (65 if kind == "no_lv" else 66), result.output
    line = result.output.strip()
    assert "\n" not in line and "bad_sa.nii.gz" in line, line
    assert not model.exists()


def test_predict_refuses_a_subject_without_the_training_views(trained, runner, heart_segs,
                                                              tmp_path):
    root, _, card = trained
    assert card["views"] == ["sa", "la_2ch", "la_4ch"]
    _, paths = heart_segs
    out = tmp_path / "out"
    result = runner.invoke(cli, ["estimate-motion-mesh", "predict", "--model",
                                 str(root / "model"), "--sa", str(paths["sa"]), "--la-4ch",
                                 str(paths["la_4ch"]), "--out", str(out)])
    assert result.exit_code == 65, result.output
    assert "no la_2ch" in result.output and str(paths["sa"]) in result.output
    assert not out.exists()


def test_train_refuses_another_tools_model_folder(trained, runner, tmp_path):
    _, sheet, _ = trained
    other = tmp_path / "prior"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format": "medflow-super-resolve"}))
    result = runner.invoke(cli, ["estimate-motion-mesh", "train", "--samplesheet", str(sheet),
                                 "--out", str(other), "--epochs", "1"])
    assert result.exit_code == 65, result.output
    assert "medflow-super-resolve" in result.output
    assert sorted(p.name for p in other.iterdir()) == ["model.json"]
