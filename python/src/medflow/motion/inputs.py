"""Reading and checking the views a mesh is fitted to (exit 65/66 with one clear line).

Checks, in order: each file reads as a label map (66 missing, 65 unreadable); it is a
cine (4D) with UK Biobank labels (0-3, atria 4-5 read as background); all views have the
same number of frames and, where the NIfTI headers give a frame interval, the same cycle
length; every long-axis plane cuts the short-axis stack (not parallel to its slices,
heart labels inside its field of view: :mod:`medflow.cardiac.planes`); and the end-diastolic short-axis
segmentation passes the ukbb_cardiac rules the mesh needs (LV blood pool and myocardium
on enough contiguous slices, the mid-cavity slice with LV epicardium and RV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.cardiac.planes import long_axis_problem
from medflow.cardiac.qc import short_axis_qc
from medflow.errors import InvalidDataError
from medflow.io.images import read_image
from medflow.motion.targets import View

KNOWN_LABELS = (0, 1, 2, 3, 4, 5)
CYCLE_TOLERANCE = 0.05      # relative difference of cycle lengths that is still one cycle
#: QC reasons that leave the mesh without support (a gap between LV slices is bridged).
FATAL_QC = ("voxels", "slices hold", "mid-cavity")


@dataclass
class Inputs:
    """The checked views and what the headers say about time."""

    views: list[View]                 # sa first, then the long-axis views given
    paths: dict[str, Path]            # view name -> file
    frame_interval_s: float | None    # from pixdim[4] (None when absent or the default 1)


def frame_interval(path: Path) -> float | None:
    """The frame interval (s) from a NIfTI header's pixdim[4] and time unit, or None when
    it is missing, zero or 1.0 (nibabel's and most writers' default: no real interval)."""
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib

    header = nib.load(str(path)).header
    dt = float(header["pixdim"][4])
    if not dt > 0 or dt == 1.0 or not math.isfinite(dt):
        return None
    unit = header.get_xyzt_units()[1]
    return dt / 1000.0 if unit == "msec" else dt * 1e-6 if unit == "usec" else dt


def _read(path: Path, name: str) -> View:
    vol = read_image(path, kind="label")
    data = np.asarray(vol.data)
    if data.ndim != 4 or data.shape[3] < 2:
        raise InvalidDataError(f"{name} must be a cine segmentation (X, Y, Z, T) with at "
                               f"least 2 frames, got shape {list(data.shape)}", path)
    values = np.unique(data)
    unknown = [int(v) for v in values if int(v) not in KNOWN_LABELS]
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise InvalidDataError(f"{len(unknown)} unknown label value(s) [{shown}] in {name}: "
                               "not a segmentation with UK Biobank labels (0-3, atria 4-5)",
                               path)
    data, affine = slices_last(data, np.asarray(vol.affine, np.float64))
    return View(name, data.astype(np.uint8, copy=False), affine)


def slices_last(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label map with its slice axis third, as the fit reads planes (slice k = [:, :, k]).

    A stack reoriented to RAS (e.g. by ``preprocess``, as the Nextflow pipeline segments
    it) may hold its slices on any axis. The slice axis is the one of a single voxel (a
    long-axis image), else the coarsest; the axes are rotated cyclically with the
    affine's columns, so world positions and handedness are unchanged.

    Args:
        data: (X, Y, Z, T) labels; affine: (4, 4) voxel -> world mm.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    single = [a for a in range(3) if data.shape[a] == 1]
    axis = single[0] if single else int(np.argmax(spacing))
    if axis == 2 or (not single and spacing[axis] <= spacing[2]):
        return data, affine
    order = [(axis + 1) % 3, (axis + 2) % 3, axis]
    out = affine.copy()
    out[:3, :3] = affine[:3, order]
    return np.transpose(data, (*order, 3)), out


def read_inputs(sa: Path, la_2ch: Path | None = None, la_4ch: Path | None = None) -> Inputs:
    """Read and check the views.

    Raises:
        MissingInputError (66), InvalidDataError (65): see the module docstring.
    """
    paths = {"sa": Path(sa)}
    for name, p in (("la_2ch", la_2ch), ("la_4ch", la_4ch)):
        if p is not None:
            paths[name] = Path(p)
    views = [_read(p, name) for name, p in paths.items()]
    frames = {v.name: v.frames for v in views}
    odd = next((k for k, n in frames.items() if n != frames["sa"]), None)
    if odd is not None:
        raise InvalidDataError("views have different frame counts ("
                               + ", ".join(f"{k} {n}" for k, n in frames.items()) + ")",
                               paths[odd])
    intervals = {name: frame_interval(p) for name, p in paths.items()}
    known = {k: v * frames[k] for k, v in intervals.items() if v is not None}
    if known and max(known.values()) > (1 + CYCLE_TOLERANCE) * min(known.values()):
        raise InvalidDataError("views have different cycle lengths ("
                               + ", ".join(f"{k} {1000 * s:.0f} ms" for k, s in known.items())
                               + ")", paths["sa"])
    for la in views[1:]:
        problem = long_axis_problem(la.labels, la.affine, views[0].labels.shape,
                                    views[0].affine)
        if problem:
            raise InvalidDataError(f"the {la.name} plane {problem}", paths[la.name])
    fatal = [r for r in short_axis_qc(views[0].labels[..., 0])
             if any(key in r for key in FATAL_QC)]
    if fatal:
        raise InvalidDataError("end-diastolic short-axis segmentation fails quality control: "
                               + "; ".join(fatal), paths["sa"])
    interval = next((v for v in (intervals["sa"], *intervals.values()) if v is not None), None)
    return Inputs(views, paths, interval)
