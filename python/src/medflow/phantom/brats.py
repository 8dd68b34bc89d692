"""BraTS-style brain tumour phantom: four co-registered sequences, nested labels, ground truth.

A subject is drawn in two steps (sample, then apply): :func:`sample_brats_parameters` draws
every random number from a seeded generator into a plain dict, and :func:`render_brats`
turns that dict into volumes deterministically. The parameters go into ``truth.json``.

Geometry rule: voxels are isotropic with spacing ``max(1 mm, 192 mm / min(X, Y))``, so the
in-plane field of view is at least 192 mm and voxels are never finer than 1 mm. The default
96 x 96 x 64 gives 2 mm voxels; BraTS' 240 x 240 x 155 gives 1 mm. Anatomy is sized in
millimetres and centred in the field of view, so it has the same physical size at any shape.

Labels (BraTS up to 2021): 0 background, 1 necrosis / non-enhancing core, 2 oedema,
4 enhancing tumour; the enhancing rim surrounds the necrotic core, oedema surrounds both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from medflow.io.atomic import atomic_outputs
from medflow.io.images import write_nifti
from medflow.io.volume import Volume, make_affine

DEFAULT_SHAPE = (96, 96, 64)
MIN_FOV_MM = 192.0
SEQUENCES = ("t1", "t1ce", "t2", "flair")
# Tissue classes of the rendered class map (not the label map).
BG, CSF, GM, WM, NCR, ED, ET = range(7)
# Mean intensity per tissue class (BG, CSF, GM, WM, NCR, ED, ET), WM = 1000 on t1.
# Why: enhancing rim bright on t1ce, oedema bright on t2/flair, CSF dark on flair.
INTENSITY = {
    "t1": (0, 300, 700, 1000, 350, 600, 650),
    "t1ce": (0, 300, 700, 1000, 350, 650, 1900),
    "t2": (0, 1400, 700, 500, 1300, 1150, 850),
    "flair": (0, 150, 800, 600, 700, 1300, 1000),
}


def brats_spacing(shape: tuple[int, int, int]) -> float:
    """Isotropic voxel size (mm) for a phantom shape: ``max(1, 192 / min(X, Y))``."""
    return max(1.0, MIN_FOV_MM / min(shape[0], shape[1]))


def brats_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """RAS affine with the field of view centred on the world origin."""
    s = brats_spacing(shape)
    return make_affine((s, s, s), origin=-(np.asarray(shape[:3]) - 1) / 2.0 * s)


def world_axes(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) grids of voxel-centre coordinates in mm, centred on 0."""
    s = brats_spacing(shape)
    return tuple(((np.arange(n) - (n - 1) / 2.0) * s).reshape(
        [-1 if a == i else 1 for a in range(3)]) for i, n in enumerate(shape))


