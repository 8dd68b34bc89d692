"""Cooperative training with latent-space augmentation (--cooperative, predict --refine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medflow.segment import cooperative
from medflow.segment.cascade import Cascade
from medflow.segment.cooperative import MaskParams, latent_mask
from medflow.segment.modelio import load_model, save_model
from medflow.segment.train import TrainOptions, one_hot, train_step

from .conftest import train_tiny
from .test_model import tiny_config

torch.set_num_threads(1)


def features(seed=0, shape=(2, 6, 4, 3, 2)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) + 5.0


def test_random_channel_mask_zeroes_whole_channels_at_the_rate():
    h = features()
    mask = latent_mask(MaskParams("channel", 0.5, 7), h)
    assert mask.shape == (2, 6, 1, 1, 1)
    masked = h * mask
    dropped = (masked == 0).all(dim=(2, 3, 4))            # (B, C): whole channels zero
    kept = (masked == h).all(dim=(2, 3, 4))
    assert (dropped | kept).all() and dropped.sum(1).tolist() == [3, 3]
    assert torch.equal(mask, latent_mask(MaskParams("channel", 0.5, 7), h)), "seeded"
    assert not torch.equal(mask, latent_mask(MaskParams("channel", 0.5, 8), h))


def test_random_spatial_mask_zeroes_voxels_across_all_channels():
    h = features()
    mask = latent_mask(MaskParams("spatial", 0.25, 1), h)
    assert mask.shape == (2, 1, 4, 3, 2)
    masked = h * mask
    voxel_zero = (masked == 0).all(dim=1)                 # (B, X, Y, Z)
    assert voxel_zero.flatten(1).sum(1).tolist() == [6, 6]   # round(0.25 x 24)
    assert ((masked == h).all(dim=1) | voxel_zero).all()


def test_targeted_channel_mask_drops_the_highest_gradient_channels():
    h = features()
    grad = torch.full_like(h, 0.01)
    grad[0, 4] = -3.0                                    # magnitude counts, not sign
    grad[0, 1] = 2.0
    grad[1, 0] = 1.0
    grad[1, 5, 0, 0, 0] = 50.0                           # one large voxel: mean 50 / 24
    mask = latent_mask(MaskParams("targeted-channel", 2 / 6, 0), h, grad)[:, :, 0, 0, 0]
    assert mask[0].tolist() == [1, 0, 1, 1, 0, 1]
    assert mask[1].tolist() == [0, 1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="gradient"):
        latent_mask(MaskParams("targeted-channel", 0.3, 0), h)


def test_targeted_spatial_mask_drops_the_highest_gradient_voxels():
    h = features(shape=(1, 3, 4, 3, 2))
    grad = torch.zeros_like(h)
    grad[0, :, 2, 1, 0] = 1.0                            # summed over channels: 3
    grad[0, 0, 0, 0, 1] = -2.5
    grad[0, 2, 3, 2, 1] = 0.5
    mask = latent_mask(MaskParams("targeted-spatial", 2 / 24, 0), h, grad)[0, 0]
    assert mask.sum() == 22 and mask[2, 1, 0] == 0 and mask[0, 0, 1] == 0
    assert mask[3, 2, 1] == 1


def test_corrupted_labels_stay_probabilities_and_change_in_the_boxes():
    rng = np.random.default_rng(0)
    labels = torch.zeros(2, 4, 8, 8, 4, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    onehot = one_hot(labels[:, 0], 4)
    params = cooperative.sample_corruption(rng, 2, (8, 8, 4), 4, slice_axis=2)
    out = cooperative.corrupt_labels(params, onehot)
    assert out.shape == onehot.shape and torch.allclose(out.sum(1), torch.ones(2, 8, 8, 4))
    clean = cooperative.corrupt_labels(cooperative.Corruption(((), ()), 0.0, 0), onehot)
    assert torch.equal(clean, onehot)                    # identity parameters change nothing
    boxed = cooperative.corrupt_labels(cooperative.Corruption(
        ((((0, 0, 0), (2, 2, 1), 3),), ()), 0.0, 0), onehot)
    assert (boxed[0, 3, :2, :2, 0] == 1).all() and boxed[0, 3].sum() == 4
    assert torch.equal(boxed[1], onehot[1])


def coop_model(seed=0):
    torch.manual_seed(seed)
    return Cascade(tiny_config(refiner_channels=(4, 8)))


def test_train_step_changes_the_refiner_and_is_seeded():
    from medflow.segment.data import Sample

    rng0 = np.random.default_rng(5)
    classes = np.zeros((16, 16, 4), np.int64)
    classes[4:12, 4:12] = 1
    classes[6:10, 6:10] = 2
    image = (classes.astype(np.float32) + rng0.normal(0, 0.1, classes.shape))[None]
    sample = Sample("s", 0, image.astype(np.float32), classes)
    states = []
    for _ in range(2):
        model = coop_model()
        before = {k: v.clone() for k, v in model.refiner.state_dict().items()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        opts = TrainOptions(cooperative=True, augment="none")
        rng = np.random.default_rng(1)
        for _ in range(3):   # the mask kind is drawn per step: targeted kinds too
            train_step(model, opt, sample, opts, rng, "cpu")
        after = model.state_dict()
        assert any(not torch.equal(before[k], after[f"refiner.{k}"]) for k in before)
        states.append(after)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), "same seed"


def test_masked_bottleneck_changes_the_decoded_prediction():
    model = coop_model().eval()
    images = torch.randn(1, 1, 16, 16, 4)
    with torch.no_grad():
        _, logits2, latent = model.forward_patches(images, [(0, 0, 0)], keep_latent=True)
        same = model.decode_latent(latent, latent.levels[-1])
        h = latent.levels[-1]
        hard = model.decode_latent(latent, h * latent_mask(MaskParams("channel", 0.5, 0), h))
    assert torch.allclose(same, logits2)
    assert not torch.allclose(hard, logits2)


def test_refiner_is_saved_and_loaded_and_old_models_still_load(tmp_path):
    model = coop_model(3)
    save_model(tmp_path / "m", model, {"training": {}})
    back, card = load_model(tmp_path / "m")
    assert card["config"]["refiner_channels"] == [4, 8] and back.refiner is not None
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    assert any(k.startswith("refiner.") for k in back.state_dict())
    # a model from before --cooperative: no refiner_channels in its card, no refiner weights
    torch.manual_seed(0)
    save_model(tmp_path / "old", Cascade(tiny_config()), {"training": {}})
    card = json.loads((tmp_path / "old" / "model.json").read_text())
    del card["config"]["refiner_channels"]
    (tmp_path / "old" / "model.json").write_text(json.dumps(card))
    old, _ = load_model(tmp_path / "old")
    assert old.refiner is None


def test_refine_on_a_model_without_refiner_exits_65(runner, tiny_model, cohort, tmp_path):
    from medflow.segment.cli import segment_cascaded

    image = next(p for p in cohort.parent.rglob("*sa.nii.gz") if "seg" not in p.name)
    out = tmp_path / "seg.nii.gz"
    res = runner.invoke(segment_cascaded, ["predict", "--model", str(tiny_model), "--input",
                                           str(image), "--output", str(out), "--refine"])
    assert res.exit_code == 65, res.output
    assert "no refiner" in res.output and str(tiny_model) in res.output
    assert not out.exists()


def test_cooperative_training_finishes_is_seeded_and_predicts_refined(runner, cohort,
                                                                       tmp_path):
    import nibabel as nib

    from medflow.segment.cli import segment_cascaded

    outs = []
    for name, extra in (("a", []), ("b", []), ("g", ["--augment", "gin-ipa"])):
        out = tmp_path / name
        res = train_tiny(runner, cohort, out, "1", "--cooperative", *extra)
        assert res.exit_code == 0, res.output
        outs.append(out)
    weights = [(o / "model.safetensors").read_bytes() for o in outs]
    assert weights[0] == weights[1], "same seed, same weights"
    assert weights[0] != weights[2]
    card = json.loads((outs[0] / "model.json").read_text())
    opts = card["training"]["options"]
    assert opts["cooperative"] is True
    assert opts["cooperative_training"]["mask_kinds"] == list(cooperative.MASK_KINDS)
    assert card["config"]["refiner_channels"]
    assert "val_dice_refined_mean" in card["training"]["history"][-1]
    image = next(p for p in cohort.parent.rglob("*sa.nii.gz") if "seg" not in p.name)
    res_paths = {}
    for tag, flags in (("plain", []), ("refined", ["--refine"])):
        seg, prob, unc = (tmp_path / f"{tag}_{k}.nii.gz" for k in ("seg", "prob", "unc"))
        res = runner.invoke(segment_cascaded, ["predict", "--model", str(outs[0]), "--input",
                                               str(image), "--output", str(seg),
                                               "--probabilities", str(prob), "--uncertainty",
                                               str(unc), "--no-ventricle-anatomy", *flags])
        assert res.exit_code == 0, res.output
        res_paths[tag] = (seg, prob, unc)
    seg, prob, unc = (np.asarray(nib.load(p).dataobj) for p in res_paths["refined"])
    plain_prob = np.asarray(nib.load(res_paths["plain"][1]).dataobj)
    assert not np.allclose(prob, plain_prob), "the refiner changes the probabilities"
    # labels and uncertainty follow the refined probabilities
    assert np.array_equal(seg, np.asarray(card["config"]["labels"])[prob.argmax(-1)])
    p = np.clip(prob, 1e-12, 1)
    entropy = np.clip(100 * -(prob * np.log(p)).sum(-1) / np.log(4), 0, 100)
    assert np.abs(unc.astype(float) - entropy).max() <= 0.51
    sidecar = json.loads(res_paths["refined"][0].with_name("refined_seg.json").read_text())
    assert sidecar["parameters"]["refine"] is True


def test_resume_must_match_the_cooperative_option(runner, cohort, tmp_path):
    def train(out, epochs, *flags):
        return train_tiny(runner, cohort, out, epochs, *flags)

    assert train(tmp_path / "full", "2", "--cooperative").exit_code == 0
    assert train(tmp_path / "r", "1", "--cooperative").exit_code == 0
    res = train(tmp_path / "r", "2", "--resume")
    assert res.exit_code == 2 and "--cooperative" in res.output
    res = train(tmp_path / "r", "2", "--resume", "--cooperative")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r/model.safetensors").read_bytes() == \
        (tmp_path / "full/model.safetensors").read_bytes()


def test_resume_must_match_the_augment_option(runner, cohort, tmp_path):
    # The card records one --augment for every epoch: a resumed run may not change it.
    def train(epochs, *flags):
        return train_tiny(runner, cohort, tmp_path / "r", epochs, *flags)

    assert train("1", "--augment", "remap").exit_code == 0
    res = train("2", "--resume")
    assert res.exit_code == 2 and "--augment remap" in res.output
    res = train("2", "--resume", "--augment", "remap")
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "r/model.json").read_text())
    assert card["training"]["options"]["augment"] == "remap"
    assert card["training"]["epochs_done"] == 2
