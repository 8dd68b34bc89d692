"""Training augmentation: GIN / IPA re-texturing."""

from __future__ import annotations

import numpy as np
import torch

from medflow.segment.augment import apply_augment, apply_gin, sample_augment, sample_gin

torch.set_num_threads(1)


def two_tissue_image() -> tuple[torch.Tensor, torch.Tensor]:
    """A z-scored image of a bright block (class 1) in a dark background (class 0)."""
    classes = torch.zeros(16, 16, 4, dtype=torch.long)
    classes[4:12, 4:12] = 1
    image = classes.float()[None]
    return (image - image.mean()) / image.std(), classes


def test_gin_output_is_zscored_and_deterministic():
    image, _ = two_tissue_image()
    p = sample_gin(np.random.default_rng(0), 1, (3, 3, 1))
    out = apply_gin(image, p)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-4
    assert torch.equal(out, apply_gin(image, p))


def test_gin_can_invert_tissue_contrast():
    # Biased random nets remap intensities non-monotonically: across draws the bright
    # tissue must sometimes come out darker than the background (a bias-free net cannot
    # do that for alpha < 0.5, and only by a global sign flip otherwise).
    image, classes = two_tissue_image()
    rng = np.random.default_rng(1)
    contrasts = []
    for _ in range(20):
        out = apply_gin(image, sample_gin(rng, 1, (3, 3, 1)))[0]
        contrasts.append(float(out[classes == 1].mean() - out[classes == 0].mean()))
    assert min(contrasts) < -0.5 < 0.5 < max(contrasts)
    assert np.std(contrasts) > 0.3


def test_gin_ipa_gives_two_zscored_copies_with_the_same_labels():
    image, classes = two_tissue_image()
    p = sample_augment(np.random.default_rng(2), "gin-ipa", (1.0, 1.0, 1.0), 1, (3, 3, 1))
    images, labels = apply_augment(image, classes, p, (1.0, 1.0, 1.0))
    assert images.shape == (2, 1, 16, 16, 4) and labels.shape == classes.shape
    for copy in images:
        assert abs(float(copy.std()) - 1) < 1e-4


def test_spatial_augmentation_never_resamples_across_thick_slices():
    """A 10 mm stack at 1.8 mm pixels: every augmented slice is one whole input slice (its
    image and its labels), so the basal slice's label never comes from a neighbour or from
    outside the stack (which taught 'the basal slice is background')."""
    from medflow.segment.augment import apply_spatial, sample_spatial

    spacing = (1.8, 1.8, 10.0)
    z = torch.arange(11, dtype=torch.float32)
    image = z.expand(1, 20, 16, 11).clone()                   # slice k holds the value k
    classes = (z.long() + 1).expand(20, 16, 11).clone()       # and the label k + 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = sample_spatial(rng, spacing)
        assert p["scale"][2] == 1.0 and p["scale"][0] == p["scale"][1] != 1.0
        img, lab = apply_spatial(image, classes, p, spacing)
        source = torch.flip(z, [0]) if p["flip"][2] else z
        for k in range(11):
            assert torch.allclose(img[0, ..., k], source[k].expand(20, 16), atol=1e-4)
            assert set(lab[..., k].unique().tolist()) <= {0, int(source[k]) + 1}
            assert (lab[..., k] == int(source[k]) + 1).any()
    iso = sample_spatial(rng, (1.0, 1.0, 1.0))["scale"]
    assert iso[0] == iso[1] == iso[2] != 1.0


def three_tissue_image() -> tuple[torch.Tensor, torch.Tensor]:
    """Background 0, a mid-grey ring (class 1), a bright core (class 2); z-scored."""
    classes = torch.zeros(16, 16, 4, dtype=torch.long)
    classes[3:13, 3:13], classes[6:10, 6:10] = 1, 2
    image = (classes.float() / 2)[None]
    return (image - image.mean()) / image.std(), classes


def test_remap_reorders_tissue_brightness_and_keeps_labels():
    # The curve is a function of intensity only: each tissue stays uniform (labels still
    # describe the image), while across draws the brightest tissue comes out darkest and
    # the order of the three tissues takes several permutations.
    from medflow.segment.augment import apply_remap, sample_remap

    image, classes = three_tissue_image()
    rng = np.random.default_rng(3)
    orders = set()
    for _ in range(40):
        out = apply_remap(image, sample_remap(rng))[0]
        means = [float(out[classes == k].mean()) for k in range(3)]
        for k in range(3):
            assert float(out[classes == k].std()) < 1e-4
        orders.add(tuple(np.argsort(means)))
        if max(means) - min(means) > 1e-3:
            assert abs(float(out.std()) - 1) < 1e-3                  # z-scored again
    assert (2, 1, 0) in orders and len(orders) >= 4


