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
