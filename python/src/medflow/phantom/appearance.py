"""MR-like appearance of tissue-class maps: contrast tables, coil bias, PSF, Rician noise.

Sample, then apply: :func:`draw_appearance` draws every random number of the look of one
subject (tissue intensities, bias coefficients) from a generator; :func:`render` applies
them deterministically, with the noise drawn from a separate generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medflow.phantom import thorax as tx
from medflow.phantom.heart import (ATRIAL_BLOOD, ATRIAL_WALL, LV_BLOOD, LV_MYO, RV_BLOOD,
                                   RV_WALL)

#: Appearances offered by :func:`draw_appearance`.
CONTRASTS = ("ssfp", "gre")

# Mean intensity per tissue class, relative to the brightest tissue. SSFP cine: bright blood
# (T2/T1 weighting), dark myocardium, bright fat. Spoiled GRE (T1-weighted, little inflow
# enhancement in-plane): weak blood-myocardium contrast, fat brightest, liver brighter.
_TISSUE = {
    "ssfp": {LV_BLOOD: 1.0, RV_BLOOD: 0.97, ATRIAL_BLOOD: 0.95, tx.AORTA: 0.9,
             LV_MYO: 0.28, RV_WALL: 0.3, ATRIAL_WALL: 0.32, tx.AIR: 0.0, tx.LUNG: 0.05,
             tx.FAT: 0.85, tx.MUSCLE: 0.25, tx.LIVER: 0.3, tx.MEDIASTINUM: 0.5, tx.BONE: 0.45},
    "gre": {LV_BLOOD: 0.5, RV_BLOOD: 0.48, ATRIAL_BLOOD: 0.47, tx.AORTA: 0.55,
            LV_MYO: 0.36, RV_WALL: 0.37, ATRIAL_WALL: 0.38, tx.AIR: 0.0, tx.LUNG: 0.04,
            tx.FAT: 1.0, tx.MUSCLE: 0.33, tx.LIVER: 0.62, tx.MEDIASTINUM: 0.7, tx.BONE: 0.8},
}
# Noise standard deviation (fraction of the brightest tissue) and bias-field strength.
_NOISE = {"ssfp": 0.035, "gre": 0.05}
_BIAS = {"ssfp": 0.25, "gre": 0.45}
#: Stored intensities are int16 like scanner magnitude images; the brightest tissue ~ this.
FULL_SCALE = 1000.0


@dataclass(frozen=True)
class Appearance:
    """The look of one subject's images (all drawn, nothing random left)."""

    contrast: str
    intensities: tuple   # mean intensity per tissue class (index = class)
    noise_sigma: float   # Gaussian sigma of each complex channel, same units
    bias_coef: tuple     # 9 coefficients of the log-quadratic bias in (p - centre) / 150 mm
    bias_centre: tuple   # world point where the bias is 1
    psf_sigma_mm: float  # in-plane Gaussian point spread (partial volume)


def check_contrast(contrast: str) -> str:
    """Return ``contrast`` if known, else raise ValueError listing the choices."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {', '.join(CONTRASTS)}")
    return contrast


def draw_appearance(contrast: str, rng: np.random.Generator, centre) -> Appearance:
    """Draw one subject's appearance for a contrast.

    Args:
        contrast: one of :data:`CONTRASTS`.
        rng: the subject's appearance generator.
        centre: world point (RAS mm) where the coil bias is normalised to 1 (the heart).

    Returns:
        An :class:`Appearance`; tissue means vary +-5 % per subject.
    """
    check_contrast(contrast)
    table = np.zeros(tx.N_CLASSES)
    for cls, value in _TISSUE[contrast].items():
        table[cls] = value
    table *= 1.0 + 0.05 * rng.standard_normal(tx.N_CLASSES)
    coef = _BIAS[contrast] * rng.standard_normal(9) / 2.0
    return Appearance(contrast=contrast, intensities=tuple(float(v) for v in table),
                      noise_sigma=float(_NOISE[contrast] * rng.uniform(0.8, 1.25)),
                      bias_coef=tuple(float(c) for c in coef),
                      bias_centre=tuple(float(c) for c in centre),
                      psf_sigma_mm=float(rng.uniform(0.7, 1.0)))


def bias_field(points: np.ndarray, look: Appearance) -> np.ndarray:
    """Smooth multiplicative coil sensitivity at world points (N, 3): exp(quadratic)."""
    u = (np.asarray(points, np.float64) - look.bias_centre) / 150.0
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    c = look.bias_coef
    return np.exp(sum(ci * ti for ci, ti in zip(c, terms)))


def tissue_intensity(tissue: np.ndarray, look: Appearance) -> np.ndarray:
    """Noise-free float32 intensity of a tissue-class map (any shape)."""
    return np.asarray(look.intensities, np.float32)[tissue]


def render(ideal: np.ndarray, bias: np.ndarray, look: Appearance, spacing_mm: float,
           rng: np.random.Generator) -> np.ndarray:
    """Turn a noise-free intensity map (X, Y, Z, T) into an int16 magnitude image.

    Args:
        ideal: float32 intensities (:func:`tissue_intensity`), in-plane axes first; Z
            (slices) and T are left unblurred.
        bias: (X, Y, Z) multiplicative bias at the voxels.
        look: the subject's appearance.
        spacing_mm: in-plane voxel size, to express the PSF in voxels.
        rng: noise generator.

    Returns:
        int16 array, same shape: |bias * PSF * intensity + complex Gaussian noise| scaled
        by :data:`FULL_SCALE`.
    """
    sigma = look.psf_sigma_mm / spacing_mm
    image = gaussian_filter(np.asarray(ideal, np.float32), sigma=(sigma, sigma, 0, 0),
                            mode="nearest", truncate=3.0)
    image *= bias[..., None].astype(np.float32)
    noise = rng.standard_normal((2,) + image.shape, dtype=np.float32)
    noise *= np.float32(look.noise_sigma)
    noise[0] += image
    magnitude = np.hypot(noise[0], noise[1])
    return np.clip(np.rint(magnitude * FULL_SCALE), 0, 32767).astype(np.int16)


def render_noise_free(ideal: np.ndarray, bias: np.ndarray, look: Appearance,
                      spacing_mm: float) -> np.ndarray:
    """A noise-free int16 image of a 3D intensity map on an isotropic grid.

    Args:
        ideal: float32 (X, Y, Z) intensities (:func:`tissue_intensity`).
        bias: (X, Y, Z) multiplicative coil bias at the voxels.
        look: the subject's appearance (its PSF is applied along all three axes).
        spacing_mm: the isotropic voxel size.

    Returns:
        int16 array, same shape: bias * PSF * intensity scaled by :data:`FULL_SCALE`, the
        cine's scale without its noise (the truth for image super-resolution).
    """
    sigma = look.psf_sigma_mm / spacing_mm
    image = gaussian_filter(np.asarray(ideal, np.float32), sigma=sigma, mode="nearest",
                            truncate=3.0)
    image *= np.asarray(bias, np.float32)
    return np.clip(np.rint(image * FULL_SCALE), 0, 32767).astype(np.int16)
