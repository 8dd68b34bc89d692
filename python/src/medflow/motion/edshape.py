"""A high-resolution end-diastolic shape (``--ed-shape``) as extra slicer planes of the ED fit.

``super-resolve predict`` writes a motion-corrected 3D label map of the ED heart (1.25 mm
isotropic, world space). The acquired short-axis stack sees the heart only every 10 mm,
each slice displaced by its own breath-hold, so the mesh's base, apex and the shape between
slices rest on the template. Planes cut from the 3D map every few millimetres along each of
its three axes carry that shape to the same slicer loss the acquired planes use: no new
loss, no new gradient code. They are *unshifted* (the shape is already motion-corrected),
so they also anchor where the per-slice shifts put each short-axis slice. Together they
weigh ``FitOptions.ed_shape_weight`` (0.3) times the acquired planes, in the ED fit only:
the acquired planes stay in it, and motion tracking from ED reads the acquired planes
alone, as without the option.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nibabel.affines import apply_affine

from medflow.cardiac.labels import LABEL_NAMES, LV_BLOOD, LV_MYO, RV_BLOOD
from medflow.errors import InvalidDataError
from medflow.io.images import read_image
from medflow.io.volume import nearest_on
from medflow.motion.slicer import PlaneTargets
from medflow.motion.targets import View, build_targets

#: The map must be a 3D shape, not another thick-slice stack: every voxel edge at most this.
MAX_VOXEL_MM = 3.0
#: LV blood pool and myocardium must each fill at least this much (mL): an ED LV is ~100 mL.
MIN_LV_ML = 5.0
#: At least this fraction of the map's LV voxels must lie inside the stack's field of view.
MIN_OVERLAP = 0.5
#: The map's LV (blood pool + myocardium), read at the stack's ED voxel centres, must reach
#: this Dice with the stack's own ED LV. The subject's own super-resolved map scored 0.85-0.93
#: on the demo cohort (breath-hold shifts and 10 mm slices included), another subject's map
#: in the same scanner frame 0.13-0.49 (session 10's check): a map that overlaps the stack
#: but is not this heart would otherwise pull the ED mesh silently.
MIN_AGREEMENT = 0.6
KNOWN_LABELS = (0, 1, 2, 3, 4, 5)   # atria (4, 5) read as background, as in the cines
HEART = (LV_BLOOD, LV_MYO, RV_BLOOD)


def read_ed_shape(path: str | Path, sa: View) -> View:
    """Read and check a high-resolution ED label map against the short-axis stack.

    Args:
        path: 3D label map (X, Y, Z), or 4D with one frame; UK Biobank labels (0-3,
            atria 4-5 read as background); voxel edges up to 3 mm; world-space affine.
        sa: the short-axis view (its affine and shape give the stack's field of view).

    Returns:
        The map as a one-frame :class:`View` named ``"ed_shape"`` (labels (X, Y, Z, 1)).

    Raises:
        MissingInputError: the file does not exist (66).
        InvalidDataError: unreadable; not 3D; unknown labels; voxels over 3 mm; under
            5 mL of LV blood pool or myocardium; or under half of its LV inside the
            short-axis stack's field of view; or its LV disagrees with the stack's ED
            LV (Dice under 0.6: another subject's map) (65). The message names the file.
    """
    vol = read_image(path, kind="label")
    data = np.asarray(vol.data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidDataError(f"--ed-shape must be one 3D label map (X, Y, Z), got shape "
                               f"{list(data.shape)}", path)
    unknown = sorted(int(v) for v in np.unique(data) if int(v) not in KNOWN_LABELS)
    if unknown:
        raise InvalidDataError(f"--ed-shape holds unknown label value(s) {unknown[:5]}: not "
                               "a segmentation with UK Biobank labels (0-3)", path)
    affine = np.asarray(vol.affine, np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or spacing.max() > MAX_VOXEL_MM or spacing.min() <= 0:
        raise InvalidDataError(f"--ed-shape voxels are {np.round(spacing, 2).tolist()} mm: "
                               f"a 3D shape needs every edge in (0, {MAX_VOXEL_MM:g}] mm (a "
                               "thick-slice stack is not one)", path)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for label in (LV_BLOOD, LV_MYO):
        ml = np.count_nonzero(data == label) * voxel_ml
        if ml < MIN_LV_ML:
            raise InvalidDataError(f"--ed-shape has {ml:.1f} mL of {LABEL_NAMES[label]} "
                                   f"(label {label}; at least {MIN_LV_ML:g} mL needed): "
                                   "no LV to fit", path)
    inside = _inside_stack(np.argwhere(np.isin(data, (LV_BLOOD, LV_MYO))), affine, sa)
    if inside < MIN_OVERLAP:
        raise InvalidDataError(f"--ed-shape does not overlap the short-axis stack: "
                               f"{100 * inside:.0f}% of its LV lies inside the stack's field "
                               f"of view (at least {100 * MIN_OVERLAP:.0f}% needed; another "
                               "subject, or a wrong affine?)", path)
    dice = lv_agreement(data, affine, sa)
    if dice < MIN_AGREEMENT:
        raise InvalidDataError(f"--ed-shape is not this heart: its LV agrees with the "
                               f"short-axis stack's ED LV with Dice {dice:.2f} (at least "
                               f"{MIN_AGREEMENT:g} needed; another subject's map?)", path)
    return View("ed_shape", data.astype(np.uint8, copy=False)[..., None], affine)


def lv_agreement(data: np.ndarray, affine: np.ndarray, sa: View) -> float:
    """Dice of the LV (blood pool + myocardium) between the short-axis stack's ED frame
    and the map (X, Y, Z) read at the stack's voxel centres (nearest voxel; outside the
    map counts as background)."""
    ed = np.isin(sa.labels[..., 0], (LV_BLOOD, LV_MYO))
    read = np.isin(nearest_on(data, affine, sa.affine, ed.shape), (LV_BLOOD, LV_MYO))
    total = int(ed.sum()) + int(read.sum())
    return 2.0 * float((ed & read).sum()) / total if total else 0.0


def _inside_stack(ijk: np.ndarray, affine: np.ndarray, sa: View) -> float:
    """Fraction of voxels (N, 3) of a map whose centres lie in the stack's field of view
    (in-plane within its pixels, through-plane within half a slice of its first/last)."""
    if not len(ijk):
        return 0.0
    sa_ijk = apply_affine(np.linalg.inv(sa.affine) @ affine, ijk.astype(np.float64))
    shape = np.asarray(sa.labels.shape[:3], np.float64)
    return float(np.all((sa_ijk > -0.5) & (sa_ijk < shape - 0.5), axis=1).mean())


def _axis_view(shape: View, axis: int, spacing_mm: float) -> View:
    """The map's planes normal to voxel ``axis``, every ``spacing_mm``, over the heart
    (and one plane beyond each end, where the labels say the heart has ended)."""
    order = [(axis + 1) % 3, (axis + 2) % 3, axis]   # cyclic: world handedness is kept
    data = np.transpose(shape.labels, (*order, 3))
    affine = shape.affine.copy()
    affine[:3, :3] = shape.affine[:3, order]
    voxel = float(np.linalg.norm(affine[:3, 2]))
    step = max(1, round(spacing_mm / voxel))
    ks = np.nonzero(np.isin(data[..., 0], HEART).any((0, 1)))[0]
    first = max(int(ks.min()) - step, 0)
    last = min(int(ks.max()) + step, data.shape[2] - 1)
    # Plane k' of the subsampled grid is plane first + k' * step of the map.
    sub = affine.copy()
    sub[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, first]) + affine[:3, 3]
    sub[:3, 2] = affine[:3, 2] * step
    return View(f"ed_shape_{'ijk'[axis]}", data[:, :, first:last + 1:step], sub)


def shape_targets(shape: View, spacing_mm: float, total_weight: float,
                  dtype=torch.float32) -> tuple[PlaneTargets, list[tuple[str, int]]]:
    """One-frame slicer targets of the map's planes along its three voxel axes.

    Args:
        shape: from :func:`read_ed_shape`.
        spacing_mm: distance between planes along each axis, mm.
        total_weight: the planes' weights sum to this (each plane the same share), so the
            caller states how much the whole shape weighs against the acquired planes.

    Returns:
        (targets (1 frame, P planes, unshifted: ``shift_index`` -1), planes
        ``[("ed_shape_i" | "_j" | "_k", index), ...]``).
    """
    views = [_axis_view(shape, axis, spacing_mm) for axis in range(3)]
    n = sum(v.labels.shape[2] for v in views)
    each = total_weight / max(n, 1)
    return build_targets(views, {v.name: each for v in views}, dtype)


def concat_targets(a: PlaneTargets, b: PlaneTargets) -> PlaneTargets:
    """Planes of ``a`` then ``b`` (same frame count); distance maps padded to one size with
    the far-outside value build_targets pads with (the size field keeps lookups inside)."""
    if a.sdf.shape[0] != b.sdf.shape[0]:
        raise ValueError(f"frame counts differ: {a.sdf.shape[0]} and {b.sdf.shape[0]}")
    H = max(a.sdf.shape[-2], b.sdf.shape[-2])
    W = max(a.sdf.shape[-1], b.sdf.shape[-1])

    def pad(sdf: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(sdf, (0, W - sdf.shape[-1], 0, H - sdf.shape[-2]),
                                       value=1e3)

    # per-plane fields stack on dim 0; per-frame fields (T, P, ...) on the plane dim 1
    per_plane = ("origin", "normal", "u", "v", "pixel", "crop", "size", "weight",
                 "shift_index")
    fields = {f: torch.cat([getattr(a, f), getattr(b, f)]) for f in per_plane}
    fields |= {f: torch.cat([getattr(a, f), getattr(b, f)], dim=1)
               for f in ("present", "area", "perimeter")}
    return PlaneTargets(sdf=torch.cat([pad(a.sdf), pad(b.sdf)], dim=1), **fields)


def ed_targets(targets: PlaneTargets, shape: View, spacing_mm: float,
               relative_weight: float) -> tuple[PlaneTargets, int]:
    """Frame 0 of the acquired ``targets`` plus the map's planes, which together weigh
    ``relative_weight`` times the acquired planes' total weight. Returns (targets, number
    of planes added)."""
    ed = targets.frames(slice(0, 1))
    extra, planes = shape_targets(shape, spacing_mm,
                                  relative_weight * float(ed.weight.sum()), ed.sdf.dtype)
    return concat_targets(ed, extra), len(planes)
