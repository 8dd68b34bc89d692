"""The ventricle-anatomy rule: blood pool outside the myocardial ring is not ventricle."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.cardiac import voxel_phenotypes
from medflow.cardiac.anatomy import enforce_ventricle_anatomy, lv_enclosure


def heart_slice(shape=(30, 30), lv_r=5.0, ring=True, rv=True, gap_deg=0.0, wall=2.0):
    """One short-axis slice: LV disc (1), a myocardial ring (2) ``wall`` pixels thick with
    an optional gap of ``gap_deg`` degrees (an outflow tract), an RV crescent (3) beside
    it."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    d = np.hypot(x - 12, y - 15)
    angle = np.degrees(np.arctan2(y - 15, x - 12)) % 360
    sl = np.zeros(shape, np.uint8)
    if rv:
        sl[(np.hypot(x - 12 - lv_r - 5, y - 15) < lv_r + 1) & (d >= lv_r + wall)] = 3
    if ring:
        sl[(d >= lv_r) & (d < lv_r + wall) & ~(angle < gap_deg)] = 2
    sl[d < lv_r] = 1
    return sl


def test_enclosure_of_closed_open_and_missing_rings():
    closed = heart_slice()
    assert lv_enclosure(closed, closed == 1) == 1.0
    missing = heart_slice(ring=False)
    assert lv_enclosure(missing, missing == 1) < 0.5
    lvot = heart_slice(gap_deg=90)                 # a quarter open: outflow tract, kept
    assert 0.6 < lv_enclosure(lvot, lvot == 1) < 0.9


def test_basal_atrium_at_end_systole_is_removed_and_the_ventricle_kept():
    """(X, Y, Z, T): slice 0 is ventricle at ED (ringed) and atrium at ES (a disc without a
    ring, plus the right atrium): the rule removes exactly the ES atrium."""
    ed, atrium = heart_slice(), heart_slice(ring=False)
    lab = np.stack([np.stack([ed, ed, ed], -1), np.stack([atrium, ed, ed], -1)], -1)
    before = lab.copy()
    fixed, removed = enforce_ventricle_anatomy(lab)
    assert np.array_equal(lab, before)                        # input untouched
    assert fixed.shape == lab.shape and fixed.dtype == lab.dtype
    assert not (fixed[..., 0, 1] > 0).any()                   # no LV, no RV left there
    assert np.array_equal(fixed[..., 0], lab[..., 0])         # ED frame unchanged
    assert np.array_equal(fixed[..., 1:, 1], lab[..., 1:, 1])  # other ES slices unchanged
    assert removed == {"lv_voxels": int((atrium == 1).sum()), "myo_voxels": 0,
                       "rv_voxels": int((atrium == 3).sum())}
    # the LVEF this changes, by hand: ED 3 slices of LV, ES 3 (wrong) vs 2 (right)
    spacing = (1.0, 1.0, 10.0)
    lv = int((ed == 1).sum())
    bad = voxel_phenotypes(lab, spacing)["lvef_pct"]
    good = voxel_phenotypes(fixed, spacing)["lvef_pct"]
    assert bad == pytest.approx(0.0) and good == pytest.approx(100 * (3 * lv - 2 * lv) / (3 * lv))


def test_outflow_tract_apex_and_a_slice_axis_elsewhere():
    lvot = heart_slice(gap_deg=90)
    apex = heart_slice(rv=False)                   # LV and myocardium without RV: kept
    lab = np.stack([lvot, apex], -1)
    fixed, removed = enforce_ventricle_anatomy(lab)
    assert np.array_equal(fixed, lab) and removed == {"lv_voxels": 0, "myo_voxels": 0, "rv_voxels": 0}
    # the same stack with the slices along axis 0
    moved = np.moveaxis(np.stack([heart_slice(ring=False), apex], -1), 2, 0)
    fixed0, removed0 = enforce_ventricle_anatomy(moved, slice_axis=0)
    assert not (fixed0[0] == 1).any() and np.array_equal(fixed0[1], apex)
    assert removed0["lv_voxels"] > 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="dimensions"):
        enforce_ventricle_anatomy(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="axis"):
        enforce_ventricle_anatomy(np.zeros((4, 4, 2, 2), np.uint8), slice_axis=3)


def stack(*slices):
    """(X, Y, Z) from (X, Y) slices, base first."""
    return np.stack(slices, -1)


def test_a_thin_ringed_atrium_is_removed_with_its_wall_and_the_right_atrium():
    """Rule 2: at ES the network rings the atrium with a thin 'myocardium' (the atrial
    wall); the frame's other slices have a wall three times thicker."""
    atrium = heart_slice(shape=(40, 40), lv_r=7, wall=1.0)
    mid = heart_slice(shape=(40, 40), lv_r=4, wall=4.0)
    lab = stack(atrium, mid, mid, mid)
    fixed, removed = enforce_ventricle_anatomy(lab, pixel_mm=(1.8, 1.8))
    assert lv_enclosure(atrium, atrium == 1) == 1.0            # rule 1 alone keeps it
    assert not (fixed[..., 0] > 0).any()                       # LV, wall and RV gone
    assert np.array_equal(fixed[..., 1:], lab[..., 1:])
    assert removed == {"lv_voxels": int((atrium == 1).sum()),
                       "myo_voxels": int((atrium == 2).sum()),
                       "rv_voxels": int((atrium == 3).sum())}
    assert wall_ratio(atrium, mid) < 0.55


