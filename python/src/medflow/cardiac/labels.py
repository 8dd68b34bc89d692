"""Cardiac label values and physical constants.

Short axis (UK Biobank / ukbb_cardiac): 0 background, 1 LV blood pool, 2 LV myocardium,
3 RV blood pool. The long-axis 4-chamber map with atria (ukbb_cardiac "seg4") adds
4 left atrium and 5 right atrium.
"""

from __future__ import annotations

BACKGROUND, LV_BLOOD, LV_MYO, RV_BLOOD = 0, 1, 2, 3
LEFT_ATRIUM, RIGHT_ATRIUM = 4, 5

LABEL_NAMES = {BACKGROUND: "background", LV_BLOOD: "LV blood pool",
               LV_MYO: "LV myocardium", RV_BLOOD: "RV blood pool",
               LEFT_ATRIUM: "left atrium", RIGHT_ATRIUM: "right atrium"}

#: Myocardial density for LV mass, g/mL (ukbb_cardiac; Petersen et al., JCMR 2017).
MYOCARDIUM_DENSITY_G_PER_ML = 1.05
