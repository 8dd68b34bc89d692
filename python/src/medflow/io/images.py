"""Read any supported image into a :class:`Volume`, write NIfTI.

Formats: NIfTI (.nii, .nii.gz; uncompressed files can be memory-mapped), MetaImage
(.mha/.mhd) and NRRD (.nrrd/.nhdr) through SimpleITK, a DICOM series folder and a DICOM
zip (UK Biobank delivers zips) through :mod:`medflow.io.dicom`.

Every reader ends in :func:`validate_volume`, so a Volume in hand always has finite voxels,
3 or 4 dimensions and a usable geometry.

Units travel with the numbers: NIfTI spatial units (metres, microns) are converted to
millimetres on reading, the frame interval (``pixdim[4]`` in ``xyzt_units``' time unit) is
kept as ``Volume.frame_interval_s`` and written back in seconds, and label values keep an
integer type that holds them (uint8 ... int64), with or without resampling.

A path may name one series of a DICOM zip or folder: ``x.zip#CINE_segmented_LAX_4Ch`` (see
:func:`medflow.io.paths.split_series`; samplesheet cells use the same syntax).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.paths import SERIES_MARK, source_file, split_series  # noqa: F401 (re-export)
from medflow.io.volume import Kind, Volume, geometry_problem

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
#: NIfTI xyzt_units -> factor to millimetres / to seconds (nibabel's unit names).
SPACE_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}
TIME_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_INT_TYPES = (np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64)


def smallest_int_dtype(lo: int, hi: int) -> np.dtype:
    """The first of uint8, int16, uint16, int32, uint32, int64 that holds ``[lo, hi]``."""
    for t in _INT_TYPES:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    raise ValueError(f"label values {lo}..{hi} do not fit a 64-bit integer")


def image_format(path: str | os.PathLike) -> str:
    """'nifti', 'sitk', 'dicom-folder', 'dicom-zip' or 'dicom-file' for a path (a
    ``#series`` suffix is allowed, see :func:`split_series`)."""
    p, _ = split_series(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom-folder"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(SITK_SUFFIXES):
        return "sitk"
    if name.endswith(".zip"):
        return "dicom-zip"
    if name.endswith(".dcm") or "." not in name:
        return "dicom-file"
    raise InvalidDataError("unknown image format (expected .nii[.gz], .mha, .mhd, .nrrd, "
                           "a DICOM folder, a .dcm file or a .zip of DICOM)", path)


def read_image(path: str | os.PathLike, kind: Kind = "image", *, mmap: bool = False,
               series: str | None = None, min_dims: int = 3, channels: bool = False) -> Volume:
    """Read an image file, folder or zip as a validated Volume.

    Args:
        path: the file (NIfTI, MetaImage, NRRD, DICOM), DICOM folder or DICOM zip; a zip or
            folder may carry its series as ``path#series`` (:func:`split_series`).
        kind: ``"label"`` checks the values are whole numbers and keeps them in an integer
            type that holds them.
        mmap: memory-map uncompressed NIfTI instead of reading it (large volumes).
        series: for folders/zips holding several DICOM series, which one (its description,
            UID or 0-based index).
        min_dims: 3 rejects 2D images.
        channels: the last axis holds a vector per voxel (class probabilities,
            ``(X, Y, Z[, T], C)``): up to 5D is accepted instead of 4D.

    Returns:
        The Volume; ``meta`` records the source path and format (and DICOM series).

    Note:
        Raises :class:`MissingInputError` (exit 66) when the path does not exist and
        :class:`InvalidDataError` (exit 65) for anything unreadable or invalid.
    """
    p, named = split_series(path)
    if named is not None:
        if series is not None and str(series) != named:
            raise InvalidDataError(f"names series {named!r} but --series {series!r} was "
                                   "given too", path)
        series = named
    if not p.exists():
        raise MissingInputError("no such file or folder", p)
    fmt = image_format(p)
    if fmt == "nifti":
        vol = _read_nifti(p, mmap)
    elif fmt == "sitk":
        vol = _read_sitk(p)
    else:
        from medflow.io import dicom

        vol = dicom.select_series(dicom.read_dicom(p, series=series), series, p)
    vol.kind = kind
    vol.meta.setdefault("source", str(p))
    vol.meta.setdefault("format", fmt)
    vol = validate_volume(vol, p, min_dims=min_dims, max_dims=5 if channels else 4)
    if kind == "label" and vol.data.dtype.kind not in "iu":
        # Whole-valued float (or bool) labels become integers at the door, so no later step
        # (resampling, writing) can round a large label ID through float32.
        data = np.asarray(vol.data)
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        vol.data = data.astype(smallest_int_dtype(lo, hi))
    return vol


def _nifti_units(header, ndim: int) -> tuple[float, float | None, dict]:
    """(factor to mm, frame interval in s or None, what the header said) of a NIfTI header."""
    space, time = header.get_xyzt_units()
    said = {"nifti_xyzt_units": [space, time],
            # nibabel's choice; with neither code set the origin and direction are made up
            "nifti_affine_from": "sform" if header["sform_code"] > 0 else "qform"
            if header["qform_code"] > 0 else "pixdim only (no qform or sform code)"}
    interval = None
    if ndim >= 4:
        step = float(f"{float(header['pixdim'][4]):.7g}")  # float32 field: 7 digits
        said["nifti_pixdim4"] = step
        if time in TIME_TO_S and np.isfinite(step) and step > 0:
            interval = step * TIME_TO_S[time]
    return SPACE_TO_MM.get(space, 1.0), interval, said


def _read_nifti(p: Path, mmap: bool) -> Volume:
    try:
        img = nib.load(str(p), mmap=mmap)
        affine = img.affine
        to_mm, interval, said = _nifti_units(img.header, len(img.shape))
        if to_mm != 1.0:  # metres or microns: the whole voxel-to-world map is rescaled
            affine = np.diag([to_mm, to_mm, to_mm, 1.0]) @ affine
        if mmap and not p.name.lower().endswith(".gz"):
            data = np.asanyarray(img.dataobj)
        else:
            data = np.asarray(img.dataobj)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InvalidDataError(f"corrupt or truncated gzip ({exc})", p) from None
    except (nib.filebasedimages.ImageFileError, ValueError, OSError) as exc:
        raise InvalidDataError(f"not a readable NIfTI image ({exc})", p) from None
    # NIfTI stores 3D+time as 4D and vector data in dim 5; squeeze singleton dims past 4.
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    return Volume(data, affine, meta={"format": "nifti", **said},
                  frame_interval_s=interval if data.ndim == 4 else None)


def _read_sitk(p: Path) -> Volume:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InvalidDataError(f"not a readable image ({str(exc).splitlines()[-1]})", p) from None
    arr = sitk.GetArrayViewFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise InvalidDataError("vector-valued pixels are not supported", p)
    dim = img.GetDimension()
    data = np.ascontiguousarray(np.transpose(arr, tuple(range(dim))[::-1]))
    k = min(dim, 3)
    direction = np.asarray(img.GetDirection()).reshape(dim, dim)[:k, :k]
    spacing = np.asarray(img.GetSpacing())[:k]
    origin = np.asarray(img.GetOrigin())[:k]
    lps = np.eye(4)
    lps[:k, :k] = direction * spacing
    lps[:k, 3] = origin
    meta = {"format": "sitk"}
    if dim == 4:  # MetaImage/NRRD do not say the unit of the 4th spacing: kept, not used
        meta["time_spacing_unknown_unit"] = float(img.GetSpacing()[3])
    return Volume(data, LPS_TO_RAS @ lps, meta=meta)


def validate_volume(vol: Volume, path: str | os.PathLike | None = None,
                    min_dims: int = 3, max_dims: int = 4) -> Volume:
    """Check dimensionality (``min_dims`` to ``max_dims``: 5 for a cine with a trailing
    channel axis), finite voxels, geometry and label values; return the volume."""
    data = vol.data
    if data.ndim < min_dims or (data.ndim == 3 and min_dims > 3):
        raise InvalidDataError(f"{data.ndim}D image where {min_dims}D is needed "
                               f"(shape {list(data.shape)})", path)
    if data.ndim > max_dims:
        what = "3D and 3D+time" + (" with a channel axis" if max_dims > 4 else "")
        raise InvalidDataError(f"{data.ndim}D image: only {what} are supported "
                               f"(shape {list(data.shape)})", path)
    if data.size == 0:
        raise InvalidDataError("the image has no voxels", path)
    problem = geometry_problem(vol.affine)
    if problem:
        raise InvalidDataError(problem, path)
    if data.dtype.kind == "f" and not _all_finite(data):
        raise InvalidDataError("the image contains NaN or infinite voxels", path)
    if vol.kind == "label" and data.dtype.kind == "f":
        if not _all_whole(data):
            raise InvalidDataError("label image has non-integer values", path)
    return vol


def _chunks(data: np.ndarray, n: int = 16):
    # Walk large (possibly memory-mapped) arrays slab by slab so checks do not copy them.
    step = max(1, data.shape[0] // n) if data.size > 2**24 else data.shape[0]
    for i in range(0, data.shape[0], step):
        yield np.asarray(data[i:i + step])


def _all_finite(data: np.ndarray) -> bool:
    return all(np.isfinite(c).all() for c in _chunks(data))


def _all_whole(data: np.ndarray) -> bool:
    return all(np.array_equal(c, np.round(c)) for c in _chunks(data))


def stored_dtype(vol: Volume) -> np.dtype:
    """The NIfTI data type a volume is written with: every value kept exactly.

    Labels take the smallest integer type holding their range (uint8, int16, uint16,
    int32, uint32, int64); integer images keep their type (64-bit ones narrowed to what
    holds their range); float images become float32 unless their values overflow it.
    """
    data = vol.data
    kind = data.dtype.kind
    if vol.kind == "label" or kind == "b" or (kind in "iu" and data.dtype.itemsize == 8):
        lo, hi = (int(np.min(data)), int(np.max(data))) if data.size else (0, 0)
        return smallest_int_dtype(lo, hi)
    if kind in "iu":
        return data.dtype.newbyteorder("=")
    if data.dtype.itemsize > 4 and data.size and \
            float(np.max(np.abs(data))) > float(np.finfo(np.float32).max):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def nifti_image(vol: Volume) -> nib.Nifti1Image:
    """A nibabel image of the volume: values kept exactly (:func:`stored_dtype`), geometry
    in qform and sform, and for 4D the frame interval in seconds as ``pixdim[4]`` (0 with
    time unit 'unknown' when the volume does not know it)."""
    dtype = stored_dtype(vol)
    data = np.asarray(vol.data).astype(dtype, copy=False)
    img = nib.Nifti1Image(data, vol.affine, dtype=dtype)
    if data.ndim == 4:
        step = vol.frame_interval_s
        img.header.set_xyzt_units("mm", "sec" if step else "unknown")
        zooms = list(img.header.get_zooms())
        zooms[3] = step or 0.0
        img.header.set_zooms(zooms)
    else:
        img.header.set_xyzt_units("mm", "sec")
    img.set_qform(vol.affine, code=1)
    img.set_sform(vol.affine, code=1)
    return img


def write_nifti(vol: Volume, path: str | os.PathLike) -> Path:
    """Write NIfTI (.nii or .nii.gz by the name). Not atomic by itself: write to a path
    from :func:`medflow.io.atomic.atomic_outputs`. Gzip output is byte-reproducible."""
    path = Path(path)
    nib.save(nifti_image(vol), str(path))
    return path
