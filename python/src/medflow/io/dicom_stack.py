"""One series of frames into one Volume: slices by position along the normal, frames by
time, checked for a regular grid, pixels read once into the output array.

Geometry (DICOM PS3.3 C.7.6.2): pixel (row r, column c) of a slice lies at
``IPP + c * PixelSpacing[1] * rowdir + r * PixelSpacing[0] * coldir`` in LPS millimetres,
so ``data[i=c, j=r, k]``; the affine is converted to RAS. The slice axis k runs along
+normal (rowdir x coldir).

Time: several frames at each position make a cine (4D, time last). Frames are ordered by
trigger time; ``frame_interval_s`` is the mean TriggerTime step of the first slice
((last - first) / (n - 1), ukbb_cardiac's ``dt``), or of AcquisitionTime when there is no
trigger time; every slice's trigger times go to ``meta`` for the sidecar.

Values: rescale slope and intercept are applied. When every frame has slope 1 and a
whole intercept the stored integers are kept in an integer type that holds them exactly;
otherwise float32 (float64 for 32-bit integers, which float32 cannot hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pydicom

from medflow.errors import InvalidDataError
from medflow.io.dicom_frames import Frame
from medflow.io.dicom_series import POSITION_RTOL, Series, normal_of, parallel
from medflow.io.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slice gaps may vary by 1% of the spacing before a stack counts as uneven.
SPACING_RTOL = 0.01


def _fail(message: str, where) -> InvalidDataError:
    return InvalidDataError(message, where)


def _slices(s: Series, name: str, where) -> list[list[Frame]]:
    """Frames grouped by position along the normal, each group in time order."""
    ref = s.frames[0]
    normal = normal_of(ref)
    tol = POSITION_RTOL * min(ref.pixel_spacing)
    pos = np.array([fr.ipp @ normal for fr in s.frames])
    slices: list[list[Frame]] = []
    start = -np.inf
    for i in np.argsort(pos, kind="stable"):
        if pos[i] - start > tol:
            slices.append([])
            start = pos[i]
        slices[-1].append(s.frames[i])
    counts = [len(g) for g in slices]
    if len(set(counts)) > 1:
        usual = max(set(counts), key=counts.count)
        odd = [f"{k} ({n})" for k, n in enumerate(counts) if n != usual][:6]
        raise _fail(f"{name}: slice positions hold different numbers of frames: most hold "
                    f"{usual}, slice(s) {', '.join(odd)} do not; a file is missing or an "
                    "image was acquired twice", where)
    for g in slices:
        g.sort(key=lambda fr: fr.order)
    return slices


def _affine(slices: list[list[Frame]], name: str, where) -> np.ndarray:
    ref = slices[0][0]
    rowdir = ref.iop[:3] / np.linalg.norm(ref.iop[:3])
    coldir = ref.iop[3:] / np.linalg.norm(ref.iop[3:])
    normal = np.cross(rowdir, coldir)
    tol = POSITION_RTOL * min(ref.pixel_spacing)
    firsts = np.array([g[0].ipp for g in slices])
    inplane = (firsts - firsts[0]) @ np.stack([rowdir, coldir]).T
    if np.abs(inplane).max() > 5 * tol:
        raise _fail(f"{name}: slices are shifted in-plane against each other (gantry tilt "
                    "or sheared stack), not a regular grid", where)
    along = firsts @ normal
    if len(slices) > 1:
        gaps = np.diff(along)
        dz = float(along[-1] - along[0]) / (len(slices) - 1)
        if np.abs(gaps - dz).max() > max(tol, SPACING_RTOL * dz):
            raise _fail(f"{name}: uneven slice spacing (gaps from {gaps.min():.4g} to "
                        f"{gaps.max():.4g} mm); a slice may be missing", where)
    else:
        dz = ref.thickness or 1.0
    lps = np.eye(4)
    lps[:3, 0] = rowdir * ref.pixel_spacing[1]
    lps[:3, 1] = coldir * ref.pixel_spacing[0]
    lps[:3, 2] = normal * dz
    lps[:3, 3] = firsts[0]
    return LPS_TO_RAS @ lps


def _time(slices: list[list[Frame]], meta: dict) -> float | None:
    """Frame interval (s) from trigger times, else acquisition times; times into meta."""
    n = len(slices[0])
    if n < 2:
        return None
    triggers = [[fr.trigger_ms for fr in g] for g in slices]
    if all(t is not None for g in triggers for t in g) and any(g[-1] > g[0] for g in triggers):
        meta["frame_times_ms"] = triggers[0]
        if any(g != triggers[0] for g in triggers):
            meta["frame_times_ms_per_slice"] = triggers
        step = float(f"{(triggers[0][-1] - triggers[0][0]) / (n - 1) / 1000.0:.9g}")
        return step if step > 0 else None
    acquired = [fr.acquisition_s for fr in slices[0]]
    if all(t is not None for t in acquired) and acquired[-1] > acquired[0]:
        meta["frame_acquisition_times_s"] = acquired
        return (acquired[-1] - acquired[0]) / (n - 1)
    return None


def _out_dtype(frames: list[Frame], stored: np.dtype | None) -> np.dtype:
    exact = all(fr.slope == 1.0 and float(fr.intercept).is_integer() for fr in frames)
    if stored is not None and stored.kind in "iu" and exact:
        lo, hi = np.iinfo(stored).min, np.iinfo(stored).max
        shifts = {int(fr.intercept) for fr in frames}
        lo, hi = lo + min(shifts), hi + max(shifts)
        for t in (stored, np.int16, np.int32, np.int64):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                return np.dtype(t)
    if stored is not None and stored.itemsize >= 4 and stored.kind in "iu":
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def stack(s: Series, meta: dict, root: Path, shown: Callable[[Path], str]) -> Volume:
    """The series as a validated-geometry Volume (3D, or 4D with time last)."""
    where = str(root)
    name = f"series {s.description or s.uid!r}"
    ref = s.frames[0]
    for fr in s.frames:
        if not parallel(ref, fr):
            raise _fail(f"{name}: slices are not parallel or differ in size "
                        f"({shown(ref.file)} vs {shown(fr.file)})", where)
        if not np.allclose(fr.pixel_spacing, ref.pixel_spacing, rtol=1e-4):
            raise _fail(f"{name}: slices differ in pixel spacing "
                        f"({shown(ref.file)} vs {shown(fr.file)})", where)
    slices = _slices(s, name, where)
    affine = _affine(slices, name, where)
    interval = _time(slices, meta)
    nt = len(slices[0])
    rows, cols = ref.shape
    placed: dict[Path, list[tuple[Frame, int, int]]] = {}
    for k, g in enumerate(slices):
        for t, fr in enumerate(g):
            placed.setdefault(fr.file, []).append((fr, k, t))
    reader = _PixelReader(shown)
    data = None
    for f, frames in placed.items():
        for fr, k, t in frames:
            plane = reader.plane(fr)
            if data is None:
                dtype = _out_dtype(s.frames, plane.dtype)
                data = np.empty((cols, rows, len(slices), nt), dtype, order="F")
            _put(data, plane, fr, k, t)
    for kept, dropped in s.twins:  # re-exported copies: the same pixels, or refuse
        if not np.array_equal(reader.plane(kept), reader.plane(dropped)):
            raise _fail(f"{name}: {shown(kept.file)} and {shown(dropped.file)} claim the same "
                        "image (instance, position, time) but hold different pixels", where)
    meta.update(s.notes)
    if any(fr.flip_rows for fr in s.frames):
        meta["rows_flipped"] = "GE epi_pepolar reversed-polarity frames flipped back"
    return Volume(data if nt > 1 else data[..., 0], affine, meta=meta,
                  frame_interval_s=interval if nt > 1 else None)


def _put(data: np.ndarray, plane: np.ndarray, fr: Frame, k: int, t: int) -> None:
    if fr.flip_rows:
        plane = plane[::-1]
    out = data[:, :, k, t]
    if fr.slope == 1.0 and fr.intercept == 0.0:
        out[...] = plane.T
    elif data.dtype.kind in "iu":
        np.add(plane.T, int(fr.intercept), out=out, casting="unsafe")
    else:
        np.multiply(plane.T, fr.slope, out=out, casting="unsafe")
        out += data.dtype.type(fr.intercept)


class _PixelReader:
    """Pixels of frames: native little-endian data straight from the file, anything else
    (compressed, big endian, odd bit depths) through pydicom, one decode per file."""

    def __init__(self, shown: Callable[[Path], str]) -> None:
        self.shown = shown
        self._file: Path | None = None
        self._array: np.ndarray | None = None

    def plane(self, fr: Frame) -> np.ndarray:
        whole = self._whole(fr)
        plane = whole[fr.index] if whole.ndim == 3 else whole
        if fr.tile is not None:
            r0, c0 = fr.tile
            plane = plane[r0:r0 + fr.shape[0], c0:c0 + fr.shape[1]]
        if plane.shape != fr.shape:
            raise _fail(f"pixel data of {plane.shape} does not match Rows x Columns "
                        f"{fr.shape}", self.shown(fr.file))
        return plane

    def _whole(self, fr: Frame) -> np.ndarray:
        if self._file == fr.file:
            return self._array
        self._file, self._array = fr.file, None
        try:
            self._array = self._native(fr) if fr.pixels_at else pydicom.dcmread(
                fr.file).pixel_array
        except InvalidDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated data, missing codec, headers
            raise _fail(f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})",
                        self.shown(fr.file)) from None
        return self._array

    def _native(self, fr: Frame) -> np.ndarray:
        offset, dtype, bits_stored, (n, rows, cols) = fr.pixels_at
        count = n * rows * cols
        with open(fr.file, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(count * dtype.itemsize)
        if len(raw) < count * dtype.itemsize:
            raise _fail(f"truncated pixel data ({len(raw)} of {count * dtype.itemsize} "
                        "bytes)", self.shown(fr.file))
        whole = np.frombuffer(raw, dtype).reshape((n, rows, cols) if n > 1 else (rows, cols))
        if bits_stored < dtype.itemsize * 8:  # unsigned only (signed ones go via pydicom)
            whole = whole & dtype.type((1 << bits_stored) - 1)
        return whole