def wall_ratio(a, b, pixel=(1.8, 1.8)):
    from medflow.cardiac.anatomy import lv_wall
    return lv_wall(a, a == 1, pixel)[0] / lv_wall(b, b == 1, pixel)[0]


def test_thin_walled_hearts_outflow_tracts_and_short_stacks_are_kept():
    # a dilated, thin-walled ventricle is thin in every slice: nothing to compare against
    thin = heart_slice(shape=(40, 40), lv_r=8, wall=1.0)
    lab = stack(thin, thin, thin, thin)
    assert np.array_equal(enforce_ventricle_anatomy(lab)[0], lab)
    # a basal slice at ED: wider cavity, the same wall; an outflow tract a quarter open
    base = heart_slice(shape=(40, 40), lv_r=7, wall=3.0)
    lvot = heart_slice(shape=(40, 40), lv_r=7, wall=3.0, gap_deg=90)
    mid = heart_slice(shape=(40, 40), lv_r=5, wall=3.0)
    for first in (base, lvot):
        lab = stack(first, mid, mid, mid)
        assert np.array_equal(enforce_ventricle_anatomy(lab, pixel_mm=(1.8, 1.8))[0], lab)
    # fewer than 3 slices with LV: no typical wall, rule 2 does not guess
    atrium = heart_slice(shape=(40, 40), lv_r=7, wall=1.0)
    lab = stack(atrium, mid, np.zeros_like(mid))
    assert np.array_equal(enforce_ventricle_anatomy(lab)[0], lab)
    # rule 2 switched off
    lab = stack(atrium, mid, mid, mid)
    assert np.array_equal(enforce_ventricle_anatomy(lab, min_wall_ratio=0.0)[0], lab)


def test_wall_thickness_is_the_annulus_width_in_mm():
    from medflow.cardiac.anatomy import lv_wall
    sl = heart_slice(shape=(60, 60), lv_r=10, wall=5.0, rv=False)
    t1, mask = lv_wall(sl, sl == 1, (1.0, 1.0))
    t2, _ = lv_wall(sl, sl == 1, (2.0, 2.0))
    assert t1 == pytest.approx(5.0, abs=0.5) and t2 == pytest.approx(2 * t1)
    assert mask.sum() == (sl == 2).sum()


def test_rv_blood_pool_in_a_slice_without_lv_blood_pool_is_right_atrium():
    """The base at ES keeps a ring of myocardium but no LV cavity: its RV is the right
    atrium. A slice with LV blood pool and myocardium keeps its RV."""
    mid = heart_slice()
    no_cavity = mid.copy()
    no_cavity[no_cavity == 1] = 0                     # myocardium and RV, no LV blood pool
    lab = stack(no_cavity, mid, mid)
    fixed, removed = enforce_ventricle_anatomy(lab)
    assert not (fixed[..., 0] == 3).any() and (fixed[..., 0] == 2).any()
    assert removed["rv_voxels"] == int((no_cavity == 3).sum())
    assert np.array_equal(fixed[..., 1:], lab[..., 1:])


def test_labels_outside_the_heart_are_removed_and_a_shifted_stack_is_kept():
    """Rule 0: blobs away from the heart (the network's false positives at the chest wall
    or the image edge) go; slices shifted in-plane by a breath hold stay one heart."""
    mid = heart_slice(shape=(60, 60), lv_r=5, wall=3.0)
    shifted = np.roll(mid, (3, -2), axis=(0, 1))           # a 5-6 mm breath-hold shift
    lab = stack(mid, shifted, mid, mid)
    blobs = lab.copy()
    blobs[50:54, 50:55, 1] = 3                              # an "RV" by the image edge
    blobs[2:4, 50:52, 2:4] = 2                              # "myocardium", two slices
    blobs[55:57, 2:4, 0] = 1                                # "LV"
    fixed, removed = enforce_ventricle_anatomy(blobs, pixel_mm=(1.8, 1.8))
    assert np.array_equal(fixed, lab)
    assert removed == {"lv_voxels": 4, "myo_voxels": 8, "rv_voxels": 20}
    # a 4D cine: each frame on its own (the blob in frame 1 only)
    cine = np.stack([lab, blobs], -1)
    fixed4, removed4 = enforce_ventricle_anatomy(cine, pixel_mm=(1.8, 1.8))
    assert np.array_equal(fixed4, np.stack([lab, lab], -1)) and removed4 == removed


