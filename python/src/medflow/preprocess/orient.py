"""Reorientation: an exact permutation and flip of the voxel axes, with the affine to match.

No interpolation happens: the voxels are the same numbers in another order, and every voxel
keeps its world position.
"""

from __future__ import annotations

import nibabel.orientations as nio
import numpy as np

from medflow.io.volume import Volume

_PAIRS = ("LR", "PA", "IS")


def parse_orientation(code: str) -> str:
    """Check a 3-letter axis code (``RAS``, ``LPS``, ``PIR`` ...) and return it upper-case.

    Args:
        code: one letter from each of L/R, P/A and I/S, in any order. Each letter names
            the direction the voxel index *increases towards* (nibabel's convention, so
            ``RAS`` means i runs to the Right, j to Anterior, k to Superior).

    Returns:
        The code in upper case.

    Note:
        Raises ValueError naming the problem for anything else.

    Example:
        >>> parse_orientation("lps")
        'LPS'
    """
    text = str(code).strip().upper()
    if len(text) != 3 or any(c not in "LRPAIS" for c in text):
        raise ValueError(f"{code!r} is not an axis code: use three letters from L/R, P/A, I/S "
                         "such as RAS or LPS")
    for pair in _PAIRS:
        if sum(c in pair for c in text) != 1:
            raise ValueError(f"{code!r} names the {'/'.join(pair)} axis "
                             f"{sum(c in pair for c in text)} times; each axis exactly once")
    return text


def orientation_of(affine: np.ndarray) -> str:
    """The closest 3-letter axis code of an affine (oblique axes go to their nearest)."""
    return "".join(nio.aff2axcodes(np.asarray(affine)))


def axis_permutation(affine: np.ndarray, code: str = "RAS") -> tuple[int, int, int]:
    """Where each voxel axis goes when reoriented to ``code``: ``perm[i]`` is the new position
    of input axis ``i``.

    Example:
        >>> axis_permutation(np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0],
        ...                            [0, 0, 0, 1]]), "RAS")
        (1, 2, 0)
    """
    transform = nio.ornt_transform(nio.io_orientation(affine),
                                   nio.axcodes2ornt(tuple(parse_orientation(code))))
    return tuple(int(axis) for axis in transform[:, 0])


def to_reoriented_axes(values, perm: tuple[int, int, int]) -> tuple:
    """Move per-axis values (spacing, sizes) given along the input's voxel axes to the
    reoriented axes: ``out[perm[i]] = values[i]``."""
    out = [None, None, None]
    for i, p in enumerate(perm):
        out[p] = values[i]
    return tuple(out)


def reorient(vol: Volume, code: str = "RAS") -> Volume:
    """Permute and flip the voxel axes so they point along ``code``.

    Args:
        vol: 3D or 4D volume (time, the 4th axis, is never touched).
        code: target axis code, see :func:`parse_orientation`.

    Returns:
        A Volume whose data is a view of ``vol.data`` (no copy) and whose affine maps
        every voxel to the same world position as before. Returns ``vol`` itself when it
        is already in that orientation.

    Note:
        Oblique images go to the closest orientation; their direction matrix stays oblique
        (only axis order and sign change), so this never interpolates.

    Example:
        >>> v = Volume(np.arange(24.0).reshape(2, 3, 4), np.diag([-1.0, 2.0, 3.0, 1.0]))
        >>> r = reorient(v, "RAS")
        >>> float(r.affine[0, 0]), float(r.data[0, 0, 0])
        (1.0, 12.0)
    """
    code = parse_orientation(code)
    current = nio.io_orientation(vol.affine)
    target = nio.axcodes2ornt(tuple(code))
    transform = nio.ornt_transform(current, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return vol
    data = nio.apply_orientation(vol.data, transform)
    affine = vol.affine @ nio.inv_ornt_aff(transform, vol.shape3)
    return vol.with_data(data, affine)
