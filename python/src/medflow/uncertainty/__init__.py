"""score-uncertainty: the QU-BraTS uncertainty score and probability calibration measures.

Core functions work on arrays (no files, no Click):

- :func:`qubrats_curves` / :func:`score_case`: Dice, FTP and FTN against uncertainty
  thresholds, their AUCs and the QU-BraTS score, for all thresholds in one pass;
- :func:`calibration_scores`, :func:`reliability_bins`, :func:`fit_temperature`: ECE, MCE,
  Brier, NLL, reliability diagrams and temperature scaling;
- :func:`brats_regions`, :func:`parse_regions`: which labels make each region.
"""

from medflow.uncertainty.calibration import (LogitHistogram, ReliabilityBins,
                                             apply_temperature, calibration_scores,
                                             fit_temperature, reliability_bins)
from medflow.uncertainty.qubrats import QUCurves, auc, qubrats_curves, score_case, thresholds
from medflow.uncertainty.regions import CARDIAC, Region, brats_regions, parse_regions

__all__ = ["QUCurves", "auc", "qubrats_curves", "score_case", "thresholds",
           "ReliabilityBins", "LogitHistogram", "reliability_bins", "calibration_scores",
           "apply_temperature", "fit_temperature", "Region", "CARDIAC", "brats_regions",
           "parse_regions"]
