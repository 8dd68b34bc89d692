"""The report's calibration part of the uncertainty section (``--save-probabilities``):
ECE and Brier per region from the score-uncertainty table, the cohort reliability diagram,
and whether the segment stage's probabilities were calibrated (its sidecars say)."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from medflow.pipeline.stages import get_stage


def calibration_state(results: Path, subjects: list[str]) -> str:
    """How the scored subjects' probabilities were made, from the segment sidecars
    (``parameters.calibration``: the model's stored calibrator, or ``"none"``).

    Returns:
        e.g. ``"not calibrated"``, ``"calibrated (temperature)"``, or the mix with counts
        (``"calibrated (temperature) for 2, not calibrated for 1"``); ``"unknown"`` when
        no sidecar says.
    """
    methods: Counter = Counter()
    for subject in subjects:
        for sidecar in sorted((results / "segment" / subject).glob("*_seg.json")):
            try:
                method = json.loads(sidecar.read_text())["parameters"]["calibration"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            methods["not calibrated" if method in (None, "none")
                    else f"calibrated ({method})"] += 1
    if not methods:
        return "unknown"
    if len(methods) == 1:
        return next(iter(methods))
    return ", ".join(f"{state} for {n}" for state, n in methods.most_common())


def reliability_section(results: Path, report: Path, table: pd.DataFrame, render_table,
                        render_img) -> list[str]:
    """ECE/Brier per region and the pooled reliability diagram; [] without probabilities.

    Args:
        results: the results folder. report: the report folder (image paths relative to it).
        table: the score-uncertainty table (one row per subject; ``<region>_ece``,
            ``<region>_brier`` when probabilities were scored).
        render_table, render_img: the page's table and image renderers.
    """
    keys = [c.removesuffix("_ece") for c in table.columns
            if c.endswith("_ece") and f"{c.removesuffix('_ece')}_brier" in table]
    if not keys:
        return []
    rows = pd.DataFrame([{"region": key, "subjects": int(table[f"{key}_ece"].notna().sum()),
                          "ECE mean": table[f"{key}_ece"].mean(),
                          "ECE max": table[f"{key}_ece"].max(),
                          "Brier mean": table[f"{key}_brier"].mean()} for key in keys])
    state = calibration_state(results, [str(s) for s in table["subject"]])
    out = ["<h3>calibration</h3>",
           "<p>How far the segment stage's class probabilities can be taken at their word, "
           "per region over the voxels of the image's field of view, every frame: ECE "
           "(expected calibration error: the mean gap between predicted probability and "
           "observed frequency, weighted by voxels per probability bin; 0 is perfect) and "
           "Brier score (mean squared error of the probabilities), mean and largest over "
           "subjects. Most voxels of the field of view are far from every region and "
           "trivially right, which keeps both small: the diagram's middle bins show the "
           f"calibration where it matters. The probabilities were {html.escape(state)}.</p>",
           render_table(rows)]
    diagram = results / "uncertainty" / get_stage("uncertainty").outputs["reliability"]
    if diagram.exists():
        out += ["<p>The reliability diagram pools every scored subject's voxels: per bin of "
                "predicted probability, the fraction of voxels truly in the region. Bars "
                "on the diagonal are calibrated; bars below it mean over-confidence (the "
                "region is claimed more often than it is there), above it under-confidence; "
                "the ECE in each title is the pooled one.</p>",
                render_img(report, diagram, "cohort reliability diagram")]
    return out
