"""Read any supported image into a :class:`Volume`, write NIfTI.

Formats: NIfTI (.nii, .nii.gz; uncompressed files can be memory-mapped), MetaImage
(.mha/.mhd) and NRRD (.nrrd/.nhdr) through SimpleITK, a DICOM series folder and a DICOM
zip (UK Biobank delivers zips) through :mod:`medflow.io.dicom`.

Every reader ends in :func:`validate_volume`, so a Volume in hand always has finite voxels,
3 or 4 dimensions and a usable geometry.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.volume import Kind, Volume, geometry_problem

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def image_format(path: str | os.PathLike) -> str:
    """'nifti', 'sitk', 'dicom-folder', 'dicom-zip' or 'dicom-file' for a path."""
    p = Path(path)
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
               series: str | None = None, min_dims: int = 3) -> Volume:
    """Read an image file, folder or zip as a validated Volume.

    Args:
        path: the file (NIfTI, MetaImage, NRRD, DICOM), DICOM folder or DICOM zip.
        kind: ``"label"`` keeps integer values and checks they are whole numbers.
        mmap: memory-map uncompressed NIfTI instead of reading it (large volumes).
        series: for folders/zips holding several DICOM series, which one (its description,
            UID or 0-based index).
        min_dims: 3 rejects 2D images.

    Returns:
        The Volume; ``meta`` records the source path and format (and DICOM series).

    Note:
        Raises :class:`MissingInputError` (exit 66) when the path does not exist and
        :class:`InvalidDataError` (exit 65) for anything unreadable or invalid.
    """
    p = Path(path)
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
    return validate_volume(vol, p, min_dims=min_dims)


def _read_nifti(p: Path, mmap: bool) -> Volume:
    try:
        img = nib.load(str(p), mmap=mmap)
        affine = img.affine
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
    return Volume(data, affine, meta={"format": "nifti"})


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
    return Volume(data, LPS_TO_RAS @ lps, meta={"format": "sitk"})


def validate_volume(vol: Volume, path: str | os.PathLike | None = None,
                    min_dims: int = 3) -> Volume:
    """Check dimensionality, finite voxels, geometry and label values; return the volume."""
    data = vol.data
    if data.ndim < min_dims or (data.ndim == 3 and min_dims > 3):
        raise InvalidDataError(f"{data.ndim}D image where {min_dims}D is needed "
                               f"(shape {list(data.shape)})", path)
    if data.ndim > 4:
        raise InvalidDataError(f"{data.ndim}D image: only 3D and 3D+time are supported "
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


def nifti_image(vol: Volume) -> nib.Nifti1Image:
    """A nibabel image of the volume: labels as uint8/int16, images as float32."""
    data = vol.data
    if vol.kind == "label":
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        dtype = np.uint8 if 0 <= lo and hi < 256 else np.int16
        data = np.asarray(data).astype(dtype, copy=False)
    elif data.dtype not in (np.float32, np.int16, np.uint16, np.uint8):
        data = np.asarray(data, dtype=np.float32)
    img = nib.Nifti1Image(data, vol.affine)
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
