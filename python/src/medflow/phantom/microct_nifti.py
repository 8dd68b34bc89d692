"""Stream an uncompressed NIfTI-1 file: header first, then runs of k planes.

A NIfTI array is stored Fortran-ordered (i fastest), so planes ``k0 .. k1 - 1`` are one
contiguous run of bytes at ``vox_offset + k0 * X * Y * itemsize``. Plain positioned writes
are used instead of a writable ``np.memmap``: dirty mapped pages count towards the process's
resident memory until unmapped, page-cache writes do not.
"""

from __future__ import annotations

from typing import BinaryIO

import nibabel as nib
import numpy as np

#: 348-byte header plus the 4-byte "no extensions" flag.
VOX_OFFSET = 352


def start_nifti(f: BinaryIO, shape: tuple[int, int, int], affine: np.ndarray,
                dtype: type, description: str = "") -> int:
    """Write a NIfTI-1 single-file header and size the file for its voxels.

    Args:
        f: a file opened ``"wb"`` (or ``"r+b"``), positioned anywhere.
        shape: (X, Y, Z).
        affine: 4x4 voxel-to-RAS affine, stored as both qform and sform (code 1, scanner).
        dtype: voxel type, e.g. ``np.int16``.
        description: the header's 80-byte ``descrip``.

    Returns:
        The data offset (``vox_offset``).

    Note:
        The file is extended with ``truncate`` (sparse where the file system allows), so
        unwritten planes read as zeros; the scaling is the identity (``scl_slope`` 1,
        ``scl_inter`` 0) so memory-mapped reads stay raw.
    """
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(s) for s in shape))
    hdr.set_data_dtype(dtype)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["vox_offset"] = VOX_OFFSET
    hdr["descrip"] = description[:79].encode()
    hdr["magic"] = b"n+1"
    f.seek(0)
    f.write(hdr.binaryblock)
    f.write(b"\x00" * (VOX_OFFSET - len(hdr.binaryblock)))
    f.truncate(VOX_OFFSET + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return VOX_OFFSET


def write_planes(f: BinaryIO, planes: np.ndarray, k0: int, offset: int = VOX_OFFSET) -> None:
    """Write an (X, Y, K) block as planes ``k0 .. k0 + K - 1`` of a file from
    :func:`start_nifti` (the dtype must match the header's)."""
    nx, ny, _ = planes.shape
    f.seek(offset + k0 * nx * ny * planes.dtype.itemsize)
    # The (K, Y, X) C-ordered copy is the file's Fortran order, written in one call.
    f.write(np.ascontiguousarray(planes.transpose(2, 1, 0)).data)
