"""Dropping memory-mapped pages: data stays, resident memory goes."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from medflow.io.mapped import release_pages


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))


def test_in_memory_arrays_are_left_alone():
    a = np.arange(5)
    assert release_pages(a) is False and a.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_written_pages_reach_the_file_and_leave_resident_memory(tmp_path):
    path = tmp_path / "out.dat"
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(256, 256, 128))
    out[:, :, 10:20] = 7.0
    out[...] += 1.0                                   # touch every page (32 MiB)
    before = _rss_kb()
    assert release_pages(out[:, :, 5:9])              # a view finds its mapping
    assert before - _rss_kb() > 24 * 1024
    assert out[0, 0, 15] == 8.0 and out[0, 0, 0] == 1.0
    del out
    back = np.fromfile(path, dtype=np.float32).reshape(256, 256, 128)
    assert back[3, 4, 12] == 8.0 and back[3, 4, 30] == 1.0


def test_a_read_only_nifti_mapping_reads_the_same_after_release(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (40, 30, 20)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "x.nii")
    mapped = np.asanyarray(nib.load(tmp_path / "x.nii", mmap=True).dataobj)
    first = np.array(mapped[..., 5])
    assert release_pages(mapped)
    assert np.array_equal(mapped[..., 5], first) and np.array_equal(mapped, data)
