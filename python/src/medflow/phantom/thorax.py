"""Static surroundings of the synthetic heart: body wall, lungs, liver, spine, aorta.

Everything here is fixed in world (RAS mm) coordinates and placed relative to the heart's
end-diastolic pose; the beating heart is drawn over it, and where the heart pulls away in
systole the mediastinum around it shows through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.phantom.heart import HeartModel

#: Tissue classes of the surroundings; heart classes 1-6 come from :mod:`heart`.
AIR, LUNG, FAT, MUSCLE, LIVER, MEDIASTINUM, AORTA, BONE = range(10, 18)
N_CLASSES = 18


@dataclass(frozen=True)
class Thorax:
    """Body shape around one heart. Lengths in mm, world RAS coordinates."""

    centre: tuple       # (x, y) of the body's elliptic cross-section
    half_width: float   # left-right semi-axis
    half_depth: float   # anterior-posterior semi-axis
    fat: float          # subcutaneous fat thickness
    muscle: float       # chest-wall muscle thickness
    diaphragm_z: float  # height of the left hemidiaphragm (the right dome is higher)

    @classmethod
    def around(cls, heart: HeartModel, rng: np.random.Generator) -> "Thorax":
        """Draw a body that puts the heart left of the midline, behind the sternum."""
        o = np.asarray(heart.params.origin)
        depth = rng.uniform(105, 125)
        # The RV's anterior surface sits ~70 mm in front of the base centre, ~35 mm of
        # chest wall in front of it.
        cy = o[1] + 70 + rng.uniform(25, 40) - depth
        apex_z = heart.to_world(np.array([[0.0, 0.0, heart.apex_z]]))[0, 2]
        return cls(centre=(float(o[0] + rng.uniform(-18, -5)), float(cy)),
                   half_width=float(rng.uniform(155, 185)), half_depth=float(depth),
                   fat=float(rng.uniform(8, 20)), muscle=float(rng.uniform(8, 14)),
                   diaphragm_z=float(apex_z - rng.uniform(2, 10)))


def _inside_ellipse(x, y, a, b) -> np.ndarray:
    return (x / a) ** 2 + (y / b) ** 2 <= 1.0


def thorax_classes(points: np.ndarray, body: Thorax, heart: HeartModel) -> np.ndarray:
    """Static tissue class (10-17) of world points (N, 3).

    Args:
        points: (N, 3) RAS mm.
        body: the surroundings.
        heart: the heart whose ED envelope is kept free of lung.

    Returns:
        (N,) uint8 classes: AIR, LUNG, FAT, MUSCLE, LIVER, MEDIASTINUM, AORTA, BONE.
    """
    x = points[:, 0] - body.centre[0]
    y = points[:, 1] - body.centre[1]
    z = points[:, 2]
    a, b = body.half_width, body.half_depth
    out = np.full(len(points), AIR, np.uint8)
    out[_inside_ellipse(x, y, a, b)] = FAT
    inner = body.fat
    out[_inside_ellipse(x, y, a - inner, b - inner)] = MUSCLE
    inner += body.muscle
    cavity = _inside_ellipse(x, y, a - inner, b - inner)
    out[cavity] = MEDIASTINUM
    # Lungs: one ellipsoid each side, kept out of the midline.
    for side in (-1.0, 1.0):
        lung = ((x - side * 0.5 * a) / (0.45 * a)) ** 2 + (y / (0.9 * b)) ** 2 <= 1.0
        out[cavity & lung] = LUNG
    # Below the diaphragm (a dome, higher on the right): liver.
    dome = body.diaphragm_z + 18.0 * np.exp(-((x - 0.4 * a) ** 2 + y ** 2) / (2 * 70.0 ** 2))
    out[cavity & (z < dome)] = LIVER
    # Spine (vertebral body) and descending aorta in front of it, left of midline.
    spine_y = -b + inner + 30.0
    out[(x ** 2 + (y - spine_y) ** 2) <= 20.0 ** 2] = BONE
    out[cavity & (((x + 28.0) ** 2 + (y - spine_y - 22.0) ** 2) <= 11.0 ** 2)] = AORTA
    # The heart's bed: its ED shape enlarged ~25 % about the LV axis stays mediastinum.
    q = heart.to_heart(points)
    zc = 0.5 * heart.apex_z
    shrunk = np.stack([0.8 * q[:, 0], 0.8 * q[:, 1], zc + 0.85 * (q[:, 2] - zc)], axis=1)
    out[heart.tissue_ed_heart(shrunk) > 0] = MEDIASTINUM
    return out