def test_rv_fix_moves_rvef_towards_truth():
    """What users read: stray RV at end systole lowers RVEF; rule 0 restores the number
    counted by hand on the heart alone."""
    ed = heart_slice(shape=(60, 60), lv_r=5, wall=3.0)
    es = heart_slice(shape=(60, 60), lv_r=4, wall=4.0)
    es_blob = es.copy()
    es_blob[45:55, 45:55] = 3
    lab = np.stack([stack(ed, ed, ed), stack(es_blob, es, es)], -1)
    spacing = (1.0, 1.0, 10.0)
    rv_ed, rv_es = 3 * (ed == 3).sum(), 3 * (es == 3).sum()
    fixed, _ = enforce_ventricle_anatomy(lab)
    assert voxel_phenotypes(fixed, spacing)["rvef_pct"] == pytest.approx(
        100 * (rv_ed - rv_es) / rv_ed)
    assert voxel_phenotypes(lab, spacing)["rvef_pct"] < voxel_phenotypes(fixed, spacing)["rvef_pct"] - 5



def per_component_reference(frame, pixel_mm, min_enclosure=0.5, min_wall_ratio=0.55):
    """Rules 0-3 as first written (one full-plane dilation and distance transform per
    LV component, with :func:`lv_enclosure` and :func:`lv_wall`): the oracle for the
    batched code. Returns the fixed frame and the removed-voxel counts."""
    from scipy import ndimage as ndi

    from medflow.cardiac.anatomy import MIN_SLICES_FOR_WALL, lv_wall, outside_heart

    frame = frame.copy()
    removed = {"lv_voxels": 0, "myo_voxels": 0, "rv_voxels": 0}
    stray = outside_heart(frame)
    for value, key in ((1, "lv_voxels"), (2, "myo_voxels"), (3, "rv_voxels")):
        removed[key] += int((frame[stray] == value).sum())
    frame[stray] = 0
    comps, atrial = [], np.zeros(frame.shape[2], np.int64)
    for z in range(frame.shape[2]):
        plane = frame[..., z]
        labelled, n = ndi.label(plane == 1)
        for i in range(1, n + 1):
            comp = labelled == i
            if lv_enclosure(plane, comp) < min_enclosure:
                plane[comp] = 0
                atrial[z] += int(comp.sum())
            else:
                comps.append((z, comp, *lv_wall(plane, comp, pixel_mm)))
    largest = {}
    for z, comp, thick, _ in comps:
        if comp.sum() > largest.get(z, (0, 0.0))[0]:
            largest[z] = (int(comp.sum()), thick)
    if len(largest) >= MIN_SLICES_FOR_WALL:
        typical = float(np.median([t for _, t in largest.values()]))
        for z, comp, thick, wall in comps:
            if thick < min_wall_ratio * typical:
                plane = frame[..., z]
                atrial[z] += int(comp.sum())
                removed["myo_voxels"] += int((wall & (plane == 2)).sum())
                plane[comp | (wall & (plane == 2))] = 0
    removed["lv_voxels"] += int(atrial.sum())
    for z in range(frame.shape[2]):
        plane = frame[..., z]
        if atrial[z] and (plane == 1).sum() < 0.1 * atrial[z]:
            for value, key in ((1, "lv_voxels"), (2, "myo_voxels")):
                removed[key] += int((plane == value).sum())
                plane[plane == value] = 0
        if (plane == 3).any() and not ((plane == 2).any() and (plane == 1).any()):
            removed["rv_voxels"] += int((plane == 3).sum())
            plane[plane == 3] = 0
    return frame, removed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rules_on_noisy_predictions_match_the_per_component_definition(seed):
    """A noisy label map (an untrained or out-of-domain model: hundreds of tiny LV
    components per slice) gets exactly what one dilation and one distance transform per
    component gives; batching the rim counts and measuring each wall in the component's
    box change only the cost (a random-weight cascade's 20-frame cine: 295 s of the
    rule before, see benchmarks/segment/README.md)."""
    rng = np.random.default_rng(seed)
    heart = np.stack([heart_slice((60, 50), lv_r=r, wall=w)
                      for r, w in ((8, 4), (7, 4), (6, 3), (5, 1), (4, 3))], -1)
    noise = rng.choice(4, size=heart.shape, p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
    patchy = rng.random(heart.shape) < 0.3 * seed / 2          # seed 0: the clean heart
    frames = np.stack([np.where(patchy, noise, heart), heart], -1).astype(np.uint8)
    pixel = (1.8, 1.2)
    got, removed = enforce_ventricle_anatomy(frames, pixel_mm=pixel)
    want = [per_component_reference(frames[..., t], pixel) for t in range(2)]
    assert np.array_equal(got, np.stack([w[0] for w in want], -1))
    assert removed == {k: sum(w[1][k] for w in want) for k in removed}
    assert removed["myo_voxels"] > 0          # rule 2 removed the thin (atrial) ring
