"""The microCT phantom: streamed NIfTI files, labels, thinness, determinism, no seams."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from medflow.io.images import read_image
from medflow.io.volume import geometry_problem
from medflow.phantom.cli import demo_cohort
from medflow.phantom.microct import (MicroCTConfig, microct_affine, render_microct_slab,
                                     sample_microct_scene, write_microct_subject,
                                     write_microct_volumes)

SHAPE = (48, 40, 32)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("microct")
    roles = write_microct_subject(folder, "sub-000", seed=7, shape=(64, 56, 48))
    image = read_image(folder / roles["image"], mmap=True)
    seg = read_image(folder / roles["seg"], "label", mmap=True)
    truth = json.loads((folder / roles["truth"]).read_text())
    return folder, roles, image, seg, truth


def test_roles_and_files(subject):
    folder, roles, _, _, _ = subject
    assert roles == {"image": "image.nii", "seg": "seg.nii", "truth": "truth.json"}
    assert sorted(p.name for p in folder.iterdir()) == ["image.nii", "seg.nii", "truth.json"]


def test_readback_is_memmap_with_geometry(subject):
    _, _, image, seg, truth = subject
    assert isinstance(image.data, np.memmap) and isinstance(seg.data, np.memmap)
    assert image.data.dtype == np.int16 and seg.data.dtype == np.uint8
    assert image.shape3 == seg.shape3 == (64, 56, 48)
    assert np.allclose(image.spacing, truth["voxel_size_mm"], rtol=1e-6)
    assert np.allclose(image.affine, truth["affine"], atol=1e-6)
    assert np.allclose(seg.affine, image.affine)
    assert not np.allclose(image.affine[:3, :3], np.diag(image.spacing))  # non-identity
    assert geometry_problem(image.affine) is None


def test_labels_present_in_sensible_fractions(subject):
    _, _, _, seg, truth = subject
    labels = np.asarray(seg.data)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    frac = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert 0.85 < frac[0] < 0.99
    for c in (1, 2, 3):
        assert 0.0005 < frac[c] < 0.1, (c, frac)


def test_truth_counts_match_labels(subject):
    _, _, _, seg, truth = subject
    counts = np.bincount(np.asarray(seg.data).ravel(), minlength=4)
    voxel_mm3 = np.prod(truth["voxel_size_mm"])
    for c in range(4):
        entry = truth["classes"][str(c)]
        assert entry["voxels"] == counts[c]
        assert entry["volume_mm3"] == pytest.approx(counts[c] * voxel_mm3, rel=1e-5)
    assert truth["image_dtype"] == "int16" and truth["shape"] == [64, 56, 48]
    assert truth["structures"]["beads"]["count"] >= 1


def test_intensities_differ_by_class(subject):
    _, _, image, seg, truth = subject
    data, labels = np.asarray(image.data), np.asarray(seg.data)
    mean = [data[labels == c].mean() for c in range(4)]
    noise = data[labels == 0].std()
    # background < membrane < vessel < bead, each step well above the noise
    assert mean[0] + noise < mean[2] < mean[1] < mean[3]
    assert mean[1] - mean[2] > 0.5 * noise
    assert mean == pytest.approx([truth["classes"][str(c)]["mean_intensity"] for c in range(4)])
    # background varies smoothly (cupping, shading) and is noisy, not constant
    assert 40 < noise < 400


def test_structures_are_thin(subject):
    _, _, _, seg, _ = subject
    labels = np.asarray(seg.data)
    for c in (1, 2):  # vessels and membranes: nearly every voxel within 2 of another class
        depth = distance_transform_edt(labels == c)[labels == c]
        assert np.mean(depth <= 2.0) > 0.9, (c, np.mean(depth <= 2.0))
    beads = distance_transform_edt(labels == 3)[labels == 3]
    assert beads.max() <= 4.5  # radius at most 3.5 voxels


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 1), (b, 1), (c, 2)):
        folder.mkdir()
        write_microct_subject(folder, "s", seed, SHAPE)
    for name in ("image.nii", "seg.nii", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "image.nii").read_bytes() != (c / "image.nii").read_bytes()


def test_slabs_leave_no_seams(tmp_path):
    scene = sample_microct_scene((30, 26, 37), seed=5)
    affine = microct_affine(scene.shape, scene.config.voxel_mm)
    whole = tmp_path / "whole.nii", tmp_path / "whole_seg.nii"
    write_microct_volumes(scene, *whole, affine, slab_planes=37)
    for planes in (1, 4, 9):
        parts = tmp_path / f"p{planes}.nii", tmp_path / f"p{planes}_seg.nii"
        stats = write_microct_volumes(scene, *parts, affine, slab_planes=planes)
        assert parts[0].read_bytes() == whole[0].read_bytes()
        assert parts[1].read_bytes() == whole[1].read_bytes()
    image, labels = render_microct_slab(scene, 10, 20)
    assert np.array_equal(labels, np.asanyarray(nib.load(str(whole[1])).dataobj)[:, :, 10:20])
    assert sum(stats["voxels"]) == 30 * 26 * 37


def test_odd_shape(tmp_path):
    write_microct_subject(tmp_path, "odd", 3, (33, 47, 29))
    image = read_image(tmp_path / "image.nii", mmap=True)
    seg = read_image(tmp_path / "seg.nii", "label", mmap=True)
    assert image.shape3 == seg.shape3 == (33, 47, 29)
    assert set(np.unique(np.asarray(seg.data)).tolist()) == {0, 1, 2, 3}
    assert np.asarray(image.data).std() > 0


def test_counts_scale_with_field_of_view():
    small = sample_microct_scene((32, 32, 32), 0).summary
    large = sample_microct_scene((64, 64, 64), 0).summary
    assert large["beads"]["count"] > 4 * small["beads"]["count"]
    length = [s["vessels"]["centreline_length_in_volume_mm"] for s in (small, large)]
    assert length[1] > 4 * length[0]


def test_config_changes_voxel_size_and_rejects_tiny_shapes():
    scene = sample_microct_scene((16, 16, 16), 0, MicroCTConfig(voxel_mm=0.01))
    assert scene.config.voxel_mm == 0.01
    with pytest.raises(ValueError, match="at least 8"):
        sample_microct_scene((4, 40, 40), 0)
    with pytest.raises(ValueError, match="outside"):
        render_microct_slab(scene, 5, 40)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import medflow.phantom.microct as microct

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(microct, "write_json", boom)
    with pytest.raises(RuntimeError):
        write_microct_subject(tmp_path, "s", 0, (16, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_samplesheet(runner, tmp_path):
    result = runner.invoke(demo_cohort, ["--kind", "microct", "--shape", "24,20,16",
                                         "--out", str(tmp_path), "--seed", "4"])
    assert result.exit_code == 0, result.output
    sheet = (tmp_path / "samplesheet.csv").read_text().splitlines()
    assert sheet[0] == "subject,image,seg,truth"
    assert sheet[1] == "sub-000,sub-000/image.nii,sub-000/seg.nii,sub-000/truth.json"
    assert nib.load(str(tmp_path / "sub-000" / "image.nii")).shape == (24, 20, 16)


def test_cli_rejects_tiny_shape(runner, tmp_path):
    result = runner.invoke(demo_cohort, ["--kind", "microct", "--shape", "4,40,40",
                                         "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--shape" in result.output and "at least 8" in result.output
    assert not (tmp_path / "samplesheet.csv").exists()
