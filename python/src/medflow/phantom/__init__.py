"""Synthetic cohorts with known ground truth (cardiac cine, BraTS-style, microCT)."""
