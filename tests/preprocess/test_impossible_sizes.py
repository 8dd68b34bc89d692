"""A size no machine holds is invalid input (65), never "transient" (75), which the
pipeline and Nextflow would retry with more memory."""

from __future__ import annotations

import numpy as np

from medflow.cli import _translate, cli
from medflow.errors import EXIT_DATA, EXIT_TRANSIENT
from medflow.io import write_nifti


def test_spacing_or_crop_that_no_machine_holds_is_65(tmp_path, runner, image3d):
    src = write_nifti(image3d, tmp_path / "a.nii.gz")
    for option, value in (("--spacing", "0.0001,0.0001,0.0001"),
                          ("--crop-to", "100000,100000,100000")):
        res = runner.invoke(cli, ["preprocess", "--input", str(src), "--output",
                                  str(tmp_path / "b.nii.gz"), option, value])
        assert res.exit_code == EXIT_DATA, res.output
        assert "more than any machine holds" in res.output and option in res.output
        assert not (tmp_path / "b.nii.gz").exists()


def test_failed_allocations_are_sorted_by_size():
    try:
        np.empty((10**6, 10**6, 10**6), np.float32)
    except MemoryError as exc:
        assert _translate(exc).exit_code == EXIT_DATA
    assert _translate(MemoryError("plain")).exit_code == EXIT_TRANSIENT

    class OutOfMemoryError(RuntimeError):
        pass

    assert _translate(OutOfMemoryError("Tried to allocate 2.00 GiB")).exit_code == EXIT_TRANSIENT
    assert _translate(OutOfMemoryError("Tried to allocate 1.5 PiB")).exit_code == EXIT_DATA
