"""Per-slice shifts refined where the long-axis planes cross the short-axis slices.

The long-axis cines are acquired in their own breath-holds and are not shifted with the
short-axis slices, so along the line where a long-axis plane crosses short-axis slice k,
both segmentations label the same anatomy once slice k's shift is undone. With two
long-axis views crossing each slice at different angles, both in-plane components of
the shift are determined. This is the intersection-consistency idea of slice-to-slice
motion correction (e.g. Sinclair et al., "Fully automated segmentation-based respiratory
motion correction of multiplanar cardiac magnetic resonance images for large-scale
datasets", MICCAI 2017), here as a refinement of the latent fit's shifts
(:mod:`medflow.superres.latent`): the latent fit places the whole heart; this step
corrects each slice against the long axis alone, which the prior's shape errors do not
bias.

Loss: for every long-axis pixel within ``band_mm`` of a slice's centre plane, the
cross-entropy of its label under ``softmax(-d / TAU_MM)``, where d are the slice's
in-plane signed distances per class (:func:`medflow.superres.baselines.signed_distance_2d`)
sampled bilinearly at the pixel's position plus the slice's shift; plus
``ANCHOR_WEIGHT`` times the mean squared change from the starting shifts (which holds
slices that no long-axis pixel reaches).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from medflow.superres.baselines import signed_distance_2d
from medflow.superres.geometry import apply_affine, voxel_points
from medflow.superres.shapes import class_map

#: Softness of the class boundaries (mm): about a stack pixel.
TAU_MM = 1.0
#: Weight of the mean squared change from the starting shifts (per mm^2).
ANCHOR_WEIGHT = 1e-3
#: Adam step (mm).
LR_MM = 0.2
#: Below this agreement as acquired, the long-axis labels are not of this heart and frame:
#: on the demo cohort a subject's own planes agree on 0.86-0.94 of the crossing pixels
#: before any correction (ED and ES of 50 subjects; the same from segment-cascaded's
#: predictions; about 0.98 after), another subject's on 0.12-0.33.
MIN_AGREEMENT = 0.5


def _crossings(stack_shape, stack_affine: np.ndarray, long_axis, labels, band_mm: float):
    """Long-axis pixels near a slice's centre plane: (slice, (i, j) in the stack, class)."""
    inv = np.linalg.inv(np.asarray(stack_affine, np.float64))
    thickness = float(np.linalg.norm(np.asarray(stack_affine)[:3, 2]))
    x, y, n = stack_shape
    values_of = np.asarray(labels)
    slices, ij, classes = [np.zeros(0, int)], [np.zeros((0, 2))], [np.zeros(0, np.int64)]
    for lab, affine in long_axis:
        v = apply_affine(inv, voxel_points(affine, np.shape(lab)).reshape(-1, 3))
        k = np.rint(v[:, 2]).astype(int)
        keep = ((np.abs(v[:, 2] - k) * thickness <= band_mm) & (k >= 0) & (k < n)
                & (v[:, 0] > -0.5) & (v[:, 0] < x - 0.5) & (v[:, 1] > -0.5)
                & (v[:, 1] < y - 0.5))
        values = np.asarray(lab).reshape(-1)[keep]
        known = np.isin(values, values_of)  # other values are left out, not guessed
        slices.append(k[keep][known])
        ij.append(v[keep][known, :2])
        classes.append(np.argmax(values[known][:, None] == values_of, axis=1))
    return np.concatenate(slices), np.concatenate(ij), np.concatenate(classes)


