"""Keeping memory-mapped volumes out of a process's resident memory.

Pages of a memory-mapped file that a process has touched count in its resident set until
it unmaps them, so streaming a 640^3 volume through ``np.memmap`` ends with the whole file
(and the whole output) resident even though only one slab was ever needed. Dropping the
pages after each slab keeps peak RSS at the slab size; the data stays in the page cache
and the file (written pages are flushed first), so the next access is a cheap minor fault.
"""

from __future__ import annotations

import mmap

import numpy as np


def _mapping(array) -> mmap.mmap | None:
    obj = array
    while obj is not None:
        if isinstance(obj, mmap.mmap):
            return obj
        obj = getattr(obj, "base", None)
    return None


def release_pages(array: np.ndarray) -> bool:
    """Flush (when writable) and drop the resident pages of a memory-mapped array.

    Args:
        array: an ``np.memmap`` or a view of one; anything else is left alone.

    Note:
        A copy-on-write mapping (NiBabel's read-only ``mmap=True``) loses whatever was
        written into it: call this only on inputs that are read, and on shared outputs.

    Returns:
        True when pages were dropped, False for an in-memory array or a platform without
        ``madvise``.

    Example:
        >>> release_pages(np.zeros(3))
        False
    """
    mm = _mapping(array)
    if mm is None or not hasattr(mm, "madvise") or mm.closed:
        return False
    mm.flush()          # no-op for read-only and copy-on-write mappings
    mm.madvise(mmap.MADV_DONTNEED)
    return True
