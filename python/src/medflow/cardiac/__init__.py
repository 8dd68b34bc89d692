"""Cardiac conventions shared by the tools, the pipeline's tables and the phantom's truth:
labels, physical constants, phenotype definitions and quality-control rules
(``shared/CARDIAC.md``; UK Biobank / ukbb_cardiac conventions)."""

from medflow.cardiac.labels import (BACKGROUND, LABEL_NAMES, LEFT_ATRIUM, LV_BLOOD, LV_MYO,
                                    MYOCARDIUM_DENSITY_G_PER_ML, RIGHT_ATRIUM, RV_BLOOD)
from medflow.cardiac.phenotypes import (label_volume_curves, ventricular_phenotypes,
                                        voxel_phenotypes)
from medflow.cardiac.qc import (basal_descent_reasons, plausibility_reasons, short_axis_qc,
                               volume_curve_reasons)

__all__ = ["BACKGROUND", "LABEL_NAMES", "LEFT_ATRIUM", "LV_BLOOD", "LV_MYO",
           "MYOCARDIUM_DENSITY_G_PER_ML", "RIGHT_ATRIUM", "RV_BLOOD", "basal_descent_reasons",
           "label_volume_curves",
           "plausibility_reasons", "short_axis_qc", "ventricular_phenotypes",
           "volume_curve_reasons", "voxel_phenotypes"]
