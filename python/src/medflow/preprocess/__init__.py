"""Preprocessing: reorient, resample, crop and normalise images and label maps.

The method is plain functions over :class:`medflow.io.Volume` (data plus RAS affine);
:mod:`medflow.preprocess.run` reads and writes files and :mod:`medflow.preprocess.cli`
is the ``medflow preprocess`` command.
"""

from medflow.preprocess.crop import crop_or_pad, crop_to_mask, mask_bounding_box
from medflow.preprocess.intensity import normalise, percentile_scale, zscore
from medflow.preprocess.orient import (axis_permutation, orientation_of, parse_orientation,
                                      reorient)
from medflow.preprocess.pipeline import PreprocessConfig, preprocess
from medflow.preprocess.resample import (output_grid, resample, resample_to_grid,
                                         sitk_geometry)

__all__ = ["PreprocessConfig", "preprocess", "reorient", "parse_orientation", "axis_permutation",
           "orientation_of", "output_grid", "resample", "resample_to_grid", "sitk_geometry",
           "crop_or_pad", "crop_to_mask", "mask_bounding_box", "normalise", "zscore",
           "percentile_scale"]
