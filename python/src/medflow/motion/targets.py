"""From label maps to slicer targets: every acquired plane (each short-axis slice, each
long-axis image) with its signed distance maps, areas and boundary lengths per frame.

Surface classes and the labels whose region boundary they match (UK Biobank labels):
LV endocardium <- LV blood pool (1); LV epicardium <- LV blood pool + myocardium (1, 2);
RV endocardium <- RV blood pool (3). Atria (4, 5) and anything else count as background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from medflow.cardiac.labels import LV_BLOOD, LV_MYO, RV_BLOOD
from medflow.motion.slicer import PlaneTargets

CLASS_LABELS = ((LV_BLOOD,), (LV_BLOOD, LV_MYO), (RV_BLOOD,))
CROP_MARGIN_MM = 20.0
MIN_PERIMETER_MM = 20.0


@dataclass
class View:
    """One acquired view: label maps (X, Y, Z, T) on a grid with a 4x4 affine (RAS mm)."""

    name: str                 # "sa", "la_2ch", "la_4ch"
    labels: np.ndarray        # (X, Y, Z, T) integer labels
    affine: np.ndarray        # voxel -> world

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def frames(self) -> int:
        return int(self.labels.shape[3])

    def plane(self, k: int) -> tuple[np.ndarray, ...]:
        """(origin, normal, u, v) of slice k: world mm, unit vectors."""
        a = self.affine
        u, v = a[:3, 0] / self.spacing[0], a[:3, 1] / self.spacing[1]
        n = np.cross(u, v)
        return a[:3, :3] @ np.array([0.0, 0.0, k]) + a[:3, 3], n / np.linalg.norm(n), u, v


def signed_distance(mask: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) to the boundary between pixel centres of a
    2D mask; the boundary lies half a pixel from the centres on either side."""
    half = 0.5 * float(min(pixel))
    if not mask.any():
        return np.full(mask.shape, 1e3, np.float32)
    if mask.all():
        return np.full(mask.shape, -1e3, np.float32)
    outside = ndimage.distance_transform_edt(~mask, sampling=pixel)
    inside = ndimage.distance_transform_edt(mask, sampling=pixel)
    return np.where(mask, -(inside - half), outside - half).astype(np.float32)


def _perimeter(mask: np.ndarray, pixel: np.ndarray) -> float:
    """Boundary length estimate: pixel edges between inside and outside, times pi/4
    (the mean ratio of a staircase to the smooth curve it digitises)."""
    m = np.pad(mask, 1)
    edges_u = np.count_nonzero(m[1:, :] != m[:-1, :]) * pixel[1]
    edges_v = np.count_nonzero(m[:, 1:] != m[:, :-1]) * pixel[0]
    return float((edges_u + edges_v) * np.pi / 4)


def build_targets(views: list[View], weights: dict[str, float] | None = None,
                  dtype=torch.float32) -> tuple[PlaneTargets, list[tuple[str, int]]]:
    """Targets of every plane of every view, all frames.

    Args:
        views: the views (same frame count).
        weights: relative weight per view name (default 1).
        dtype: tensor dtype.

    Returns:
        (targets, planes) with ``planes[i] = (view name, slice index)``; short-axis slices
        get consecutive ``shift_index`` values (their breath-hold shifts), others -1.
    """
    weights = weights or {}
    rows, maps = [], []
    n_sa = 0
    for view in views:
        pixel = view.spacing[:2]
        margin = np.ceil(CROP_MARGIN_MM / pixel).astype(int)
        for k in range(view.labels.shape[2]):
            lab = np.asarray(view.labels[:, :, k, :])                  # (X, Y, T)
            fg = np.isin(lab, (LV_BLOOD, LV_MYO, RV_BLOOD)).any(-1)
            if fg.any():
                ii, jj = np.nonzero(fg)
                lo = np.maximum([ii.min() - margin[0], jj.min() - margin[1]], 0)
                hi = np.minimum([ii.max() + margin[0] + 1, jj.max() + margin[1] + 1], fg.shape)
            else:
                lo, hi = np.array([0, 0]), np.array([2, 2])
            sub = lab[lo[0]:hi[0], lo[1]:hi[1]]
            per = []
            for t in range(sub.shape[-1]):
                per.append([np.isin(sub[..., t], labels) for labels in CLASS_LABELS])
            masks = np.asarray(per)                                  # (T, C, h, w)
            sdf = np.stack([[signed_distance(m, pixel) for m in mt] for mt in masks])
            area = masks.sum((-2, -1)) * float(np.prod(pixel))
            perim = np.array([[_perimeter(m, pixel) for m in mt] for mt in masks])
            origin, normal, u, v = view.plane(k)
            shift = n_sa if view.name == "sa" else -1
            n_sa += view.name == "sa"
            rows.append((origin, normal, u, v, pixel, lo, masks.any((-2, -1)), area, perim,
                         weights.get(view.name, 1.0), shift, (view.name, k)))
            maps.append(sdf)
    H = max(m.shape[-2] for m in maps)
    W = max(m.shape[-1] for m in maps)
    T = maps[0].shape[0]
    sdf = np.full((T, len(maps), len(CLASS_LABELS), H, W), 1e3, np.float32)
    for p, m in enumerate(maps):
        sdf[:, p, :, :m.shape[-2], :m.shape[-1]] = m
    sizes = [m.shape[-2:] for m in maps]
    cols = list(zip(*rows))

    def t(values, dt=dtype):
        return torch.as_tensor(np.asarray(values), dtype=dt)

    targets = PlaneTargets(
        origin=t(cols[0]), normal=t(cols[1]), u=t(cols[2]), v=t(cols[3]), pixel=t(cols[4]),
        crop=t(cols[5]), size=t(sizes, torch.long), sdf=torch.as_tensor(sdf, dtype=dtype),
        present=t(np.stack(cols[6], 1), torch.bool), area=t(np.stack(cols[7], 1)),
        perimeter=t(np.maximum(np.stack(cols[8], 1), MIN_PERIMETER_MM)),
        weight=t(cols[9]), shift_index=t(cols[10], torch.long))
    return targets, list(cols[11])
