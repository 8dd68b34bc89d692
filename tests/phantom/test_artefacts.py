"""The artefact suite: photometric (labels untouched), deterministic for a seed, a real change."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.phantom.artefacts import ARTEFACTS, corrupt

pytest.importorskip("torchio")
AFFINE = np.diag([1.8, 1.8, 10.0, 1.0])


@pytest.fixture(scope="module")
def heart(tiny_heart):
    return tiny_heart(np.random.default_rng(0))          # (image, labels), cines


@pytest.mark.parametrize("kind", sorted(ARTEFACTS))
def test_artefact_is_deterministic_changes_the_image_and_keeps_the_labels(kind, heart):
    import torchio as tio

    img, lab = heart
    a, b = corrupt(img, AFFINE, kind, seed=3), corrupt(img, AFFINE, kind, seed=3)
    assert a.shape == img.shape and a.dtype == np.float32
    assert np.array_equal(a, b)                                        # same seed, same bytes
    change = np.abs(a - img).mean() / np.abs(img).mean()
    assert change > 0.005, change                                      # it does something
    assert not np.array_equal(a, corrupt(img, AFFINE, kind, seed=4)) or kind == "ghosting"
    # As a TorchIO subject with the label map, the transform leaves the labels as they are.
    name, params = ARTEFACTS[kind]
    params = {"std": (1.0, 1.0)} if kind == "noise" else params
    subject = tio.Subject(image=tio.ScalarImage(tensor=np.moveaxis(img, 3, 0), affine=AFFINE),
                          seg=tio.LabelMap(tensor=np.moveaxis(lab, 3, 0).astype(np.int16),
                                           affine=AFFINE))
    out = getattr(tio, name)(**params)(subject)
    assert np.array_equal(out["seg"].data.numpy(), np.moveaxis(lab, 3, 0))


def test_3d_images_and_bad_input():
    img = np.random.default_rng(1).random((12, 10, 4)).astype(np.float32) + 1
    assert corrupt(img, AFFINE, "bias", seed=0).shape == img.shape
    with pytest.raises(ValueError, match="unknown artefact"):
        corrupt(img, AFFINE, "zipper")
    with pytest.raises(ValueError, match="2D"):
        corrupt(img[..., 0], AFFINE, "noise")
