"""Synthetic ultra-high-resolution microCT volumes with three classes of thin structures.

One subject is one large single-channel scan (the cascaded-segmentation paper works on
~250-million-voxel microCT volumes) of a perfused soft-tissue biopsy at 20 um isotropic
voxels: 0 background tissue, 1 vessels, 2 membranes, 3 beads (see
:mod:`medflow.phantom.microct_shapes`). The image has class-dependent grey values,
partial-volume edges, a Gaussian point-spread function, cupping and slow shading, and
signal-dependent noise; it is stored as int16 (NIfTI's most portable 16-bit type; values
stay far inside its range), the labels as uint8.

The volume is never held in memory: it is drawn slab by slab along k (the slowest axis of a
NIfTI file, so each slab is one contiguous run of bytes), each slab from the primitives whose
boxes reach it plus a halo for the blur, and appended to uncompressed ``.nii`` files that
readers can memory-map. Peak memory depends on the slab size, not on the volume.

Sample, then apply: :func:`sample_microct_scene` draws every random parameter from the seed;
:func:`render_microct_slab` is a deterministic function of the scene and the slab.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medflow.io.atomic import atomic_outputs
from medflow.io.sidecar import write_json
from medflow.io.volume import make_affine
from medflow.phantom.microct_nifti import start_nifti, write_planes
from medflow.phantom.microct_shapes import (MicroCTConfig, Primitives, rasterise, sample_beads,
                                            sample_membranes, sample_vessels)

log = logging.getLogger("medflow")

LABELS = {0: "background tissue", 1: "vessel", 2: "membrane", 3: "bead"}
#: Where classes overlap the later one in this order wins (beads sit on vessels on membranes).
PRECEDENCE = (2, 1, 3)
#: Voxels per slab (before the halo): about 40 MB per float32 work array.
SLAB_VOXELS = 8_000_000

__all__ = ["LABELS", "MicroCTConfig", "MicroCTScene", "microct_affine", "render_microct_slab",
           "sample_microct_scene", "write_microct_subject", "write_microct_volumes"]


@dataclass
class MicroCTScene:
    """Everything random about one phantom, drawn once from the seed.

    Attributes:
        shape: volume shape (X, Y, Z).
        seed: the subject seed (also seeds the per-plane noise).
        config: the fixed numbers.
        primitives: class label -> its primitives.
        shading: per-axis low-frequency shading, rows (amplitude, cycles per FOV, phase).
        summary: per-class structure parameters for ``truth.json``.
    """

    shape: tuple[int, int, int]
    seed: int
    config: MicroCTConfig
    primitives: dict[int, Primitives]
    shading: np.ndarray
    summary: dict = field(default_factory=dict)


def sample_microct_scene(shape: tuple[int, int, int], seed: int,
                         config: MicroCTConfig | None = None) -> MicroCTScene:
    """Draw the structures and appearance parameters of one microCT phantom.

    Args:
        shape: volume shape (X, Y, Z) in voxels, each at least 8.
        seed: any non-negative int; the same seed and shape give the same scene.
        config: sizes, densities and grey values (default :class:`MicroCTConfig`).

    Returns:
        The scene; primitive counts grow with the field of view (densities per mm^3).

    Example:
        >>> scene = sample_microct_scene((48, 40, 32), seed=0)
        >>> sorted(scene.primitives)
        [1, 2, 3]
    """
    cfg = config or MicroCTConfig()
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {shape}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    vessels, vs = sample_vessels(rng, shape, cfg)
    membranes, ms = sample_membranes(rng, shape, cfg)
    beads, bs = sample_beads(rng, shape, cfg)
    amp = cfg.shading * rng.uniform(0.5, 1.0, size=3)
    shading = np.column_stack([amp, rng.uniform(0.5, 1.5, size=3),
                               rng.uniform(0, 2 * np.pi, size=3)])
    summary = {"vessels": vs, "membranes": ms, "beads": bs,
               "shading_amplitude_cycles_phase": shading.round(6).tolist()}
    return MicroCTScene(shape, int(seed), cfg, {1: vessels, 2: membranes, 3: beads},
                        shading, summary)


def _halo(cfg: MicroCTConfig) -> tuple[float, int]:
    sigma = cfg.psf_sigma_mm / cfg.voxel_mm
    return sigma, (int(4.0 * sigma + 0.5) if sigma > 0 else 0)


def _shading_planes(scene: MicroCTScene, k0: int, k1: int) -> np.ndarray:
    # Cupping (darker centre, radial about the k rotation axis) plus one slow cosine per
    # axis; each factor is computed on its whole axis, then sliced: slab-independent.
    nx, ny, nz = scene.shape
    axes = [np.arange(n, dtype=np.float64) for n in scene.shape]
    waves = [a * np.cos(2 * np.pi * c * x / n + ph)
             for x, n, (a, c, ph) in zip(axes, scene.shape, scene.shading)]
    u = (axes[0] - (nx - 1) / 2)[:, None] / (nx / 2)
    v = (axes[1] - (ny - 1) / 2)[None, :] / (ny / 2)
    plane = 1.0 + scene.config.cupping * ((u * u + v * v) / 2 - 0.5) + waves[0][:, None] \
        + waves[1][None, :]
    return (plane[:, :, None] + waves[2][None, None, k0:k1]).astype(np.float32)


def _noise_planes(seed: int, k0: int, k1: int, nx: int, ny: int) -> np.ndarray:
    # One generator per k plane: the noise of a voxel never depends on the slab size.
    out = np.empty((nx, ny, k1 - k0), dtype=np.float32)
    for k in range(k0, k1):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2, k]))
        out[:, :, k - k0] = rng.standard_normal((ny, nx), dtype=np.float32).T
    return out


def render_microct_slab(scene: MicroCTScene, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw planes ``k0 .. k1 - 1`` of the image and the label map.

    Args:
        scene: from :func:`sample_microct_scene`.
        k0, k1: plane range along the last axis, ``0 <= k0 < k1 <= Z``.

    Returns:
        ``(image, labels)``: int16 and uint8 arrays of shape (X, Y, k1 - k0).

    Note:
        Bit-identical to the same planes of any other slab partition: occupancies are
        order-independent maxima, the blur reads a halo of ``4 sigma`` planes, the shading
        is separable and the noise is seeded per plane.
    """
    nx, ny, nz = scene.shape
    if not 0 <= k0 < k1 <= nz:
        raise ValueError(f"slab {k0}:{k1} is outside 0:{nz}")
    cfg = scene.config
    sigma, halo = _halo(cfg)
    e0, e1 = max(0, k0 - halo), min(nz, k1 + halo)
    occ = {c: np.zeros((nx, ny, e1 - e0), dtype=np.float32) for c in PRECEDENCE}
    for c in PRECEDENCE:
        rasterise(scene.primitives[c], occ[c], e0)
    core = slice(k0 - e0, k1 - e0)
    labels = np.zeros((nx, ny, k1 - k0), dtype=np.uint8)
    for c in PRECEDENCE:
        labels[occ[c][:, :, core] >= 0.5] = c
    # Composite material contrast with the same precedence: a voxel's free fraction is
    # shared out from the top class down, then the whole field is blurred by the PSF.
    bg = cfg.intensities[0]
    contrast = np.zeros_like(occ[1])
    free = np.ones_like(occ[1])
    for c in PRECEDENCE[::-1]:
        part = occ.pop(c)
        part *= free
        free -= part
        contrast += np.float32(cfg.intensities[c] - bg) * part
        del part
    del free
    if sigma > 0:
        contrast = gaussian_filter(contrast, sigma, mode="nearest", radius=halo)
    signal = contrast[:, :, core]
    signal += np.float32(bg)
    signal *= _shading_planes(scene, k0, k1)
    # Photon noise grows with the signal: scale unit noise by sqrt(signal / background).
    scale = np.sqrt(np.maximum(signal, 0) * np.float32(1.0 / bg)) * np.float32(cfg.noise_sd)
    signal += scale * _noise_planes(scene.seed, k0, k1, nx, ny)
    image = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return image, labels


