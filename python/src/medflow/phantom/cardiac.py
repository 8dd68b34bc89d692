"""Synthetic cardiac cine subjects with analytic ground truth (``demo-cohort --kind cardiac``).

One subject = a :class:`~medflow.phantom.heart.HeartModel` (anatomy and motion) in a static
:class:`~medflow.phantom.thorax.Thorax`, imaged like UK Biobank: a short-axis cine stack
with per-slice breath-hold shifts, 2- and 4-chamber long-axis cines, their label maps, 3D
1.25 mm ground truth at ED and ES, and ``truth.json`` with the analytic volumes.

Random streams (all from the subject seed): ``[seed, 0]`` anatomy and motion, ``[seed, 1]``
surroundings and slice shifts, ``[seed, 2]`` appearance, ``[seed, 3]`` noise, ``[seed, 12]``
the heart rate. Changing the contrast therefore changes the images only, never the labels.

Time: each subject has a heart rate (55-80 bpm); the frames span one cardiac cycle, so the
frame interval is ``60 / (hr_bpm * frames)`` s, written as ``pixdim[4]`` (seconds) of every
cine NIfTI and as the TriggerTime step of the DICOM. ``image_format="ukbb"`` writes the
cines as UK Biobank zips instead (:mod:`medflow.phantom.ukbb`), voxel-equal to the NIfTI.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from medflow.io.atomic import atomic_outputs
from medflow.io.images import write_nifti
from medflow.io.sidecar import write_json
from medflow.io.volume import Volume
from medflow.phantom import cine_planes as cp
from medflow.phantom.appearance import (CONTRASTS, Appearance, bias_field, check_contrast,
                                       draw_appearance, render, render_noise_free,
                                       tissue_intensity)
from medflow.phantom.heart import MYOCARDIUM_DENSITY, HeartModel, tissue_to_label
from medflow.phantom.motion_truth import strain_truth
from medflow.phantom.thorax import Thorax, thorax_classes
from medflow.phantom.ukbb import HEART_RATE_BPM, draw_heart_rate, ukbb_roles, write_ukbb_cines

__all__ = ["CONTRASTS", "ROLES", "cine_series", "hr_image", "simulate_tissue",
           "subject_truth", "write_cardiac_subject"]

#: Samplesheet role -> file name written by :func:`write_cardiac_subject`.
ROLES = {"sa": "sa.nii.gz", "la_2ch": "la_2ch.nii.gz", "la_4ch": "la_4ch.nii.gz",
         "seg_sa": "seg_sa.nii.gz", "seg_la_2ch": "seg_la_2ch.nii.gz",
         "seg_la_4ch": "seg_la_4ch.nii.gz", "gt_ed": "gt_ed.nii.gz", "gt_es": "gt_es.nii.gz",
         "hr_ed": "hr_ed.nii.gz", "hr_es": "hr_es.nii.gz", "truth": "truth.json"}
LABEL_NAMES = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}


def frame_times(frames: int) -> np.ndarray:
    """Time of each cine frame as a fraction of the cardiac cycle (frame 0 = ED)."""
    return np.arange(frames) / frames


def simulate_tissue(heart: HeartModel, body: Thorax, points: np.ndarray,
                    times) -> np.ndarray:
    """Tissue classes of world points over time: the heart over the static thorax.

    Args:
        heart: the beating heart.
        body: its static surroundings.
        points: (..., 3) world RAS mm.
        times: cycle fractions, one per output frame.

    Returns:
        uint8 array (..., T): heart classes 1-6 where the heart is, else thorax 10-17.
    """
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    static = thorax_classes(flat, body, heart)
    # Only points that can ever be heart are pushed through the inverse mapping.
    r_max, z_min, z_max = heart.reach_heart()
    q = heart.to_heart(flat)
    near = np.flatnonzero((q[:, 0] ** 2 + q[:, 1] ** 2 <= r_max ** 2)
                          & (q[:, 2] >= z_min) & (q[:, 2] <= z_max))
    q_near, static_near = q[near], static[near]
    out = np.repeat(static[:, None], len(times), axis=1)
    for j, t in enumerate(times):
        cls = heart.tissue_ed_heart(heart.inverse_heart(q_near, float(t)))
        out[near, j] = np.where(cls > 0, cls, static_near)
    return out.reshape(*shape, len(times))


def cine_series(heart: HeartModel, body: Thorax, look: Appearance, affine: np.ndarray,
                shape, times, thickness_mm: float, rng: np.random.Generator,
                shifts_mm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels of one cine series on a grid.

    Args:
        heart, body, look: the subject.
        affine, shape: the grid (X, Y, Z); axis 2 is the slice normal.
        times: cycle fraction of each frame.
        thickness_mm: slice thickness; the image averages three planes across it (partial
            volume), the labels are those of the centre plane.
        rng: noise generator.
        shifts_mm: optional (Z, 2) breath-hold shifts (see :func:`cine_planes.grid_points`).

    Returns:
        (int16 image, uint8 labels), both (X, Y, Z, T).
    """
    centre = cp.grid_points(affine, shape, shifts_mm)
    tissue = simulate_tissue(heart, body, centre, times)
    ideal = tissue_intensity(tissue, look)
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    for offset in (-thickness_mm / 3.0, thickness_mm / 3.0):
        ideal += tissue_intensity(simulate_tissue(heart, body, centre + offset * normal, times),
                                  look)
    ideal /= 3.0
    # The coil does not move with breathing: the bias is sampled at the true positions.
    bias = bias_field(cp.grid_points(affine, shape).reshape(-1, 3), look).reshape(shape)
    pixel = float(np.linalg.norm(affine[:3, 0]))
    return render(ideal, bias, look, pixel, rng), tissue_to_label(tissue)