def test_remap_mode_gives_a_standard_copy_and_a_remapped_one_with_the_same_labels():
    from medflow.segment.advchain import copies

    image, classes = three_tissue_image()
    p = sample_augment(np.random.default_rng(4), "remap", (1.0, 1.0, 1.0), 1, (3, 3, 1))
    images, labels = apply_augment(image, classes, p, (1.0, 1.0, 1.0))
    ref_images, ref_labels = apply_augment(image, classes, {**p, "mode": "standard"},
                                           (1.0, 1.0, 1.0))
    assert images.shape == (2, 1, 16, 16, 4) and copies("remap") == 2
    assert torch.equal(labels, ref_labels) and torch.equal(images[0], ref_images[0])
    assert not torch.allclose(images[1], images[0], atol=0.1)
    assert 0 <= p["remap_intensity"]["noise"] <= 0.3


def test_augment_choices_of_the_cli_are_the_modes_built():
    from medflow.options import AUGMENT_MODES
    from medflow.segment.advchain import BASE_MODE
    from medflow.segment.augment import MODES

    assert set(AUGMENT_MODES) == set(MODES) | set(BASE_MODE)


def test_remap_curve_is_the_piecewise_linear_interpolation_of_its_knots():
    from medflow.segment.augment import apply_remap, sample_remap

    p = {**sample_remap(np.random.default_rng(1)), "alpha": 1.0}
    unit = np.linspace(0, 1, 101)
    out = apply_remap(torch.tensor(unit, dtype=torch.float64)[None, :, None, None], p)
    ref = np.interp(unit, np.linspace(0, 1, len(p["knots"])), p["knots"])
    assert np.allclose(out.flatten().numpy(), (ref - ref.mean()) / ref.std(ddof=1), atol=1e-4)


def test_class_shift_moves_each_chosen_structure_to_its_level_and_nothing_else():
    # Two structures of different brightness, both sent all the way to the middle of the
    # range: their interiors end equal; background far from them is untouched (up to the
    # final z-scoring, an affine map); the blur runs in-plane only (a slice axis of a
    # 10 mm stack keeps each slice's own shift).
    from medflow.segment.augment import apply_class_shift

    classes = torch.zeros(24, 24, 3, dtype=torch.long)
    classes[3:11, 3:11, 1], classes[13:21, 13:21, 1] = 1, 2
    image = torch.where(classes == 1, 3.0, torch.where(classes == 2, 1.0, 0.0))[None]
    image = image + 0.01 * torch.arange(24.0).view(1, 24, 1, 1)       # texture kept
    p = {"on": [False, True, True], "level": [0.0, 0.5, 0.5], "weight": [1.0, 1.0, 1.0]}
    out = apply_class_shift(image, classes, p, (1.8, 1.8, 10.0))[0]
    inner1, inner2 = out[5:9, 5:9, 1], out[15:19, 15:19, 1]
    assert abs(float(inner1.mean() - inner2.mean())) < 0.1
    assert abs(float(out[classes != 0].mean()) - float(out[classes == 0].mean())) > 0.1
    lin = torch.linspace(0, 1, 24)
    far = out[:, 0, 0]                                     # another slice: no shift at all
    assert torch.allclose(far - far[0], (far[-1] - far[0]) * lin, atol=1e-4)
    assert torch.allclose(inner1[1:] - inner1[:-1], inner1[1:2] - inner1[0:1], atol=1e-4)
    same = apply_class_shift(image, classes, {**p, "on": [False, False, False]}, (1, 1, 1))
    zs = (image - image.mean()) / image.std()
    assert torch.allclose(same, zs, atol=1e-5)


def test_remap_copy_b_draws_a_class_shift_that_never_moves_background():
    from medflow.segment.augment import sample_class_shift

    rng = np.random.default_rng(5)
    draws = [sample_class_shift(rng, 4) for _ in range(200)]
    assert not any(d["on"][0] for d in draws)
    share = np.mean([d["on"][1:] for d in draws])
    assert 0.35 < share < 0.65
    image, classes = three_tissue_image()
    p = sample_augment(np.random.default_rng(4), "remap", (1.0, 1.0, 1.0), 1, (3, 3, 1), 3)
    a, la = apply_augment(image, classes, p, (1.0, 1.0, 1.0))
    b, lb = apply_augment(image, classes, p, (1.0, 1.0, 1.0))
    assert torch.equal(a, b) and torch.equal(la, lb) and len(p["class_shift"]["on"]) == 3