def agreement(stack: np.ndarray, stack_affine: np.ndarray, long_axis,
              shifts_mm: np.ndarray | None = None, labels=(0, 1, 2, 3),
              band_mm: float = 1.0) -> float | None:
    """The fraction of crossing pixels (long-axis pixels within ``band_mm`` of a slice's
    centre plane, foreground in either view) where the slice, with ``shifts_mm`` undone,
    shows the long-axis pixel's label; None when no labelled pixel crosses."""
    k_of, ij, classes = _crossings(np.shape(stack), stack_affine, long_axis, labels, band_mm)
    spacing = np.linalg.norm(np.asarray(stack_affine)[:3, :2], axis=0)
    shifts = np.zeros((np.shape(stack)[2], 2)) if shifts_mm is None else np.asarray(shifts_mm)
    stack_classes = class_map(stack, tuple(labels))
    seen = np.zeros(len(k_of), int)
    for k in np.unique(k_of):
        at = k_of == k
        pos = ij[at] + shifts[k] / spacing
        seen[at] = map_coordinates(stack_classes[..., k], pos.T, order=0, mode="nearest")
    fg = (seen > 0) | (classes > 0)
    return float((seen[fg] == classes[fg]).mean()) if fg.any() else None


def refine_shifts(stack: np.ndarray, stack_affine: np.ndarray, long_axis,
                  shifts_mm: np.ndarray, labels=(0, 1, 2, 3), steps: int = 150,
                  band_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Refine per-slice shifts so that each slice agrees with the long-axis planes.

    Args:
        stack: (X, Y, K) short-axis label values of one frame.
        stack_affine: its affine.
        long_axis: [(labels (X', Y', 1), affine)] long-axis planes at the same frame.
        shifts_mm: (K, 2) starting shifts (mm along voxel axes i, j; ``truth.json``'s
            convention), e.g. the latent fit's.
        labels: the label values (background first).
        steps: Adam steps.
        band_mm: long-axis pixels this close to a slice's centre plane count.

    Returns:
        (shifts (K, 2) mm, crossed (K,) bool: slices with labels that long-axis pixels
        reached; the others keep their starting shift).
    """
    k_of, ij, classes = _crossings(np.shape(stack), stack_affine, long_axis, labels, band_mm)
    n = np.shape(stack)[2]
    # a slice without labels has flat distances: nothing to refine it by
    crossed = (np.bincount(k_of, minlength=n) > 0) & (np.asarray(stack) > 0).any(axis=(0, 1))
    start = np.asarray(shifts_mm, np.float64)
    if not crossed.any() or steps < 1:
        return start.copy(), crossed
    spacing = np.linalg.norm(np.asarray(stack_affine)[:3, :2], axis=0)
    sdf = torch.from_numpy(np.stack([np.stack([signed_distance_2d(stack[..., k] == v, spacing)
                                               for v in labels]) for k in range(n)]))
    x, y = np.shape(stack)[:2]
    groups = [(k, torch.from_numpy(np.nonzero(k_of == k)[0])) for k in np.nonzero(crossed)[0]]
    pixel = torch.from_numpy(ij.astype(np.float32))
    target = torch.from_numpy(classes)
    to_grid = torch.tensor([2.0 / (x - 1), 2.0 / (y - 1)], dtype=torch.float32)
    scale = to_grid / torch.from_numpy(spacing.astype(np.float32))  # mm -> grid units
    shifts0 = torch.from_numpy(start.astype(np.float32))
    shifts = shifts0.clone().requires_grad_(True)
    opt = torch.optim.Adam([shifts], lr=LR_MM)
    for _ in range(steps):
        terms = []
        for k, idx in groups:
            # the slice shows at p the anatomy at p - s_k: sample it at p + s_k
            pos = pixel[idx] * to_grid - 1 + shifts[k] * scale
            grid = pos.flip(-1)[None, None]  # grid_sample wants (width j, height i)
            d = F.grid_sample(sdf[k:k + 1], grid, align_corners=True,
                              padding_mode="border")[0, :, 0].T
            terms.append(F.cross_entropy(-d / TAU_MM, target[idx], reduction="sum"))
        loss = torch.stack(terms).sum() / len(target) \
            + ANCHOR_WEIGHT * ((shifts - shifts0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return shifts.detach().double().numpy(), crossed