def hr_image(heart: HeartModel, body: Thorax, look: Appearance, affine: np.ndarray, shape,
             t: float) -> np.ndarray:
    """The subject at time ``t`` imaged on a 3D grid without noise (super-resolution truth).

    Same tissue intensities, coil bias and point spread as the cine (the PSF applied in
    all three axes, no slab averaging), no noise: what a noise-free isotropic acquisition of
    this heart would show. The grid is the ground-truth label grid, so ``hr_ed`` and
    ``gt_ed`` are voxel-aligned.

    Returns:
        int16 array of ``shape`` (X, Y, Z), same intensity scale as the cine images.
    """
    points = cp.grid_points(affine, shape).reshape(-1, 3)
    tissue = simulate_tissue(heart, body, points, [t])[:, 0].reshape(shape)
    bias = bias_field(points, look).reshape(shape)
    pixel = float(np.linalg.norm(affine[:3, 0]))
    return render_noise_free(tissue_intensity(tissue, look), bias, look, pixel)


def subject_truth(heart: HeartModel, frames: int) -> dict:
    """Analytic clinical measures of a heart (the keys carry their units)."""
    times = frame_times(frames)
    es_frame = int(round(heart.params.es_fraction * frames))
    ed, es = heart.volumes(0.0), heart.volumes(times[es_frame])
    per_frame = [heart.volumes(t) for t in times]
    truth = {
        "lvedv_ml": ed["lv_ml"], "lvesv_ml": es["lv_ml"],
        "lvef_pct": 100.0 * (1.0 - es["lv_ml"] / ed["lv_ml"]),
        "lv_myo_ml": ed["lv_myo_ml"], "lv_mass_g": MYOCARDIUM_DENSITY * ed["lv_myo_ml"],
        "rvedv_ml": ed["rv_ml"], "rvesv_ml": es["rv_ml"],
        "rvef_pct": 100.0 * (1.0 - es["rv_ml"] / ed["rv_ml"]),
        "ed_frame": 0, "es_frame": es_frame, "frames": frames,
        "frame_time_fraction": times.tolist(),
        "lv_volume_ml_per_frame": [v["lv_ml"] for v in per_frame],
        "rv_volume_ml_per_frame": [v["rv_ml"] for v in per_frame],
    }
    # Peak strain (global, AHA and long-axis segments) and ED wall thickness, with the
    # motion tool's definitions (medflow.cardiac.strain).
    truth.update(strain_truth(heart, frames))
    return truth


