"""The parts of cluster-unsupervised as plain functions: slices, metadata positives,
augmentations, the contrastive loss, clustering scores, the column check, the model
folder."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medflow.cluster.augment import apply, augment, draw
from medflow.cluster.clustering import choose_k, column_check, scores_from_counts
from medflow.cluster.encoder import EncoderConfig, SliceEncoder, supcon_loss
from medflow.cluster.pairs import (SliceMeta, batch_masks, mate_slices, positive_candidates,
                                  visit_mates)
from medflow.cluster.slices import (normalise_slice, sample_indices, series_slices,
                                    slice_axis, two_scale)


def test_slice_axis_is_the_thick_one_then_the_short_one():
    assert slice_axis((184, 160, 11), (1.8, 1.8, 10.0)) == 2
    assert slice_axis((12, 160, 150), (8.0, 1.2, 1.2)) == 0
    assert slice_axis((96, 96, 64), (2.0, 2.0, 2.0)) == 2          # isotropic: fewest voxels
    assert slice_axis((64, 40, 64), (1.0, 1.0, 1.0)) == 1


def test_sample_indices_central_and_spread():
    idx = sample_indices(64, 1, 8, 2)
    pos = [s.position for s in idx]
    assert len(idx) == 8 and pos == sorted(pos) and pos[0] >= 9 and pos[-1] <= 54
    assert [s.rank for s in idx] == list(range(8))
    cine = sample_indices(11, 10, 8, 2)
    assert {s.frame for s in cine} == {0, 9} and len(cine) == 16
    long_axis = sample_indices(1, 10, 8, 2)   # one position: frames up to the same total
    assert [s.frame for s in long_axis] == list(range(10))
    single = sample_indices(1, 1, 8, 2)
    assert [(s.position, s.frame) for s in single] == [(0, 0)]


def test_normalise_removes_scale_and_series_slices_shapes():
    rng = np.random.default_rng(0)
    plane = rng.random((30, 20))
    np.testing.assert_allclose(normalise_slice(plane * 1000 + 7), normalise_slice(plane),
                               atol=1e-5)
    assert not normalise_slice(np.full((5, 5), 3.0)).any()
    data = rng.random((40, 30, 6, 3)).astype(np.float32)
    slices, index = series_slices(data, (1.0, 1.0, 5.0), positions=4, frames=2, size=16)
    assert slices.shape == (8, 16, 16) and slices.dtype == np.float32
    assert slices.min() >= 0 and slices.max() <= 1
    flat, _ = series_slices(rng.random((20, 20)), (1.0, 1.0, 1.0), size=16)  # a 2D image
    assert flat.shape == (1, 16, 16)


def test_positives_are_neighbouring_slices_of_the_same_series_only():
    meta = [SliceMeta(series=0, subject="a", session="a", rank=r, frame=f)
            for r in range(3) for f in range(2)]
    meta += [SliceMeta(series=1, subject="a", session="a", rank=0, frame=0),   # same visit
             SliceMeta(series=1, subject="a", session="a", rank=1, frame=0),
             SliceMeta(series=2, subject="b", session="b", rank=0, frame=0)]   # alone
    cand = positive_candidates(meta)
    for i, m in enumerate(meta[:6]):
        partners = [meta[j] for j in cand[i]]
        assert i not in cand[i]
        assert all(p.series == 0 and abs(p.rank - m.rank) <= 1 and abs(p.frame - m.frame) <= 1
                   for p in partners)
    assert sorted(cand[0].tolist()) == [1, 2, 3]              # (0,0): (0,1), (1,0), (1,1)
    assert sorted(cand[2].tolist()) == [0, 1, 3, 4, 5]        # (1,0): ranks 0-2, frames 0-1
    assert cand[6].tolist() == [7] and cand[7].tolist() == [6]  # never across series
    assert cand[8].tolist() == [8]                            # a lone slice pairs with itself


def test_visit_mates_are_the_other_series_of_the_visit_at_the_same_level():
    # visit a: a 3-position stack (series 0), a 2-position stack (1), a 1-position cine
    # with 2 frames (2); visit b: one series (3), no mate
    meta = [SliceMeta(0, "a", "a", r, 0) for r in range(3)]
    meta += [SliceMeta(1, "a", "a", r, 0) for r in range(2)]
    meta += [SliceMeta(2, "a", "a", 0, f) for f in range(2)]
    meta += [SliceMeta(3, "b", "b", 0, 0)]
    mates = visit_mates(meta)
    assert mates[0].tolist() == [1, 2] and mates[1].tolist() == [0, 2]
    assert mates[3].tolist() == []
    members = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5, 6]), np.array([7])]
    picked = mate_slices(np.array([2, 1, 3]), np.array([1, 0, 2]), members, meta)
    assert picked.tolist() == [4, 1, 5]   # rank 2 -> rank 1 (nearest), rank 1 -> 1, rank 0


def test_augment_identity_at_zero_strength_and_seeded():
    x = torch.rand(4, 1, 32, 32)
    same = apply(x, draw(4, torch.Generator().manual_seed(1), strength=0.0),
                 torch.Generator().manual_seed(2))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.allclose(a, x)


def test_supcon_prefers_positives_that_agree_and_ignores_what_it_is_told():
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]))

    def same(groups):
        g = torch.tensor(groups)
        return g[:, None] == g[None, :]
    good = supcon_loss(z, same([0, 0, 1, 1]))
    bad = supcon_loss(z, same([0, 1, 0, 1]))
    assert good < bad
    # rows 0 and 1 look alike but are negatives here; leaving that pair out lowers the loss,
    # and "ignoring" a positive pair (0, 2) changes nothing: positives stay positives
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[0, 1] = ignore[1, 0] = True
    assert supcon_loss(z, same([0, 1, 0, 1]), ignore) < bad
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[0, 2] = ignore[2, 0] = True
    assert supcon_loss(z, same([0, 1, 0, 1]), ignore) == bad


def test_batch_masks_pair_neighbours_and_leave_the_rest_of_the_series_out():
    meta = [SliceMeta(0, "a", "a", r, 0) for r in range(4)] + [SliceMeta(1, "a", "a", 0, 0)]
    idx = np.array([0, 0, 1, 3, 4])          # slice 0 twice: its two augmented views
    positive, ignore = batch_masks(idx, meta)
    assert positive[0, 1] and positive[0, 2] and not positive[0, 3]   # views; ranks 0-1; 0-3
    assert ignore[0, 3] and ignore[2, 3] and not positive[2, 3]      # same series, far apart
    assert not ignore[0, 2] and not ignore[0, 4] and not positive[0, 4]  # other series
    assert not (positive & ignore).any()


def test_scores_match_scikit_learn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.8, truth, rng.integers(0, 5, 200))
    s = scores_from_counts(Counter(zip(truth.tolist(), pred.tolist())))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-4)
    assert s["ari"] == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-4)
    purity = sum(Counter(truth[pred == c]).most_common(1)[0][1] for c in set(pred)) / 200
    assert s["purity"] == pytest.approx(purity, abs=1e-4)
    perfect = scores_from_counts(Counter({("a", 0): 5, ("b", 1): 3}))
    assert perfect["purity"] == perfect["nmi"] == perfect["ari"] == 1.0


def test_choose_k_finds_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4]
    x = np.concatenate([c + 0.05 * rng.standard_normal((10, 8)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k, scores = choose_k(x, 8, seed=0)
    assert k == 4 and max(scores, key=scores.get) == 4


def test_column_check_flags_minorities_and_names_the_column_they_belong_to():
    counts = Counter({("sa", 0): 18, ("sa", 2): 1, ("la_4ch", 2): 19, ("la_4ch", 0): 1,
                      ("la_2ch", 1): 20})
    checks = column_check(counts)
    assert checks[("sa", 2)] == {"flag": True, "share": round(1 / 19, 4), "looks_like": "la_4ch"}
    assert checks[("la_4ch", 0)]["flag"] and checks[("la_4ch", 0)]["looks_like"] == "sa"
    assert not any(checks[k]["flag"] for k in [("sa", 0), ("la_4ch", 2), ("la_2ch", 1)])
    mixed = column_check(Counter({("sa", 0): 12, ("sa", 1): 8}))   # two contrasts
    assert not any(v["flag"] for v in mixed.values())


def test_two_scales_and_encoder_shapes():
    stored = torch.rand(5, 1, 128, 128)
    x = two_scale(stored)
    assert x.shape == (5, 2, 64, 64)
    torch.testing.assert_close(x[:, 1], stored[:, 0, 32:96, 32:96])   # centre, full res
    torch.testing.assert_close(x[0, 0, 0, 0], stored[0, 0, :2, :2].mean())  # whole, half res
    model = SliceEncoder(EncoderConfig(widths=(4, 8, 16), clusters=3)).eval()
    z, logits = model(x)
    assert z.shape == (5, 64) and logits.shape == (5, 3)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert model.embed(x[:2]).shape == (2, 32)                    # mean and max pooled
    old = SliceEncoder(EncoderConfig.from_dict({"widths": [4, 8, 16]})).eval()
    assert old.cfg.pooling == "avg" and old.embed(x[:2]).shape == (2, 16)  # earlier cards