def smooth_field(shape: tuple[int, int, int], coarse: np.ndarray) -> np.ndarray:
    """Smoothly upsample a coarse grid of values to ``shape`` (separable Gaussian weights).

    Why separable: three small matrix products cost far less than a 3D filter at full size.
    """
    out = np.asarray(coarse, dtype=np.float64)
    for axis, n in enumerate(shape):
        g = out.shape[axis]
        pos = np.linspace(0, g - 1, n)[:, None]
        w = np.exp(-0.5 * ((pos - np.arange(g)[None, :]) / 0.7) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out.astype(np.float32)


def _unit_poly(rng: np.random.Generator, scale: float) -> list[float]:
    # Coefficients of a low-order polynomial on the unit sphere (x, y, z, xy, xz, yz, x2-y2).
    return (rng.normal(0, scale, size=7)).round(6).tolist()


def sample_brats_parameters(rng: np.random.Generator) -> dict:
    """Draw every random choice of one subject (anatomy, tumour, contrast, bias, noise).

    Args:
        rng: a seeded generator.

    Returns:
        A JSON-serialisable dict consumed by :func:`render_brats`.
    """
    hemi = rng.choice([-1.0, 1.0])
    r_core = float(rng.uniform(7, 12))
    return {
        "brain_radii_mm": (np.array([66.0, 82.0, 54.0])
                           * rng.uniform(0.93, 1.05, 3)).round(3).tolist(),
        "brain_poly": _unit_poly(rng, 0.03),
        "ventricle_offset_mm": float(rng.uniform(6, 10)),
        "tumour_centre_mm": [float(hemi * rng.uniform(22, 34)), float(rng.uniform(-30, 30)),
                             float(rng.uniform(-8, 18))],
        "necrosis_radius_mm": r_core,
        "rim_mm": float(rng.uniform(3, 5)),
        "oedema_mm": float(rng.uniform(8, 16)),
        "core_poly": _unit_poly(rng, 0.12),
        "oedema_poly": _unit_poly(rng, 0.18),
        "bumps": rng.normal(0, 1, size=(4, 6, 6, 5)).round(6).tolist(),
        "contrast_jitter": rng.uniform(0.92, 1.08, size=(4, 7)).round(4).tolist(),
        "bias_poly": rng.normal(0, 0.12, size=(4, 7)).round(4).tolist(),
        "noise_sd": float(rng.uniform(15, 30)),
        "noise_seed": int(rng.integers(2**31)),
    }


def _poly_on_sphere(coef, dx, dy, dz) -> np.ndarray:
    r = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    x, y, z = dx / r, dy / r, dz / r
    c = coef
    return c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * x * z + c[5] * y * z \
        + c[6] * (x * x - y * y)


def render_brats(params: dict, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Render a subject from its parameters (deterministic).

    Args:
        params: from :func:`sample_brats_parameters`.
        shape: volume shape (X, Y, Z).

    Returns:
        ``seg`` (uint8 labels 0/1/2/4), ``mask`` (uint8 brain mask), ``classes`` (uint8 tissue
        classes) and one float32 image per sequence (0 outside the brain).

    Example:
        >>> p = sample_brats_parameters(np.random.default_rng(0))
        >>> sorted(render_brats(p, (48, 48, 32)))[:3]
        ['classes', 'flair', 'mask']
    """
    x, y, z = world_axes(shape)
    rx, ry, rz = params["brain_radii_mm"]
    ell = np.sqrt((x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2)
    ell = ell * (1 + _poly_on_sphere(params["brain_poly"], x, y, z))
    depth = (1 - ell) * (rx + ry + rz) / 3  # approximate mm below the brain surface
    brain = depth > 0
    classes = np.where(depth > 7, WM, np.where(depth > 2.5, GM, CSF)).astype(np.uint8)
    vo = params["ventricle_offset_mm"]
    for side in (-1, 1):
        v = ((x - side * vo) / 6.0) ** 2 + ((y - 5) / 22.0) ** 2 + ((z - 8) / 9.0) ** 2
        classes[v < 1] = CSF
    cx, cy, cz = params["tumour_centre_mm"]
    dx, dy, dz = x - cx, y - cy, z - cz
    dist = np.sqrt(dx**2 + dy**2 + dz**2)
    bumps = np.asarray(params["bumps"])
    core_d = dist / (1 + _poly_on_sphere(params["core_poly"], dx, dy, dz)) \
        + 1.5 * smooth_field(shape, bumps[0])
    oed_d = dist / (1 + _poly_on_sphere(params["oedema_poly"], dx, dy, dz)) \
        + 3.0 * smooth_field(shape, bumps[1])
    r_ncr = params["necrosis_radius_mm"]
    r_et = r_ncr + params["rim_mm"]
    seg = np.zeros(shape, np.uint8)
    # Oedema: its own irregular outline, but always at least a 4 mm shell around the core.
    seg[(oed_d < r_et + params["oedema_mm"]) | (core_d < r_et + 4.0)] = 2
    seg[core_d < r_et] = 4
    seg[core_d < r_ncr] = 1
    seg[~brain] = 0
    for label, tissue in ((2, ED), (4, ET), (1, NCR)):
        classes[seg == label] = tissue
    classes[~brain] = BG
    out = {"seg": seg, "mask": brain.astype(np.uint8), "classes": classes}
    out.update(_render_sequences(params, classes, brain, x, y, z, bumps))
    return out


def _render_sequences(params, classes, brain, x, y, z, bumps) -> dict[str, np.ndarray]:
    noise_rng = np.random.default_rng(params["noise_seed"])
    shape = classes.shape
    texture = smooth_field(shape, bumps[2]) * 0.03 + smooth_field(shape, bumps[3]) * 0.02
    scale = max(float(np.max(np.abs(x))), 1.0)
    images = {}
    for i, name in enumerate(SEQUENCES):
        table = np.asarray(INTENSITY[name], np.float32) * np.asarray(
            params["contrast_jitter"][i], np.float32)
        img = table[classes]
        img = ndimage.gaussian_filter(img, 0.5) * (1 + texture)  # partial volume, texture
        bias = np.exp(_poly_on_sphere(params["bias_poly"][i], x, y, z)
                      * np.sqrt(x**2 + y**2 + z**2) / scale).astype(np.float32)
        img = img * bias + noise_rng.normal(0, params["noise_sd"], shape).astype(np.float32)
        # Skull-stripped like BraTS: zero outside, strictly positive inside (mask = image > 0).
        images[name] = np.where(brain, np.maximum(img, 1.0), 0).astype(np.float32)
    return images


def region_volumes_ml(seg: np.ndarray, spacing: float, et_label: int = 4) -> dict[str, float]:
    """WT, TC and ET volumes (mL) of a BraTS label map."""
    voxel_ml = spacing**3 / 1000.0
    return {"wt_ml": round(float(np.count_nonzero(seg)) * voxel_ml, 4),
            "tc_ml": round(float(np.count_nonzero((seg == 1) | (seg == et_label))) * voxel_ml, 4),
            "et_ml": round(float(np.count_nonzero(seg == et_label)) * voxel_ml, 4)}


def write_brats_subject(folder: Path, subject: str, seed: int,
                        shape: tuple[int, int, int] = DEFAULT_SHAPE,
                        with_predictions: bool = False,
                        subgroup: str | None = None) -> dict[str, str]:
    """Write one BraTS-style subject (sequences, labels, mask, truth.json) into ``folder``.

    Args:
        folder: existing output folder.
        subject: subject ID (recorded in truth.json).
        seed: the subject's seed; the same seed gives the same bytes.
        shape: volume shape; spacing follows :func:`brats_spacing`.
        with_predictions: also write ``pred``, ``unc_wt/tc/et`` and ``prob`` with controlled
            errors (see :mod:`medflow.phantom.brats_predictions`).
        subgroup: a heterogeneous cohort's subgroup (:mod:`medflow.phantom.subgroups`);
            None: the uniform phantom.

    Returns:
        Role -> file name in ``folder`` (t1, t1ce, t2, flair, seg, mask, truth, ...).

    Example:
        >>> write_brats_subject(Path("demo/sub-000"), "sub-000", 7)   # doctest: +SKIP
        {'t1': 't1.nii.gz', ..., 'truth': 'truth.json'}
    """
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    params = sample_brats_parameters(rng)
    if subgroup is not None:
        from medflow.phantom.subgroups import apply_brats_subgroup

        params = apply_brats_subgroup(params, subgroup, seed)
    vols = render_brats(params, shape)
    affine = brats_affine(shape)
    spacing = brats_spacing(shape)
    truth = {"subject": subject, "seed": seed, "shape": list(shape), "spacing_mm": spacing,
             "labels": {"1": "necrosis/non-enhancing core", "2": "oedema", "4": "enhancing"},
             "volumes": {**region_volumes_ml(vols["seg"], spacing),
                         "brain_ml": round(float(vols["mask"].sum()) * spacing**3 / 1000, 4)},
             "parameters": params}
    if subgroup is not None:
        truth["subgroup"] = subgroup
    outputs = {name: Volume(vols[name], affine) for name in SEQUENCES}
    outputs["seg"] = Volume(vols["seg"], affine, kind="label")
    outputs["mask"] = Volume(vols["mask"], affine, kind="label")
    if with_predictions:
        from medflow.phantom.brats_predictions import simulate_predictions

        extra, info = simulate_predictions(vols["seg"], vols["mask"], spacing, rng)
        outputs.update({k: Volume(v, affine, kind="label" if k == "pred" else "image")
                        for k, v in extra.items()})
        truth["predictions"] = info
    folder = Path(folder)
    roles = {name: f"{name}.nii.gz" for name in outputs}
    with atomic_outputs() as out:
        for name, vol in outputs.items():
            write_nifti(vol, out.path(folder / roles[name]))
        out.path(folder / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True)
                                                  + "\n")
    roles["truth"] = "truth.json"
    return roles