def write_cardiac_subject(folder: Path, subject: str, seed: int, frames: int = 20,
                          contrast: str = "ssfp", image_format: str = "nifti",
                          eid: int | None = None,
                          subgroup: str | None = None) -> dict[str, str]:
    """Write one synthetic cine subject (images, labels, 3D ground truth, truth.json).

    Args:
        folder: output folder (exists); files are written atomically inside it.
        subject: subject identifier, recorded in truth.json.
        seed: subject seed; the same seed (and arguments) gives the same bytes.
        frames: cine frames per cardiac cycle (>= 2); frame 0 is ED, ES lies on a frame.
        contrast: image appearance, one of :data:`CONTRASTS` (labels do not depend on it).
        image_format: ``"nifti"`` (``sa.nii.gz`` ...) or ``"ukbb"``: the cines as UK
            Biobank zips ``<eid>_20209_2_0.zip`` (short axis, one series per slice) and
            ``<eid>_20208_2_0.zip`` (2- and 4-chamber; the phantom has no 3-chamber view),
            with the same voxels and geometry; labels and truth stay NIfTI/JSON.
        eid: the UK Biobank-style participant number in zip names and PatientID
            (``"ukbb"`` only; default 1000000).
        subgroup: a heterogeneous cohort's subgroup (:mod:`medflow.phantom.subgroups`; it
            may change the heart and the contrast); None: the uniform phantom.

    Returns:
        Role -> file name inside ``folder`` (see :data:`ROLES`); for ``"ukbb"`` the image
        roles name a series inside a zip (``<zip>#<series>``).

    Note:
        Images are int16 magnitudes (brightest tissue ~1000), labels uint8 (0 background,
        1 LV blood pool, 2 LV myocardium, 3 RV blood pool). ``hr_ed``/``hr_es`` are the
        noise-free high-resolution images on the ``gt_*`` grid (:func:`hr_image`).
        ``slice_shifts_mm`` in
        truth.json holds, per short-axis slice, the displacement (mm, along the SA voxel
        axes i and j) of that slice's content, applied to ``sa`` and ``seg_sa`` alike; the
        long-axis images and the 3D ground truth are not shifted.
    """
    check_contrast(contrast)
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    if image_format not in ("nifti", "ukbb"):
        raise ValueError(f"image_format must be 'nifti' or 'ukbb', got {image_format!r}")
    folder = Path(folder)
    heart = HeartModel.from_seed(seed, frames)
    if subgroup is not None:
        from medflow.phantom.subgroups import cardiac_subgroup_params

        params, group_contrast = cardiac_subgroup_params(heart.params, subgroup, seed)
        heart, contrast = HeartModel(params), group_contrast or contrast
    scene_rng = np.random.default_rng([seed, 1])
    body = Thorax.around(heart, scene_rng)
    look = draw_appearance(contrast, np.random.default_rng([seed, 2]), heart.params.origin)
    noise_rng = np.random.default_rng([seed, 3])
    times = frame_times(frames)
    truth = subject_truth(heart, frames)
    hr_bpm, interval = draw_heart_rate(np.random.default_rng([seed, 12]), frames)

    volumes: dict[str, Volume] = {}
    sa_affine, sa_shape = cp.sa_geometry(heart)
    shifts = cp.draw_slice_shifts(scene_rng, sa_shape[2])
    series = [("sa", sa_affine, sa_shape, cp.SA_SLICE_THICKNESS_MM, shifts)]
    for view in ("2ch", "4ch"):
        series.append((f"la_{view}", *cp.la_geometry(heart, view), cp.LA_SLICE_THICKNESS_MM,
                       None))
    for role, affine, shape, thickness, shift in series:
        image, labels = cine_series(heart, body, look, affine, shape, times, thickness,
                                    noise_rng, shift)
        volumes[role] = Volume(image, affine, frame_interval_s=interval)
        volumes[f"seg_{role}"] = Volume(labels, affine, kind="label", frame_interval_s=interval)

    gt_affine, gt_shape = cp.gt_geometry(heart)
    gt_points = cp.grid_points(gt_affine, gt_shape).reshape(-1, 3)
    for role, t in (("gt_ed", 0.0), ("gt_es", times[truth["es_frame"]])):
        labels = heart.labels_at(gt_points, float(t)).reshape(gt_shape)
        volumes[role] = Volume(labels, gt_affine, kind="label")
    for role, t in (("hr_ed", 0.0), ("hr_es", times[truth["es_frame"]])):
        volumes[role] = Volume(hr_image(heart, body, look, gt_affine, gt_shape, float(t)),
                               gt_affine)

    units = sa_affine[:3, :2] / np.linalg.norm(sa_affine[:3, :2], axis=0)
    truth.update({
        "subject": subject, "seed": int(seed), "contrast": contrast,
        "slice_shifts_mm": shifts.tolist(),
        "slice_shifts_world_mm": (shifts @ units.T).tolist(),
        "slice_shift_convention": "content of SA slice k is displaced by +shift[k] along "
                                  "SA voxel axes (i, j); la_*, gt_* are not shifted",
        "sa_slice_thickness_mm": cp.SA_SLICE_THICKNESS_MM,
        "la_slice_thickness_mm": cp.LA_SLICE_THICKNESS_MM,
        "labels": LABEL_NAMES,
        "heart_to_world": heart.heart_to_world.tolist(),
        "model": heart.to_dict(), "thorax": asdict(body), "appearance": asdict(look),
        "hr_bpm": hr_bpm, "hr_range_bpm": list(HEART_RATE_BPM), "rr_interval_s": 60.0 / hr_bpm,
        "frame_interval_s": interval,
        "lv_cardiac_output_l_min": (truth["lvedv_ml"] - truth["lvesv_ml"]) * hr_bpm / 1000.0,
    })
    roles = dict(ROLES)
    if subgroup is not None:
        truth["subgroup"] = subgroup
    with atomic_outputs() as out:
        if image_format == "ukbb":
            eid = 1000000 if eid is None else int(eid)
            roles.update(ukbb_roles(eid))
            truth.update(eid=eid, image_format="ukbb")
            write_ukbb_cines(out, folder, eid, seed, volumes)
        for role, vol in volumes.items():
            if image_format == "nifti" or role not in ("sa", "la_2ch", "la_4ch"):
                write_nifti(vol, out.path(folder / ROLES[role]))
        write_json(truth, out.path(folder / ROLES["truth"]))
    return roles
