"""The same image stored in another axis order gets the same segmentation (issue 12,
case 7): the network always sees the model card's axis convention."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medflow.io import Volume, read_image


@pytest.mark.parametrize("order", [(0, 2, 1), (2, 0, 1)])
def test_storage_order_does_not_change_the_segmentation(cohort, tiny_model, order):
    import torch

    from medflow.segment.modelio import load_model
    from medflow.segment.predict import model_axis_order, segment

    torch.set_num_threads(1)
    model, _ = load_model(tiny_model)
    row = pd.read_csv(cohort).iloc[0]
    vol = read_image(cohort.parent / row["sa"])  # (24, 20, 6, T), 1.8 x 1.8 x 10 mm
    # the same voxels in the same world, stored with the 10 mm axis elsewhere
    stored = Volume(np.transpose(vol.data, (*order, 3)), vol.affine[:, [*order, 3]])
    assert model_axis_order(stored.spacing, model.cfg.spacing) is not None
    expected = np.zeros(vol.data.shape, np.uint8)
    segment(model, [vol], expected)
    got = np.zeros(stored.data.shape, np.uint8)
    probs = np.zeros((*stored.data.shape, model.cfg.n_classes), np.float32)
    facts = segment(model, [stored], got, probs)
    back = np.argsort(order)
    np.testing.assert_array_equal(np.transpose(got, (*back, 3)), expected)
    assert facts["axes_reordered_for_model"] is not None
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)  # every voxel written


def test_axis_order_rule():
    from medflow.segment.predict import model_axis_order, slice_axis

    assert slice_axis((1.8, 1.8, 10.0)) == 2 and slice_axis((1.0, 1.0, 1.0)) is None
    assert model_axis_order((1.8, 1.8, 10.0), (1.8, 1.8, 10.0)) is None
    assert model_axis_order((10.0, 1.8, 1.8), (1.8, 1.8, 10.0)) == (1, 2, 0)
    assert model_axis_order((1.0, 1.0, 1.0), (1.8, 1.8, 10.0)) is None  # isotropic: as is
