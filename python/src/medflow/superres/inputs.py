"""Reading and checking the inputs of ``super-resolve predict``: the short-axis label
stack, its frames, the optional image and long-axis label planes.

Every problem is a one-line error naming the file: a stack of one slice, no cardiac
labels, labels the model does not know, a long-axis plane that does not cross the stack,
an image not on the stack's grid (65); a missing file (66).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow.cardiac.labels import LV_BLOOD, LV_MYO
from medflow.cardiac.planes import long_axis_problem
from medflow.errors import InvalidDataError
from medflow.io.images import read_image
from medflow.io.volume import Volume, same_space


def frames_of(vol: Volume) -> np.ndarray:
    """(X, Y, Z, T) view of a 3D or 4D volume's data."""
    data = np.asarray(vol.data)
    return data[..., None] if data.ndim == 3 else data


def read_stack(path: str | Path) -> Volume:
    """A short-axis label stack (X, Y, K[, T]) with at least two slices and LV labels."""
    vol = read_image(path, kind="label")
    if vol.shape3[2] < 2:
        raise InvalidDataError(f"a stack of {vol.shape3[2]} slice cannot be super-resolved "
                               "(need at least 2 short-axis slices along the third axis)",
                               path)
    data = frames_of(vol)
    if not ((data == LV_BLOOD).any() and (data == LV_MYO).any()):
        raise InvalidDataError("no cardiac labels: the stack holds no LV blood pool (1) and "
                               "myocardium (2)", path)
    return vol


def check_labels(vol: Volume, known: tuple[int, ...], path, model) -> None:
    """Refuse a stack whose labels the model was not trained for (65)."""
    unknown = sorted(set(np.unique(np.asarray(vol.data)).tolist()) - set(known))
    if unknown:
        shown = f"{unknown[:8]}"[:-1] + (f", ... ({len(unknown)} values)]"
                                          if len(unknown) > 8 else "]")
        raise InvalidDataError(f"labels {shown} are not among the labels {list(known)} the "
                               f"model {model} was trained for", path)


def select_frames(vol: Volume, spec: str) -> list[tuple[str, int]]:
    """Frames to super-resolve as (name, index).

    Args:
        vol: the stack.
        spec: ``ed,es`` (default), ``ed``, ``es`` or ``all``. ED is frame 0 (UK Biobank
            cines are triggered at the R wave), ES the frame of least LV blood pool
            (``shared/CARDIAC.md``). ``all`` names frames ``t00``, ``t01``, ...

    Returns:
        [(name, index)]; a 3D stack is the single frame ``ed``.
    """
    data = frames_of(vol)
    if data.shape[3] == 1:
        return [("ed", 0)]
    if spec == "all":
        return [(f"t{t:02d}", t) for t in range(data.shape[3])]
    lv = (data == LV_BLOOD).reshape(-1, data.shape[3]).sum(axis=0)
    index = {"ed": 0, "es": int(np.argmin(lv))}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in index]
    if bad or not names:
        raise ValueError(f"--frames takes ed, es, ed,es or all, got {spec!r}")
    return [(n, index[n]) for n in names]




def read_long_axis(path: str | Path, stack: Volume) -> Volume:
    """A long-axis label plane (X, Y, 1[, T]) that crosses the short-axis stack. One frame
    is the ED frame's: prediction uses it for frame 0 only.

    Raises:
        InvalidDataError: not a single plane, a frame count other than the stack's, or
            one that does not cross the stack (:func:`~medflow.cardiac.planes.
            long_axis_problem`: parallel to the short-axis slices, no heart labels, none
            inside the stack's field of view) (65).
    """
    vol = read_image(path, kind="label")
    if vol.shape3[2] != 1:
        raise InvalidDataError(f"a long-axis segmentation is one plane, got {vol.shape3[2]} "
                               "slices", path)
    if vol.n_frames not in (1, stack.n_frames):
        raise InvalidDataError(f"{vol.n_frames} frames, the short-axis stack has "
                               f"{stack.n_frames}", path)
    problem = long_axis_problem(frames_of(vol), vol.affine, stack.shape3, stack.affine)
    if problem:
        raise InvalidDataError(f"the long-axis plane {problem}", path)
    return vol


def long_axis_at(views, t: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The long-axis ``views`` (Volumes from :func:`read_long_axis`) at stack frame ``t``:
    [(labels (X, Y, 1), affine)]. A one-frame map is the ED frame's (frame 0, UK Biobank
    order) and is left out of every other frame: at ES the heart has moved and its labels
    would pull the shifts the wrong way. A frame left unlabelled is left out too (it says
    nothing)."""
    out = [(frames_of(v)[..., t if v.n_frames > 1 else 0], v.affine)
           for v in views if v.n_frames > 1 or t == 0]
    return [v for v in out if v[0].any()]


def read_image_on_stack(path: str | Path, stack: Volume) -> Volume:
    """The short-axis image the labels were drawn on: same grid and frames (65 otherwise)."""
    vol = read_image(path)
    if not same_space(vol, stack) or vol.n_frames != stack.n_frames:
        raise InvalidDataError("the image is not on the label stack's grid (shape, affine "
                               "and frames must match)", path)
    return vol
