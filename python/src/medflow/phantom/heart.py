"""An analytic beating heart: end-diastolic anatomy plus a known, invertible deformation.

Heart frame (mm): the LV long axis is z, the mitral (base) plane is z = 0 and the apex lies
at z < 0; +x points from the LV axis to the RV. At end-diastole (ED):

- LV cavity: half prolate ellipsoid ``r^2/a^2 + z^2/c^2 <= 1``, z <= 0 (r: distance to axis).
- LV myocardium: the half ellipsoid with radii (a+w, c+w) minus the cavity.
- RV cavity: a crescent outside the LV epicardium, ``k(z) < r^2 <= k(z) + q(theta, z)`` with
  ``k(z) = (a+w)^2 (1 - z^2/(c+w)^2)`` (the epicardium) and
  ``q = Q cos^2(pi theta / 2 beta) (1 - z^2/c_rv^2)`` for |theta| < beta, z in (-c_rv, 0].
- Appearance only (label 0): a thin RV free wall, and left/right atria above the base.

Motion, in cylindrical coordinates about the LV axis with the epicardial apex z_a fixed
(f(t) in [0, 1] is the contraction curve, f = 0 at ED and exactly 1 at ES)::

    Z     = z_a + lam(t) (z - z_a)                      longitudinal shortening
    Theta = theta + phi(z, t)                           twist, linear from apex to base
    R^2   = (r^2 - d(z, t)) / lam(t)                    r^2 <= k(z)  (inside the LV epicardium)
    R^2   = (k - d)/lam + mu(t)/lam(t) (r^2 - k)        r^2 >  k(z)

The volume Jacobian is ``lam * dR^2/dr^2``: exactly 1 inside the LV epicardium (the
myocardium keeps its volume) and mu(t) outside (RV volume = mu x RVEDV). The "core"
``r^2 < d(z, t)`` collapses onto the axis. We take ``d = s f(t) a^2 (1 - z^2/c^2)``, a fixed
fraction of the cavity's cross-section at every level, so the core never reaches the
myocardium (a constant d would eat the apical cap) and the LV cavity volume is exactly
``(1 - s f(t)) LVEDV``: s is the ejection fraction. Every frame's labels are the ED labels
of the inverse mapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medflow.phantom.heart_params import (ATRIAL_BLOOD, ATRIAL_WALL, BACKGROUND, LV_BLOOD,
                                          LV_MYO, MYOCARDIUM_DENSITY, RV_BLOOD, RV_WALL,
                                          HeartParams, contraction, draw_heart_params)

__all__ = ["ATRIAL_BLOOD", "ATRIAL_WALL", "BACKGROUND", "LV_BLOOD", "LV_MYO",
           "MYOCARDIUM_DENSITY", "RV_BLOOD", "RV_WALL", "HeartModel", "HeartParams",
           "contraction", "tissue_to_label"]


def _sq(x):
    return np.maximum(0.0, x)


@dataclass(frozen=True)
class HeartModel:
    """The analytic beating heart of one subject.

    Example:
        >>> m = HeartModel.from_seed(0)
        >>> p = m.to_world(np.array([[0.0, 0.0, -40.0]]))   # on the LV axis, mid-cavity
        >>> int(m.labels_at(p, 0.0)[0])
        1
    """

    params: HeartParams

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_seed(cls, seed: int, frames: int = 20) -> "HeartModel":
        """Draw a heart from ``np.random.default_rng([seed, 0])`` (the anatomy stream).

        Args:
            seed: subject seed; the same seed gives the same heart.
            frames: cine frames per cycle; ES is placed exactly on a frame (~37 % of cycle).
        """
        return cls(draw_heart_params(np.random.default_rng([seed, 0]), frames))

    # ----------------------------------------------------------------- frames
    @property
    def rot(self) -> np.ndarray:
        """3x3 rotation whose columns are the heart x, y, z axes in world (RAS)."""
        return np.asarray(self.params.rotation)

    @property
    def heart_to_world(self) -> np.ndarray:
        """4x4 matrix taking heart-frame mm to world RAS mm."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rot, self.params.origin
        return m

    def to_heart(self, points_world: np.ndarray) -> np.ndarray:
        """World (N, 3) RAS mm -> heart frame (N, 3) mm."""
        # einsum, not @: numpy's BLAS matmul is ~10x slower for (N, 3) x (3, 3).
        return np.einsum("ni,ij->nj", np.asarray(points_world, np.float64) - self.params.origin,
                         self.rot)

    def to_world(self, points_heart: np.ndarray) -> np.ndarray:
        """Heart frame (N, 3) mm -> world (N, 3) RAS mm."""
        return np.einsum("ni,ji->nj", np.asarray(points_heart, np.float64), self.rot) \
            + self.params.origin

    # ----------------------------------------------------------------- time course
    def state(self, t: float) -> tuple[float, float, float, float]:
        """(f, lam, mu, s*f) at time t (fraction of the cycle)."""
        p = self.params
        f = float(contraction(t, p.es_fraction))
        return f, 1.0 - f * (1.0 - p.lam_es), 1.0 - f * p.rvef, p.lvef * f

    @property
    def apex_z(self) -> float:
        return -(self.params.c + self.params.w)

    def _profiles(self, z, sf):
        p = self.params
        k = (p.a + p.w) ** 2 * _sq(1.0 - z * z / (p.c + p.w) ** 2)
        d = sf * p.a ** 2 * _sq(1.0 - z * z / p.c ** 2)
        return k, d

    def _twist(self, z, f):
        p, za = self.params, self.apex_z
        return f * (p.twist_apex + (p.twist_base - p.twist_apex) * (z - za) / -za)

    # ----------------------------------------------------------------- the mapping
    def forward_heart(self, q: np.ndarray, t: float) -> np.ndarray:
        """ED heart-frame points (N, 3) -> their heart-frame positions at time t.

        Note:
            Points of the LV cavity's collapsing core (r^2 < d(z, t)) have no image: NaN.
        """
        q = np.asarray(q, np.float64)
        f, lam, mu, sf = self.state(t)
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        r2 = x * x + y * y
        k, d = self._profiles(z, sf)
        big_r2 = np.where(r2 <= k, r2 - d, k - d + mu * (r2 - k)) / lam
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(r2 > 0, np.sqrt(np.where(big_r2 >= 0, big_r2, np.nan) / r2), 0.0)
        ang = self._twist(z, f)
        co, si = np.cos(ang), np.sin(ang)
        out = np.empty_like(q)
        out[:, 0] = g * (co * x - si * y)
        out[:, 1] = g * (si * x + co * y)
        out[:, 2] = self.apex_z + lam * (z - self.apex_z)
        out[big_r2 < 0] = np.nan
        return out

    def inverse_heart(self, q: np.ndarray, t: float) -> np.ndarray:
        """Heart-frame points (N, 3) at time t -> their material (ED) positions."""
        q = np.asarray(q, np.float64)
        f, lam, mu, sf = self.state(t)
        za = self.apex_z
        z = za + (q[:, 2] - za) / lam
        big_r2 = q[:, 0] ** 2 + q[:, 1] ** 2
        k, d = self._profiles(z, sf)
        inner = lam * big_r2 + d
        r2 = np.where(inner <= k, inner, k + (inner - k) / mu)
        # A point on the axis came from the core's rim; any direction is its preimage.
        safe = np.where(big_r2 > 0, big_r2, 1.0)
        g = np.sqrt(r2 / safe)
        x = np.where(big_r2 > 0, g * q[:, 0], np.sqrt(r2))
        y = np.where(big_r2 > 0, g * q[:, 1], 0.0)
        ang = -self._twist(z, f)
        co, si = np.cos(ang), np.sin(ang)
        return np.stack([co * x - si * y, si * x + co * y, z], axis=1)

    def forward(self, points_ed_mm: np.ndarray, t: float) -> np.ndarray:
        """Material points at ED (world RAS mm, (N, 3)) -> their world positions at time t.

        Args:
            points_ed_mm: (N, 3) world coordinates at end-diastole (t = 0).
            t: time as a fraction of the cardiac cycle (frame j is at j / frames).

        Returns:
            (N, 3) world positions at t; NaN rows for points of the LV cavity's collapsing
            core (blood, never myocardium or RV).
        """
        return self.to_world(self.forward_heart(self.to_heart(points_ed_mm), t))

    def inverse(self, points_t: np.ndarray, t: float) -> np.ndarray:
        """World points at time t (N, 3) -> their material positions at ED (world mm)."""
        return self.to_world(self.inverse_heart(self.to_heart(points_t), t))

    # ----------------------------------------------------------------- anatomy
    def tissue_ed_heart(self, q: np.ndarray) -> np.ndarray:
        """Tissue class (0-6, see module constants) of ED heart-frame points (N, 3)."""
        p = self.params
        q = np.asarray(q, np.float64)
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        r2 = x * x + y * y
        k, _ = self._profiles(z, 0.0)
        below = z <= 0
        epi = below & (r2 <= k) & (z >= self.apex_z)
        out = np.where(epi, np.uint8(LV_MYO), np.uint8(0))
        out[epi & (r2 / p.a ** 2 + z * z / p.c ** 2 <= 1.0)] = LV_BLOOD
        # RV crescent and free wall, evaluated only where they can be (speed).
        r_out = np.sqrt((p.a + p.w) ** 2 + p.rv_q) + p.rv_wall
        idx = np.flatnonzero(below & ~epi & (r2 <= r_out ** 2) & (z > -(p.rv_c + p.rv_wall)))
        xi, yi, zi, ri2, ki = x[idx], y[idx], z[idx], r2[idx], k[idx]
        theta = np.arctan2(yi, xi)
        rv = ri2 <= ki + self._rv_q(theta, zi, p.rv_beta, p.rv_c)
        q_wall = self._rv_q(theta, zi, p.rv_beta + 0.25, p.rv_c + p.rv_wall)
        wall = (q_wall > 0) & (ri2 <= (np.sqrt(ki + q_wall) + p.rv_wall) ** 2)
        out[idx] = np.where(rv, np.uint8(RV_BLOOD), np.where(wall, np.uint8(RV_WALL), out[idx]))
        above = np.flatnonzero((z > 0) & (z < 47.5))
        out[above] = self._atria(q[above])
        return out

    def _rv_q(self, theta, z, beta, c_rv):
        ang = np.where(np.abs(theta) < beta, np.cos(0.5 * np.pi * theta / beta) ** 2, 0.0)
        return self.params.rv_q * ang * _sq(1.0 - z * z / c_rv ** 2)

    def _atria(self, q: np.ndarray) -> np.ndarray:
        # Left atrium above the LV base, right atrium above the RV; blood over a thin wall.
        p = self.params
        out = np.zeros(len(q), np.uint8)
        ra_x = np.sqrt((p.a + p.w) ** 2 + 0.5 * p.rv_q)
        for cx, (rx, ry, rz) in ((0.0, (p.a + 3.0, p.a + 3.0, 45.0)), (ra_x, (22.0, 26.0, 42.0))):
            dx, y, z = q[:, 0] - cx, q[:, 1], q[:, 2]
            blood = (dx / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2 <= 1.0
            wall = (dx / (rx + 2.5)) ** 2 + (y / (ry + 2.5)) ** 2 + (z / (rz + 2.5)) ** 2 <= 1.0
            out[wall & (out == 0)] = ATRIAL_WALL
            out[blood] = ATRIAL_BLOOD
        return out

    def extent_heart(self) -> np.ndarray:
        """ED bounding box of the ventricles in the heart frame, [[xmin, ymin, zmin], [max]]."""
        p = self.params
        rmax = np.sqrt((p.a + p.w) ** 2 + p.rv_q) + p.rv_wall + 1.0
        return np.array([[-(p.a + p.w), -rmax, self.apex_z], [rmax, rmax, 0.0]])

    def reach_heart(self) -> tuple[float, float, float]:
        """(r_max, z_min, z_max) in the heart frame enclosing every heart tissue class
        (atria included) at every time: points beyond it are never heart."""
        p = self.params
        ra_x = np.sqrt((p.a + p.w) ** 2 + 0.5 * p.rv_q)
        r_ed = max(self.extent_heart()[1, 0], ra_x + 28.5)
        # Radii grow by at most 1/sqrt(lam) (near the apex, where the core vanishes).
        return float(r_ed / np.sqrt(p.lam_es) + 1.0), self.apex_z - 1.0, 48.0

    def tissue_at(self, points_world: np.ndarray, t: float) -> np.ndarray:
        """Tissue class (0-6) of world points at time t: the ED class of their preimage."""
        return self.tissue_ed_heart(self.inverse_heart(self.to_heart(points_world), t))

    def labels_at(self, points_world: np.ndarray, t: float) -> np.ndarray:
        """Labels (0 bg, 1 LV blood, 2 LV myocardium, 3 RV blood) of world points at time t.

        Args:
            points_world: (N, 3) RAS mm.
            t: time as a fraction of the cardiac cycle.

        Returns:
            (N,) uint8; label at t of x = ED label of ``inverse(x, t)``.
        """
        return tissue_to_label(self.tissue_at(points_world, t))

    # ----------------------------------------------------------------- volumes
    def volumes(self, t: float) -> dict[str, float]:
        """Analytic volumes at time t, in mL: ``lv_ml``, ``lv_myo_ml``, ``rv_ml``."""
        p = self.params
        f, _, mu, sf = self.state(t)
        lvedv = 2.0 / 3.0 * np.pi * p.a ** 2 * p.c
        myo = 2.0 / 3.0 * np.pi * ((p.a + p.w) ** 2 * (p.c + p.w) - p.a ** 2 * p.c)
        rvedv = p.rv_q * p.rv_beta * p.rv_c / 3.0
        return {"lv_ml": (1.0 - sf) * lvedv / 1e3, "lv_myo_ml": myo / 1e3,
                "rv_ml": mu * rvedv / 1e3}

    def to_dict(self) -> dict:
        """Parameters as plain JSON-able values (angles in radians, lengths in mm)."""
        d = asdict(self.params)
        d["rotation"] = [list(r) for r in self.params.rotation]
        d["origin"] = list(self.params.origin)
        return d


def tissue_to_label(tissue: np.ndarray) -> np.ndarray:
    """Map tissue classes to labels: LV blood, LV myocardium and RV blood keep their value,
    everything else (RV wall, atria, surroundings) is background."""
    lut = np.zeros(256, np.uint8)
    lut[[LV_BLOOD, LV_MYO, RV_BLOOD]] = [LV_BLOOD, LV_MYO, RV_BLOOD]
    return lut[tissue]