def microct_affine(shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """Isotropic affine: the specimen tilted 20 degrees about S, centred on the origin."""
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2 * voxel_mm
    return make_affine([voxel_mm] * 3, rot, -rot @ centre)


def write_microct_volumes(scene: MicroCTScene, image_path: str | os.PathLike,
                          seg_path: str | os.PathLike, affine: np.ndarray,
                          slab_planes: int | None = None) -> dict:
    """Render the scene slab by slab straight into two uncompressed NIfTI files.

    Args:
        scene: from :func:`sample_microct_scene`.
        image_path, seg_path: ``.nii`` files to create (pass temporary paths from
            :func:`medflow.io.atomic.atomic_outputs`; this function is not atomic).
        affine: 4x4 voxel-to-RAS affine written to both headers.
        slab_planes: k planes per slab (default: about 8 million voxels per slab).

    Returns:
        ``{"voxels": [4 counts], "intensity_sum": [4 sums]}`` per label.
    """
    nx, ny, nz = scene.shape
    planes = slab_planes or max(1, SLAB_VOXELS // (nx * ny))
    counts = np.zeros(4, dtype=np.int64)
    sums = np.zeros(4, dtype=np.float64)
    with open(image_path, "wb") as fi, open(seg_path, "wb") as fs:
        start_nifti(fi, scene.shape, affine, np.int16, "medflow microct phantom image")
        start_nifti(fs, scene.shape, affine, np.uint8, "medflow microct phantom labels")
        for k0 in range(0, nz, planes):
            k1 = min(nz, k0 + planes)
            image, labels = render_microct_slab(scene, k0, k1)
            write_planes(fi, image, k0)
            write_planes(fs, labels, k0)
            flat = labels.ravel()
            counts += np.bincount(flat, minlength=4)[:4]
            sums += np.bincount(flat, weights=image.ravel(), minlength=4)[:4]
            log.debug("microct planes %d-%d of %d", k0, k1, nz)
    return {"voxels": counts.tolist(), "intensity_sum": sums.tolist()}


def write_microct_subject(folder: Path, subject: str, seed: int,
                          shape: tuple[int, int, int] = (256, 256, 256)) -> dict[str, str]:
    """Write one microCT subject: ``image.nii``, ``seg.nii`` and ``truth.json``.

    Args:
        folder: the subject's folder (exists).
        subject: the subject id, recorded in ``truth.json``.
        seed: the subject seed; the same seed and shape give the same bytes.
        shape: volume shape (X, Y, Z); 640,640,640 is 262 million voxels (about 790 MB on
            disk), written with well under 1 GB of memory.

    Returns:
        Role -> file name inside ``folder``: ``image``, ``seg``, ``truth``.

    Note:
        All three files appear together or not at all (atomic renames). ``truth.json``
        holds class voxel counts and volumes, mean grey values, the structure parameters,
        the grey-value model and the geometry.
    """
    import click

    folder = Path(folder)
    try:
        scene = sample_microct_scene(shape, seed)
    except ValueError as exc:  # a bad --shape is a usage error (exit 2), not a bug
        raise click.BadParameter(str(exc), param_hint="--shape") from None
    cfg = scene.config
    affine = microct_affine(scene.shape, cfg.voxel_mm)
    names = {"image": "image.nii", "seg": "seg.nii", "truth": "truth.json"}
    with atomic_outputs() as out:
        tmp = {role: out.path(folder / name) for role, name in names.items()}
        stats = write_microct_volumes(scene, tmp["image"], tmp["seg"], affine)
        write_json(_truth(subject, scene, affine, stats), tmp["truth"])
    return names


def _truth(subject: str, scene: MicroCTScene, affine: np.ndarray, stats: dict) -> dict:
    from medflow import __version__

    cfg = scene.config
    total = float(np.prod(scene.shape))
    voxel_mm3 = cfg.voxel_mm ** 3
    counts, sums = stats["voxels"], stats["intensity_sum"]
    per = {str(c): {"name": LABELS[c], "voxels": int(counts[c]),
                    "volume_mm3": round(counts[c] * voxel_mm3, 6),
                    "fraction": round(counts[c] / total, 6),
                    "mean_intensity": round(sums[c] / counts[c], 3) if counts[c] else None,
                    "nominal_intensity": cfg.intensities[c]} for c in LABELS}
    return {"subject": subject, "kind": "microct", "seed": scene.seed,
            "generator": {"tool": "medflow demo-cohort --kind microct",
                          "medflow_version": __version__},
            "shape": list(scene.shape), "voxel_size_mm": [cfg.voxel_mm] * 3,
            "affine": affine.round(9).tolist(), "image_dtype": "int16", "label_dtype": "uint8",
            "labels": {str(c): n for c, n in LABELS.items()}, "label_precedence":
                [LABELS[c] for c in PRECEDENCE[::-1]], "classes": per,
            "structures": scene.summary, "config": asdict(cfg)}
