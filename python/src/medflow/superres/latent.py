"""The ``latent`` method: super-resolution and motion correction by optimisation in the
latent space of a shape prior (Wang et al., MICCAI 2021; ``shared/seeds/``).

Unknowns: the latent code z (the shape), one in-plane shift per short-axis slice, and a
small rigid correction of the canonical frame estimated from the stack's labels. The
decoded shape, degraded like the acquisition (:mod:`medflow.superres.degrade`), must
explain the observed labels (cross-entropy per pixel); long-axis segmentations, which
are not shifted, add the same term on their planes (the multi-view loss). A Gaussian
prior on z keeps the shape plausible.

Gauge: from the short axis alone a common shift of all slices is the same as moving the
heart, and a shift growing linearly along the stack nearly the same as tilting it; the
shifts are then reported with zero mean, and a small penalty on them chooses the rest.
The long-axis planes fix both: with them the shifts are absolute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from medflow.superres.degrade import observed_points, plane_offsets
from medflow.superres.geometry import (Frame, canonical_frame, in_plane_units, slice_normal,
                                       voxel_points)
from medflow.superres.prior import ShapeVAE, log_probs_at
from medflow.superres.shapes import class_map, stack_to_canonical


@dataclass
class FitOptions:
    """Settings of the latent optimisation (recorded in sidecars).

    Attributes:
        iterations: Adam steps.
        lr_latent, lr_shift_mm, lr_rotation, lr_translation_mm: step sizes.
        prior_weight: weight of 0.5 |z|^2 against the mean cross-entropy per pixel.
        shift_weight: weight of the mean squared shift (mm^2).
        thickness_mm, planes: the slice profile of the label model.
        la_weight: weight of a long-axis pixel relative to a short-axis one.
        margin_mm: pixels this far outside the canonical box still count.
        band_mm: background pixels within this distance (in-plane) of a labelled pixel
            all count; farther ones, which the decoded shape explains at once, count
            one in ``far_every`` (each weighing ``far_every``): a cheaper loss (every 4th
            moved the apical slice's shift by 0.35 mm in tests/superres; 2 does not).
        shape_from: the written shape (:func:`medflow.superres.run.super_resolve_frame`):
            ``stack``, the observed stack with the fitted shifts undone and interpolated
            between slices by signed distances (the ``sdf`` baseline's interpolation);
            ``prior``, the decoded shape itself (the seed's output). On the demo cohort
            ``stack`` scores higher on every label (benchmarks/superres/README.md): the
            decoded shape is no better than the prior's own reconstruction, while the
            observed slices are exact where they were acquired.
        refine_steps, refine_band_mm: with long-axis views, the fitted shifts are then
            refined against the long-axis labels where they cross each slice
            (:func:`medflow.superres.intersect.refine_shifts`; 0 steps: not refined).
    """

    iterations: int = 120
    lr_latent: float = 0.05
    lr_shift_mm: float = 0.3
    lr_rotation: float = 0.01
    lr_translation_mm: float = 0.3
    prior_weight: float = 1e-4
    shift_weight: float = 1e-4
    thickness_mm: float = 0.0
    planes: int = 3
    la_weight: float = 1.0
    margin_mm: float = 8.0
    band_mm: float = 15.0
    far_every: int = 2
    shape_from: str = "stack"
    refine_steps: int = 150
    refine_band_mm: float = 1.0


@dataclass
class FitResult:
    """What the optimisation found for one frame.

    Attributes:
        latent: (L,) the shape code.
        frame: the final canonical frame (world <-> canonical).
        shifts_mm: (K, 2) per-slice shifts along the stack's voxel axes i, j (the
            ``truth.json`` convention).
        slice_has_labels: (K,) whether a slice held foreground (the others' shifts are
            not determined by the data: they are the labelled slices' mean).
        history: loss per iteration.
        seconds: wall time of the optimisation.
    """

    latent: np.ndarray
    frame: Frame
    shifts_mm: np.ndarray
    slice_has_labels: np.ndarray
    history: list = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class View:
    """Observed label pixels of one view, inside the canonical box."""

    points: torch.Tensor        # (N, 3) world mm minus the initial centre
    classes: torch.Tensor       # (N,) class indices
    slice_index: torch.Tensor   # (N,) slice of each pixel (0 for a long-axis plane)
    normal: torch.Tensor        # (3,)
    weight: torch.Tensor        # (N,) weight of each pixel in the loss


def _view(classes: np.ndarray, affine: np.ndarray, frame: Frame, net: ShapeVAE,
          opts: "FitOptions") -> View:
    cfg = net.cfg
    pts = voxel_points(affine, classes.shape).reshape(-1, 3)
    q = frame.to_canonical(pts)
    lo = np.asarray(cfg.origin_mm) - opts.margin_mm
    hi = (np.asarray(cfg.origin_mm) + cfg.spacing_mm * (np.asarray(cfg.shape) - 1)
          + opts.margin_mm)
    inside = np.all((q >= lo) & (q <= hi), axis=1)
    near = np.zeros(classes.shape, bool)
    pixel = np.linalg.norm(np.asarray(affine)[:3, :2], axis=0)
    for k in range(classes.shape[2]):
        fg = classes[..., k] > 0
        near[..., k] = fg if not fg.any() else (
            distance_transform_edt(~fg, sampling=pixel) <= opts.band_mm)
    i, j = np.meshgrid(np.arange(classes.shape[0]), np.arange(classes.shape[1]), indexing="ij")
    sampled = np.broadcast_to(((i + j) % max(opts.far_every, 1) == 0)[..., None], classes.shape)
    near, sampled = near.reshape(-1), sampled.reshape(-1)
    keep = inside & (near | sampled)
    weight = np.where(near, 1.0, float(max(opts.far_every, 1)))[keep]
    k = np.broadcast_to(np.arange(classes.shape[2]), classes.shape).reshape(-1)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return View(f32(pts[keep] - frame.centre),
                torch.from_numpy(classes.reshape(-1)[keep].astype(np.int64)),
                torch.from_numpy(k[keep].astype(np.int64)), f32(slice_normal(affine)),
                f32(weight))


def _rodrigues(v: torch.Tensor) -> torch.Tensor:
    angle = torch.sqrt((v * v).sum() + 1e-20)
    k = v / angle
    zero = torch.zeros((), dtype=v.dtype)
    kx = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                      torch.stack([-k[1], k[0], zero])])
    return torch.eye(3, dtype=v.dtype) + torch.sin(angle) * kx + (1 - torch.cos(angle)) * kx @ kx


def _view_nll(logits, view: View, offsets, rotation, translation, w2g, shifts=None,
              units=None) -> torch.Tensor:
    src = view.points if shifts is None else observed_points(view.points, view.slice_index,
                                                             shifts, units)
    prob = None
    for d in offsets:
        q = (src + float(d) * view.normal - translation) @ rotation
        p = log_probs_at(logits, q, w2g).exp()
        prob = p if prob is None else prob + p
    prob = prob / len(offsets)
    return -torch.log(prob.gather(1, view.classes[:, None]).clamp_min(1e-6)).squeeze(1)


def fit_latent(net: ShapeVAE, stack: np.ndarray, stack_affine: np.ndarray,
               long_axis: list[tuple[np.ndarray, np.ndarray]] = (),
               options: FitOptions | None = None, seed: int = 0) -> FitResult:
    """Fit the prior to one frame of a short-axis label stack.

    Args:
        net: the shape prior (weights frozen).
        stack: (X, Y, K) label values (the prior's labels).
        stack_affine: its affine.
        long_axis: (labels (X, Y, 1), affine) of long-axis planes at the same frame.
        options: :class:`FitOptions`.
        seed: seeds torch (the optimisation itself draws nothing).

    Returns:
        :class:`FitResult`.

    Raises:
        ValueError: labels outside the prior's, or no LV to place the heart.
    """
    opts = options or FitOptions()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    cfg = net.cfg
    frame0 = canonical_frame(stack, stack_affine)
    sa = _view(class_map(stack, cfg.labels), stack_affine, frame0, net, opts)
    las = [_view(class_map(lab, cfg.labels), aff, frame0, net, opts) for lab, aff in long_axis]
    n_slices = stack.shape[2]
    has_labels = (np.asarray(stack) > 0).any(axis=(0, 1))
    labelled = torch.from_numpy(has_labels)
    units = torch.from_numpy(in_plane_units(stack_affine).astype(np.float32))
    w2g = torch.from_numpy(cfg.world_to_grid().astype(np.float32))
    r0 = torch.from_numpy(frame0.rotation.astype(np.float32))
    with torch.no_grad():
        x = stack_to_canonical(class_map(stack, cfg.labels), stack_affine, frame0, cfg)
        z0 = net.encode(torch.from_numpy(x)[None])[0][0]
    z = z0.clone().requires_grad_(True)
    shifts = torch.zeros(n_slices, 2, requires_grad=True)
    rotvec = torch.full((3,), 1e-6, requires_grad=True)
    translation = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([{"params": [z], "lr": opts.lr_latent},
                            {"params": [shifts], "lr": opts.lr_shift_mm},
                            {"params": [rotvec], "lr": opts.lr_rotation},
                            {"params": [translation], "lr": opts.lr_translation_mm}])
    sa_offsets = plane_offsets(opts.thickness_mm, opts.planes)
    history = []

    def effective(s):
        if not labelled.any():
            return s
        if not las:
            s = s - s[labelled].mean(dim=0, keepdim=True)  # gauge: zero mean (SA only)
        # A slice without labels says nothing about its shift (left free, one drifted
        # 45 mm on the demo cohort): it takes the labelled slices' mean, and its
        # background pixels then say "no heart here" where it was acquired.
        return torch.where(labelled[:, None], s, s[labelled].mean(dim=0, keepdim=True).detach())

    for _ in range(opts.iterations):
        logits = net.decode(z[None])[0]
        rotation = r0 @ _rodrigues(rotvec)
        s = effective(shifts)
        nll = _view_nll(logits, sa, sa_offsets, rotation, translation, w2g, s, units)
        total, count = (nll * sa.weight).sum(), float(sa.weight.sum())
        for view in las:
            nll_la = _view_nll(logits, view, [0.0], rotation, translation, w2g)
            total = total + opts.la_weight * (nll_la * view.weight).sum()
            count += opts.la_weight * float(view.weight.sum())
        loss = (total / count + opts.prior_weight * 0.5 * (z * z).sum()
                + opts.shift_weight * (s[labelled] ** 2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        rotation = (r0 @ _rodrigues(rotvec)).double().numpy()
        centre = frame0.centre + translation.double().numpy()
        final = effective(shifts).double().numpy()
    return FitResult(z.detach().numpy().copy(), Frame(rotation, centre), final, has_labels,
                     history, round(time.perf_counter() - t0, 3))


def render_labels(net: ShapeVAE, result: FitResult, affine: np.ndarray, shape,
                  chunk: int = 1 << 20) -> np.ndarray:
    """The fitted shape's labels (values, uint8) on any grid (X, Y, Z)."""
    cfg = net.cfg
    w2g = torch.from_numpy(cfg.world_to_grid().astype(np.float32))
    values = np.asarray(cfg.labels, np.uint8)
    pts = voxel_points(affine, shape).reshape(-1, 3)
    out = np.empty(len(pts), np.uint8)
    with torch.no_grad():
        logits = net.decode(torch.from_numpy(result.latent)[None])[0]
        for start in range(0, len(pts), chunk):
            q = torch.from_numpy(result.frame.to_canonical(pts[start:start + chunk])
                                 .astype(np.float32))
            out[start:start + chunk] = values[log_probs_at(logits, q, w2g).argmax(1).numpy()]
    return out.reshape(tuple(shape))
