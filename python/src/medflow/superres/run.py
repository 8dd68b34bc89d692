"""One frame of a stack super-resolved by any method (:func:`super_resolve_frame`) and the
file-level work of ``super-resolve predict`` (:func:`predict_files`, :func:`predict_batch`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.images import read_image, write_nifti
from medflow.io.outputs import check_outputs
from medflow.io.sidecar import Timer, make_sidecar, sidecar_path, write_json
from medflow.io.volume import Volume
from medflow.superres import baselines, inputs
from medflow.superres.geometry import output_grid

LABEL_METHODS = ("latent", "joint", "nearest", "linear", "sdf")
TOOL = "super-resolve"


@dataclass
class FrameResult:
    """One super-resolved frame: labels (and image) on the output grid, and what the
    method found (shifts, canonical frame, loss) for the sidecar."""

    labels: np.ndarray
    image: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def super_resolve_frame(method: str, stack: np.ndarray, stack_affine: np.ndarray,
                        affine: np.ndarray, shape, *, net=None, image: np.ndarray | None = None,
                        long_axis=(), fit_options=None, seed: int = 0,
                        prior=None) -> FrameResult:
    """Super-resolve one frame.

    Args:
        method: ``latent``, ``joint``, ``nearest``, ``linear`` or ``sdf``.
        stack: (X, Y, K) label values of the frame.
        stack_affine: the stack's affine.
        affine, shape: the output grid.
        net: the prior (``latent``) or the joint network (``joint``).
        image: (X, Y, K) the frame's image: the ``joint`` network's input; with the
            baselines it is B-spline interpolated, with ``latent`` too once the fitted
            shifts are undone.
        long_axis: [(labels (X, Y, 1), affine)] at the same frame: ``latent``, and
            ``joint`` with a ``prior``.
        fit_options: :class:`~medflow.superres.latent.FitOptions`.
        seed: seeds the optimisation.
        prior: ``joint`` only: the shape prior the network was trained with; the
            stack's slice shifts are estimated with it (:func:`estimate_shifts`) and
            undone on the network's input, as in training.

    Returns:
        :class:`FrameResult`; ``info["seconds"]`` the method's own time.
    """
    t0 = time.perf_counter()
    info: dict = {}
    out_image = None
    if method == "latent":
        labels, out_image, info = _latent_frame(net, stack, stack_affine, affine, shape, image,
                                                list(long_axis), fit_options, seed)
    elif method == "joint":
        from medflow.superres.joint import image_scale, network_input, run_joint

        shifts = None
        if prior is not None:
            shifts, _, info = estimate_shifts(prior, stack, stack_affine, long_axis,
                                              fit_options, seed)
        elif long_axis:
            raise ValueError("long-axis planes are used by the latent method and by a joint "
                             "model trained with a prior (train --prior)")
        scale = image_scale(image)
        x = network_input(image, stack, stack_affine, affine, shape, net.cfg, scale,
                          shifts_mm=shifts)
        image_hr, classes = run_joint(net, x)
        labels = np.asarray(net.cfg.labels, np.uint8)[classes]
        out_image = image_hr * np.float32(scale)
        info = {**info, "intensity_scale": scale, "motion_corrected": prior is not None}
    elif method in ("nearest", "linear", "sdf"):
        fn = {"nearest": baselines.nearest_labels, "linear": baselines.linear_labels,
              "sdf": baselines.sdf_labels}[method]
        labels = fn(stack, stack_affine, affine, shape)
        if image is not None:
            out_image = baselines.bspline_image(image, stack_affine, affine, shape)
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(LABEL_METHODS)}")
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return FrameResult(labels, out_image, info)


def estimate_shifts(prior, stack: np.ndarray, stack_affine: np.ndarray, long_axis=(),
                    fit_options=None, seed: int = 0):
    """Motion correction of one frame: the per-slice in-plane shifts, fitted with the shape
    prior (:func:`medflow.superres.latent.fit_latent`) and, with long-axis views, refined
    where their planes cross each slice (:func:`medflow.superres.intersect.refine_shifts`).

    Args:
        prior: the shape prior (:class:`~medflow.superres.prior.ShapeVAE`).
        stack: (X, Y, K) label values; stack_affine: its affine.
        long_axis: [(labels (X, Y, 1), affine)] of the same frame.
        fit_options: :class:`~medflow.superres.latent.FitOptions`.

    Returns:
        (shifts (K, 2) mm in truth.json's convention, the fit, sidecar info).

    Raises:
        ValueError: long-axis labels that agree with the stack on under
            ``MIN_AGREEMENT`` of the pixels where they cross (another subject's?), or a
            stack the prior cannot place (no LV).
    """
    from medflow.superres.intersect import MIN_AGREEMENT, agreement, refine_shifts
    from medflow.superres.latent import FitOptions, fit_latent

    opts = fit_options or FitOptions()
    long_axis = list(long_axis)
    acquired = agreement(stack, stack_affine, long_axis, None, prior.cfg.labels) \
        if long_axis else None
    if acquired is not None and acquired < MIN_AGREEMENT:
        raise ValueError(f"the long-axis labels (--la-2ch/--la-4ch) agree with the short-axis "
                         f"labels on {acquired:.0%} of the pixels where the planes cross "
                         f"(< {MIN_AGREEMENT:.0%}): another subject's or frame's?")
    import torch

    # one thread: PyTorch's multi-threaded sums come out in another order from run to run,
    # and the fitted shifts (and so the output) with them; same seed, same bytes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit = fit_latent(prior, stack, stack_affine, long_axis, opts, seed)
        shifts, crossed = fit.shifts_mm, np.zeros(len(fit.shifts_mm), bool)
        if long_axis and opts.refine_steps:
            shifts, crossed = refine_shifts(stack, stack_affine, long_axis, fit.shifts_mm,
                                            prior.cfg.labels, opts.refine_steps,
                                            opts.refine_band_mm)
    finally:
        torch.set_num_threads(threads)
    info = {"slice_shifts_mm": shifts.round(4).tolist(),
            "latent_slice_shifts_mm": fit.shifts_mm.round(4).tolist(),
            "slice_refined_on_long_axis": crossed.tolist(),
            "long_axis_agreement": None if acquired is None else {
                "acquired": round(acquired, 4),
                "corrected": round(agreement(stack, stack_affine, long_axis, shifts,
                                             prior.cfg.labels), 4)},
            "slice_has_labels": fit.slice_has_labels.tolist(),
            "canonical_frame": fit.frame.as_dict(), "final_loss": fit.history[-1],
            "iterations": len(fit.history), "long_axis_views": len(long_axis)}
    return shifts, fit, info


def _latent_frame(net, stack, stack_affine, affine, shape, image, long_axis, fit_options,
                  seed):
    """The latent method on one frame: (labels, image or None, sidecar info)."""
    from medflow.superres.latent import FitOptions, render_labels

    opts = fit_options or FitOptions()
    shifts, fit, info = estimate_shifts(net, stack, stack_affine, long_axis, opts, seed)
    if opts.shape_from == "prior":
        labels = render_labels(net, fit, affine, shape)
    else:  # the stack, motion-corrected
        labels = baselines.sdf_labels(stack, stack_affine, affine, shape,
                                      values=net.cfg.labels, shifts_mm=shifts)
    out_image = None if image is None else baselines.bspline_image(
        image, stack_affine, affine, shape, shifts_mm=shifts)
    return labels, out_image, {"shape_from": opts.shape_from, **info}


def frame_path(template: Path, frame: str, several: bool) -> Path:
    """The file of one frame: ``{frame}`` in the name is replaced; without it a single
    frame is written as named and several get ``_<frame>`` before the extension."""
    name = template.name
    if "{frame}" in name:
        return template.with_name(name.replace("{frame}", frame))
    if not several:
        return template
    stem, ext = (name[:-7], ".nii.gz") if name.endswith(".nii.gz") else (template.stem,
                                                                        template.suffix)
    return template.with_name(f"{stem}_{frame}{ext}")


def predict_files(method: str, seg: Path, output: Path, *, net=None, card: dict | None = None,
                  model_dir: Path | None = None, image: Path | None = None,
                  output_image: Path | None = None, la: dict[str, Path] | None = None,
                  frames: str = "ed,es", grid_like: Path | None = None, fit_options=None,
                  seed: int = 0, parameters: dict | None = None, prior=None) -> list[Path]:
    """Read, check, super-resolve every selected frame and write labels (and image) with a
    sidecar each (``prior``: a joint model's shape prior, which motion-corrects the stack).
    Returns the label files written."""
    timer = Timer()
    stack = inputs.read_stack(seg)
    if card is not None:
        inputs.check_labels(stack, tuple(card["config"]["labels"]), seg, model_dir)
    img = inputs.read_image_on_stack(image, stack) if image is not None else None
    if method == "joint" and img is None:
        raise InvalidDataError("the joint method super-resolves the image with its labels: "
                               "give --image", seg)
    las = {view: inputs.read_long_axis(path, stack) for view, path in (la or {}).items()}
    if las and method != "latent" and prior is None:
        raise InvalidDataError("long-axis planes are used by the latent method and by a joint "
                               "model trained with a prior (train --prior)", seg)
    for view, vol in las.items():
        if card is not None:
            inputs.check_labels(vol, tuple(card["config"]["labels"]), la[view], model_dir)
    try:
        chosen = inputs.select_frames(stack, frames)
    except ValueError as exc:
        raise InvalidDataError(str(exc), seg) from None
    if grid_like is not None:
        ref = read_image(grid_like)
        affine, shape = ref.affine, ref.shape3
    else:
        affine, shape = output_grid(stack.data, stack.affine)
    several = len(chosen) > 1
    planned = [frame_path(output, name, several) for name, _ in chosen]
    images = [frame_path(output_image, name, several) for name, _ in chosen] \
        if output_image is not None and img is not None else []
    check_outputs([*planned, *map(sidecar_path, planned), *images],
                  [seg, image, model_dir, grid_like, *(la or {}).values()])
    timer.mark("read_s")
    data = inputs.frames_of(stack)
    written = []
    with atomic_outputs() as out:
        for name, t in chosen:
            views = inputs.long_axis_at(las.values(), t)
            frame_img = inputs.frames_of(img)[..., t] if img is not None else None
            try:
                result = super_resolve_frame(method, data[..., t], stack.affine, affine, shape,
                                             net=net, image=frame_img, long_axis=views,
                                             fit_options=fit_options, seed=seed, prior=prior)
            except ValueError as exc:  # e.g. a frame without LV to place the heart
                raise InvalidDataError(f"frame {t}: {exc}", seg) from None
            path = frame_path(output, name, several)
            write_nifti(Volume(result.labels, affine, kind="label"), out.path(path))
            files = {"input": seg, "image": image, "model": model_dir, "grid_like": grid_like,
                     **{f"long_axis_{v}": p for v, p in (la or {}).items()}}
            outputs = {"labels": str(path)}
            if result.image is not None and output_image is not None:
                ipath = frame_path(output_image, name, several)
                write_nifti(Volume(result.image.astype(np.float32), affine), out.path(ipath))
                outputs["image"] = str(ipath)
            params = {"method": method, "frame": name, "frame_index": t, "seed": seed,
                      **(parameters or {})}
            sidecar = make_sidecar(TOOL, params, files, timer, outputs=outputs,
                                   output_geometry={"shape": list(shape),
                                                    "affine": np.asarray(affine).tolist()},
                                   result=result.info)
            write_json(sidecar, out.path(sidecar_path(path)))
            written.append(path)
    return written
