"""Thin structures of the microCT phantom: sampled primitives and their rasterisation.

The phantom imitates a 20 um microCT scan of a perfused, fixed soft-tissue biopsy:

* class 1, **vessels**: branching, tortuous tubes (radius 1-2.5 voxels) built from cone
  segments, like a contrast-perfused microvascular network;
* class 2, **membranes**: thin, gently curved plates (spherical caps, 1.5-2.5 voxels thick,
  0.5-1.2 mm across), like septa or fascia sheets;
* class 3, **beads**: small spheres (radius 1.5-3.5 voxels), like calcified granules.

Every primitive is an exact signed distance (negative inside, in voxels) evaluated only in
its own bounding box, so any slab of the volume can be drawn from the primitives whose boxes
reach it. Only +, *, sqrt, abs and max enter the distances: those are exactly rounded, so a
voxel gets the same bits whichever slab or box computes it (no seams between slabs).
Coordinates are continuous voxel indices (i, j, k); sizes in the config are in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Extra margin (voxels) around each box: occupancy is non-zero up to 0.5 voxel outside.
PAD = 1.0


@dataclass(frozen=True)
class MicroCTConfig:
    """Every number of the microCT phantom (sizes in mm, densities per mm^3 of tissue).

    The defaults give about 1.5 % vessel, 2 % membrane and 0.5 % bead voxels at any shape.
    """

    voxel_mm: float = 0.02
    vessel_length_per_mm3: float = 4.0
    vessel_radius_mm: tuple[float, float] = (0.02, 0.05)
    vessel_step_mm: float = 0.08
    vessel_max_length_mm: float = 4.0
    vessel_tortuosity_rad: float = 0.15
    vessel_branch_prob: float = 0.03
    membranes_per_mm3: float = 0.9
    membrane_thickness_mm: tuple[float, float] = (0.03, 0.05)
    membrane_half_width_mm: tuple[float, float] = (0.25, 0.6)
    membrane_curvature_radius_mm: tuple[float, float] = (1.0, 4.0)
    beads_per_mm3: float = 8.0
    bead_radius_mm: tuple[float, float] = (0.03, 0.07)
    #: Grey values of background, vessel, membrane, bead (int16 "microCT units").
    intensities: tuple[float, float, float, float] = (1000.0, 3000.0, 1800.0, 5000.0)
    psf_sigma_mm: float = 0.014
    noise_sd: float = 120.0
    cupping: float = 0.12
    shading: float = 0.04


@dataclass
class Primitives:
    """Parameters of one class of primitives plus their integer bounding boxes.

    ``params`` rows: tubes ``p0(3) p1(3) r0 r1``; caps ``centre(3) normal(3) R half_t
    sin_theta``; beads ``centre(3) r``. ``lo``/``hi`` are inclusive voxel index bounds.
    """

    kind: str
    params: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def touching(self, k_lo: int, k_hi: int) -> np.ndarray:
        """Indices of the primitives whose boxes reach planes k_lo .. k_hi - 1."""
        return np.nonzero((self.lo[:, 2] < k_hi) & (self.hi[:, 2] >= k_lo))[0]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _boxes(kind: str, params: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           shape: tuple[int, int, int]) -> Primitives:
    # Integer, clipped boxes; primitives wholly outside the volume are dropped.
    top = np.asarray(shape) - 1
    ilo = np.maximum(np.floor(lo - PAD), 0).astype(np.int64)
    ihi = np.minimum(np.ceil(hi + PAD), top).astype(np.int64)
    keep = np.all(ilo <= ihi, axis=1)
    return Primitives(kind, params[keep], ilo[keep], ihi[keep])


def sample_vessels(rng: np.random.Generator, shape: tuple[int, int, int],
                   cfg: MicroCTConfig) -> tuple[Primitives, dict]:
    """Random branching vessel trees until their length inside the volume reaches the target.

    Each tree starts at a uniform point and walks both ways with a persistent, jittered
    direction and a slowly drifting radius; a branch leaves with 60-85 % of the parent's
    radius, and only while that stays above the minimum, so trees stay finite.
    """
    vox = cfg.voxel_mm
    size = np.asarray(shape, dtype=np.float64)
    step = cfg.vessel_step_mm / vox
    rmin, rmax = (r / vox for r in cfg.vessel_radius_mm)
    steps = max(1, int(round(cfg.vessel_max_length_mm / cfg.vessel_step_mm)))
    target = cfg.vessel_length_per_mm3 * float(np.prod(size)) * vox ** 2  # voxels of length
    limit = rmax + 2.0
    segs: list[tuple] = []
    inside = 0.0
    trees = branches = 0
    while (inside < target or trees == 0) and trees < 100 + 10 * target / step:
        trees += 1
        start = rng.uniform(-0.5, size - 0.5)
        d = _unit(rng.normal(size=3))
        r = rng.uniform(0.5 * (rmin + rmax), rmax)
        walks = [(start, d, r, steps), (start, -d, r, steps)]
        while walks:
            p, d, r, n = walks.pop()
            for _ in range(n):
                d = _unit(d + cfg.vessel_tortuosity_rad * rng.normal(size=3))
                r_next = float(np.clip(r * np.exp(0.04 * rng.normal()), rmin, rmax))
                q = p + step * d
                segs.append((*p, *q, r, r_next))
                mid = 0.5 * (p + q)
                if np.all(mid >= -0.5) and np.all(mid <= size - 0.5):
                    inside += step
                p, r = q, r_next
                if np.any(p < -limit) or np.any(p > size - 1 + limit):
                    break
                if rng.random() < cfg.vessel_branch_prob and 0.75 * r >= rmin:
                    child = _unit(d + rng.normal(size=3))
                    walks.append((p, child, r * rng.uniform(0.6, 0.85), n // 2))
                    branches += 1
    params = np.asarray(segs, dtype=np.float64).reshape(-1, 8)
    rad = np.maximum(params[:, 6], params[:, 7])[:, None]
    lo = np.minimum(params[:, 0:3], params[:, 3:6]) - rad
    hi = np.maximum(params[:, 0:3], params[:, 3:6]) + rad
    summary = {"trees": trees, "branches": branches, "segments": len(params),
               "centreline_length_in_volume_mm": round(inside * vox, 4),
               "radius_mm_range": list(cfg.vessel_radius_mm),
               "radius_mm_mean": round(float(params[:, 6].mean()) * vox, 5),
               "step_mm": cfg.vessel_step_mm, "tortuosity_rad_per_step":
                   cfg.vessel_tortuosity_rad, "branch_probability_per_step":
                   cfg.vessel_branch_prob, "length_per_mm3_target": cfg.vessel_length_per_mm3}
    return _boxes("tube", params, lo, hi, shape), summary


def sample_membranes(rng: np.random.Generator, shape: tuple[int, int, int],
                     cfg: MicroCTConfig) -> tuple[Primitives, dict]:
    """Spherical-cap plates: apex uniform in the volume, random normal, curvature radius
    log-uniform, half-width and thickness uniform."""
    vox = cfg.voxel_mm
    size = np.asarray(shape, dtype=np.float64)
    n = max(1, int(rng.poisson(cfg.membranes_per_mm3 * np.prod(size) * vox ** 3)))
    apex = rng.uniform(-0.5, size - 0.5, size=(n, 3))
    normal = _unit(rng.normal(size=(n, 3)))
    big_r = np.exp(rng.uniform(*np.log(cfg.membrane_curvature_radius_mm), size=n)) / vox
    half_w = rng.uniform(*cfg.membrane_half_width_mm, size=n) / vox
    half_t = rng.uniform(*cfg.membrane_thickness_mm, size=n) / vox / 2
    sin_t = np.minimum(half_w / big_r, 0.95)
    centre = apex - big_r[:, None] * normal
    # Exact box of a cap: along axis e the cap reaches R cos(max(0, angle(n, e) - theta)).
    theta = np.arcsin(sin_t)[:, None]
    alpha = np.arccos(np.clip(normal, -1, 1))
    up = centre + big_r[:, None] * np.cos(np.maximum(0, alpha - theta))
    down = centre - big_r[:, None] * np.cos(np.maximum(0, np.pi - alpha - theta))
    pad = half_t[:, None] + 0.5
    params = np.column_stack([centre, normal, big_r, half_t, sin_t])
    summary = {"count": n, "thickness_mm_range": list(cfg.membrane_thickness_mm),
               "thickness_mm_mean": round(float(2 * half_t.mean()) * vox, 5),
               "half_width_mm_range": list(cfg.membrane_half_width_mm),
               "curvature_radius_mm_range": list(cfg.membrane_curvature_radius_mm),
               "per_mm3_target": cfg.membranes_per_mm3}
    return _boxes("cap", params, down - pad, up + pad, shape), summary


def sample_beads(rng: np.random.Generator, shape: tuple[int, int, int],
                 cfg: MicroCTConfig) -> tuple[Primitives, dict]:
    """Spheres with centres uniform in the volume and uniform radii."""
    vox = cfg.voxel_mm
    size = np.asarray(shape, dtype=np.float64)
    n = max(1, int(rng.poisson(cfg.beads_per_mm3 * np.prod(size) * vox ** 3)))
    centre = rng.uniform(-0.5, size - 0.5, size=(n, 3))
    r = rng.uniform(*cfg.bead_radius_mm, size=n) / vox
    params = np.column_stack([centre, r])
    summary = {"count": n, "radius_mm_range": list(cfg.bead_radius_mm),
               "radius_mm_mean": round(float(r.mean()) * vox, 5),
               "per_mm3_target": cfg.beads_per_mm3}
    return _boxes("bead", params, centre - r[:, None], centre + r[:, None], shape), summary


def _grid(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray):
    # Open grids of voxel-centre coordinates relative to `origin` (broadcast, not meshgrid).
    return (np.arange(lo[0], hi[0] + 1, dtype=np.float64)[:, None, None] - origin[0],
            np.arange(lo[1], hi[1] + 1, dtype=np.float64)[None, :, None] - origin[1],
            np.arange(lo[2], hi[2] + 1, dtype=np.float64)[None, None, :] - origin[2])


def _signed_distance(kind: str, p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    if kind == "bead":
        x, y, z = _grid(lo, hi, p[:3])
        return np.sqrt(x * x + y * y + z * z) - p[3]
    if kind == "tube":
        x, y, z = _grid(lo, hi, p[:3])
        d = p[3:6] - p[:3]
        t = np.clip((x * d[0] + y * d[1] + z * d[2]) / max(float(d @ d), 1e-12), 0.0, 1.0)
        ex, ey, ez = x - t * d[0], y - t * d[1], z - t * d[2]
        return np.sqrt(ex * ex + ey * ey + ez * ez) - (p[6] + t * (p[7] - p[6]))
    x, y, z = _grid(lo, hi, p[:3])  # cap: shell distance, cut by the cone of half-angle theta
    n = p[3:6]
    rho = np.sqrt(x * x + y * y + z * z)
    along = x * n[0] + y * n[1] + z * n[2]
    off_axis = np.sqrt(np.maximum(rho * rho - along * along, 0.0))
    rim = np.where(along > 0, off_axis - rho * p[8], np.inf)
    return np.maximum(np.abs(rho - p[6]) - p[7], rim)


def rasterise(prims: Primitives, occupancy: np.ndarray, k_lo: int) -> None:
    """Draw the partial-volume occupancy of every primitive reaching ``occupancy`` (in place).

    Args:
        prims: one class of primitives.
        occupancy: float32 array (X, Y, K) holding planes ``k_lo .. k_lo + K - 1``; each voxel
            keeps the maximum over primitives (order-independent, hence slab-independent).
        k_lo: global index of the first plane.

    Note:
        Occupancy is ``clip(0.5 - sd, 0, 1)``: a linear ramp one voxel wide across the
        surface, the fraction of a voxel inside a locally planar boundary. A voxel is labelled
        when its centre is inside (occupancy >= 0.5).
    """
    k_hi = k_lo + occupancy.shape[2]
    shift = np.array([0, 0, k_lo])
    for idx in prims.touching(k_lo, k_hi):
        lo = prims.lo[idx].copy()
        hi = prims.hi[idx].copy()
        lo[2], hi[2] = max(lo[2], k_lo), min(hi[2], k_hi - 1)
        sd = _signed_distance(prims.kind, prims.params[idx], lo, hi)
        occ = np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)
        a, b = lo - shift, hi - shift + 1
        view = occupancy[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        np.maximum(view, occ, out=view)
