"""Shared I/O: images, DICOM, tables, sidecars, samplesheets and atomic writes."""

from medflow.io.atomic import atomic_outputs, atomic_path
from medflow.io.images import read_image, validate_volume, write_nifti
from medflow.io.volume import Volume, make_affine, same_space

__all__ = ["Volume", "make_affine", "same_space", "read_image", "validate_volume",
           "write_nifti", "atomic_outputs", "atomic_path"]
