"""Fixtures for the preprocess tests: small NIfTI files on disk and nibabel's real scans."""

from __future__ import annotations

import os

import nibabel as nib
import pytest

from medflow.io import write_nifti

NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


@pytest.fixture
def real_scan():
    """Path of a small real scan shipped inside nibabel."""
    def path(name: str) -> str:
        p = os.path.join(NIBABEL_DATA, name)
        if not os.path.exists(p):
            pytest.skip(f"nibabel test file {name} not installed")
        return p

    return path


@pytest.fixture
def image_file(tmp_path, image3d):
    return write_nifti(image3d, tmp_path / "image.nii.gz")


@pytest.fixture
def label_file(tmp_path, label3d):
    return write_nifti(label3d, tmp_path / "label.nii.gz")
