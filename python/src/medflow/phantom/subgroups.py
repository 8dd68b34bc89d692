"""Heterogeneous cohorts (``demo-cohort --heterogeneous``): known subgroups of different
difficulty and frequency, so that choosing which subjects to annotate matters.

A uniform phantom cohort makes every annotation strategy equal: any few subjects teach a
model everything. Real cohorts have rare tumour shapes and sizes, a minority scanner or
sequence, unusual hearts. Here each subject belongs to one named subgroup, which changes its
drawn parameters (sample, then apply: the subject's usual draw first, then
:func:`apply_brats_subgroup` / :func:`cardiac_subgroup_params` modify the drawn values with
numbers from an independent stream), so the common subgroup is exactly the uniform cohort.

Assignment is by block: every ``BLOCK`` consecutive subjects hold each subgroup exactly
``count`` times, in a seeded order, so frequencies are exact and adding subjects never
changes the subgroup of the others. The subgroup is written to ``truth.json`` and to the
samplesheet's ``subgroup`` column.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

BLOCK = 20

#: name -> (subjects per block of 20, what it is). Difficulty is stated for a model that
#: has never seen the subgroup.
BRATS_SUBGROUPS: dict[str, tuple[int, str]] = {
    "common": (14, "the uniform phantom: tumour core 7-12 mm, oedema 8-16 mm, one scanner"),
    "small": (3, "small tumours: core 2.5-4 mm, rim 2-3 mm, oedema 3-6 mm (few voxels; hard)"),
    "scanner_b": (2, "a minority scanner: weak oedema/enhancement contrast, grey-white "
                     "contrast reversed on t1, 2.5x bias field, 1.5x noise (domain shift)"),
    "diffuse": (1, "rare diffuse tumours: small core, oedema 22-32 mm with very irregular "
                   "outline (rare shape and size)"),
}
CARDIAC_SUBGROUPS: dict[str, tuple[int, str]] = {
    "common": (14, "the uniform phantom: SSFP, LV semi-axis 24-32 mm, wall 7-11 mm"),
    "hypertrophic": (3, "thick walls 14-18 mm, small cavity (LV semi-axis x0.75), LVEF "
                        "60-75 %"),
    "gre": (2, "a minority sequence: spoiled GRE appearance (weak blood-myocardium "
               "contrast; domain shift)"),
    "dilated": (1, "rare dilated LV: semi-axes x1.3/x1.12, thin wall 5-7 mm, LVEF 15-30 %"),
}
SUBGROUPS = {"brats": BRATS_SUBGROUPS, "cardiac": CARDIAC_SUBGROUPS}


def subgroup_of(kind: str, seed: int, index: int) -> str:
    """The subgroup of subject ``index`` of a cohort drawn with ``seed``.

    Args:
        kind: ``brats`` or ``cardiac``.
        seed: the cohort seed (``demo-cohort --seed``).
        index: the subject's position in the cohort (0-based).

    Returns:
        The subgroup name (a key of :data:`BRATS_SUBGROUPS` / :data:`CARDIAC_SUBGROUPS`).

    Example:
        >>> [subgroup_of("brats", 0, i) for i in range(20)].count("small")
        3
    """
    if kind not in SUBGROUPS:
        raise ValueError(f"no subgroups for {kind!r}; only {sorted(SUBGROUPS)}")
    slots = [name for name, (count, _) in SUBGROUPS[kind].items() for _ in range(count)]
    block, pos = divmod(int(index), BLOCK)
    order = np.random.default_rng([int(seed), 1404, block]).permutation(len(slots))
    return slots[int(order[pos])]


def _stream(seed: int) -> np.random.Generator:
    # Independent of every stream the writers already use ([seed], [seed, 0..3]).
    return np.random.default_rng([int(seed), 1405])


def apply_brats_subgroup(params: dict, subgroup: str, seed: int) -> dict:
    """A copy of BraTS phantom parameters changed for ``subgroup`` (``common``: unchanged).

    Only keys that :func:`medflow.phantom.brats.render_brats` already reads are changed
    (tumour radii and outline coefficients, contrast multipliers, bias and noise).
    """
    if subgroup not in BRATS_SUBGROUPS:
        raise ValueError(f"unknown brats subgroup {subgroup!r}; one of {list(BRATS_SUBGROUPS)}")
    p = dict(params)
    rng = _stream(seed)
    if subgroup == "small":
        p.update(necrosis_radius_mm=float(rng.uniform(2.5, 4)), rim_mm=float(rng.uniform(2, 3)),
                 oedema_mm=float(rng.uniform(3, 6)))
    elif subgroup == "diffuse":
        p.update(necrosis_radius_mm=float(rng.uniform(3, 5)), rim_mm=float(rng.uniform(2, 3)),
                 oedema_mm=float(rng.uniform(22, 32)),
                 oedema_poly=rng.normal(0, 0.35, size=7).round(6).tolist())
    elif subgroup == "scanner_b":
        # Multipliers per sequence (t1, t1ce, t2, flair) and tissue (BG, CSF, GM, WM, NCR,
        # ED, ET): grey brighter than white on t1, oedema and enhancement close to the
        # surrounding tissue.
        gain = np.ones((4, 7))
        gain[0, 2], gain[0, 3] = 1.35, 0.75
        gain[1, 6], gain[1, 2], gain[1, 3] = 0.5, 1.35, 0.75
        gain[2, 5], gain[2, 2] = 0.75, 1.3
        gain[3, 5], gain[3, 2] = 0.72, 1.15
        p["contrast_jitter"] = (np.asarray(p["contrast_jitter"]) * gain).round(4).tolist()
        p["bias_poly"] = (np.asarray(p["bias_poly"]) * 2.5).round(4).tolist()
        p["noise_sd"] = float(p["noise_sd"]) * 1.5
    return p


def cardiac_subgroup_params(heart_params, subgroup: str, seed: int):
    """(heart parameters, contrast) of a cardiac subject in ``subgroup``.

    Args:
        heart_params: the subject's drawn :class:`medflow.phantom.heart.HeartParams`.
        subgroup: a key of :data:`CARDIAC_SUBGROUPS`.
        seed: the subject seed (for the subgroup's own draws).

    Returns:
        (HeartParams, contrast name or None to keep the cohort's). The RV crescent keeps
        its size relative to the LV.
    """
    if subgroup not in CARDIAC_SUBGROUPS:
        raise ValueError(f"unknown cardiac subgroup {subgroup!r}; "
                         f"one of {list(CARDIAC_SUBGROUPS)}")
    rng = _stream(seed)
    hp = heart_params
    if subgroup == "gre":
        return hp, "gre"
    if subgroup == "common":
        return hp, None
    if subgroup == "hypertrophic":
        a, c = hp.a * 0.75, hp.c * 0.95
        new = dict(a=a, c=c, w=float(rng.uniform(14, 18)), lvef=float(rng.uniform(0.6, 0.75)))
    else:  # dilated
        a, c = hp.a * 1.3, hp.c * 1.12
        new = dict(a=a, c=c, w=float(rng.uniform(5, 7)), lvef=float(rng.uniform(0.15, 0.3)))
    new["rvef"] = float(np.clip(new["lvef"] + 0.05, 0.2, 0.72))
    volume_ratio = (new["a"] ** 2 * new["c"]) / (hp.a ** 2 * hp.c)
    new["rv_q"] = float(hp.rv_q * volume_ratio * hp.rv_c / (hp.rv_c * c / hp.c))
    new["rv_c"] = float(hp.rv_c * c / hp.c)
    return replace(hp, **{k: float(v) for k, v in new.items()}), None
