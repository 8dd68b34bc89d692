"""Parameters of the analytic heart: label values, the drawn shape/function/pose, the
contraction time course and the orientation in the scanner (see :mod:`heart`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.cardiac.labels import (BACKGROUND, LV_BLOOD, LV_MYO,  # noqa: F401 - re-exported
                                    MYOCARDIUM_DENSITY_G_PER_ML as MYOCARDIUM_DENSITY, RV_BLOOD)

#: Extra appearance-only tissue classes returned by :meth:`HeartModel.tissue_at`.
RV_WALL, ATRIAL_BLOOD, ATRIAL_WALL = 4, 5, 6


@dataclass(frozen=True)
class HeartParams:
    """Shape, function and pose of one heart. Lengths in mm, angles in radians."""

    a: float            # LV cavity short semi-axis at ED
    c: float            # LV cavity long semi-axis at ED
    w: float            # LV wall thickness at ED
    lvef: float         # LV ejection fraction (fraction, = s in the module docstring)
    rvef: float         # RV ejection fraction (fraction); mu_ES = 1 - rvef
    lam_es: float       # longitudinal length ratio at ES
    twist_apex: float   # rotation of the apex at ES
    twist_base: float   # rotation of the base at ES
    rv_q: float         # RV crescent size Q (mm^2)
    rv_beta: float      # RV half angular extent
    rv_c: float         # RV long semi-axis
    rv_wall: float      # RV free wall thickness (appearance only)
    es_fraction: float  # time of ES as a fraction of the cycle (on a frame)
    rotation: tuple     # 3x3 heart-to-world rotation, rows (columns are the heart axes)
    origin: tuple       # world (RAS mm) position of the heart-frame origin (base centre)


def contraction(t, es: float) -> np.ndarray:
    """Contraction curve f(t) in [0, 1]: 0 at ED (t = 0), exactly 1 at ES (t = es).

    Args:
        t: time(s) as a fraction of the cardiac cycle (wrapped into [0, 1)).
        es: time of end-systole as a fraction of the cycle.

    Returns:
        f(t), smooth and periodic: cosine ejection, rapid filling (75 %), diastasis, then the
        atrial kick (25 %).
    """
    t = np.mod(np.asarray(t, dtype=np.float64), 1.0)
    step = lambda x: 0.5 * (1.0 - np.cos(np.pi * np.clip(x, 0.0, 1.0)))  # noqa: E731
    u = (t - es) / (1.0 - es)
    relax = 1.0 - 0.75 * step(u / 0.4) - 0.25 * step((u - 0.75) / 0.25)
    return np.where(t <= es, step(t / es), relax)


def draw_heart_params(rng: np.random.Generator, frames: int = 20) -> HeartParams:
    """Draw one subject's heart: size, wall, function (LVEF 35-75 %), timing and pose.

    Args:
        rng: the anatomy generator.
        frames: cine frames per cycle; ES is placed exactly on a frame (~37 % of the cycle).

    Returns:
        HeartParams (lengths mm, angles radians).
    """
    a, c, w = rng.uniform(24, 32), rng.uniform(68, 90), rng.uniform(7, 11)
    lvef = rng.uniform(0.35, 0.75)
    rvef = float(np.clip(lvef + rng.normal(0.0, 0.05), 0.35, 0.72))
    lvedv = 2.0 / 3.0 * np.pi * a * a * c
    beta, rv_c = rng.uniform(1.15, 1.35), rng.uniform(0.75, 0.88) * (c + w)
    rv_q = 3.0 * rng.uniform(0.95, 1.25) * lvedv / (beta * rv_c)
    es_frame = int(np.clip(round(0.37 * frames), 1, frames - 1))
    rot = heart_rotation(rng)
    origin = rng.uniform(-15, 15, size=3)
    return HeartParams(
        a=float(a), c=float(c), w=float(w), lvef=float(lvef), rvef=rvef,
        lam_es=float(rng.uniform(0.85, 0.9)),
        twist_apex=float(np.radians(rng.uniform(5, 12))),
        twist_base=float(np.radians(rng.uniform(-8, -3))),
        rv_q=float(rv_q), rv_beta=float(beta), rv_c=float(rv_c),
        rv_wall=float(rng.uniform(2.5, 4.0)), es_fraction=es_frame / frames,
        rotation=tuple(tuple(float(v) for v in row) for row in rot),
        origin=tuple(float(o) for o in origin))


def heart_rotation(rng: np.random.Generator) -> np.ndarray:
    """A plausible, subject-specific heart orientation in the scanner (RAS).

    The base-to-apex axis points left, anterior and inferior (about 45 degrees from the
    sagittal and 30 degrees below the axial plane), the RV lies anterior-right of the LV;
    both are perturbed by up to ~12 and ~15 degrees.
    """
    az = np.radians(45 + rng.uniform(-12, 12))       # from +A towards L in the axial plane
    el = np.radians(30 + rng.uniform(-12, 12))       # below the axial plane
    apex = np.array([-np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), -np.sin(el)])
    hz = -apex
    roll = np.radians(rng.uniform(-15, 15))
    rv_dir = np.array([np.cos(np.pi / 4 + roll), np.sin(np.pi / 4 + roll), 0.0])
    hx = rv_dir - hz * (rv_dir @ hz)
    hx /= np.linalg.norm(hx)
    hy = np.cross(hz, hx)
    return np.stack([hx, hy, hz], axis=1)
