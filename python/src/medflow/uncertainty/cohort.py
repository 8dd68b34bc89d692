"""Scoring cases and cohorts: one row per subject, cohort summaries, pooled plot data.

Memory stays bounded by one case: each subject is read, scored and dropped; what is kept
per subject is its row, its curves (a few hundred numbers) and its reliability-bin sums.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medflow.uncertainty.calibration import (LogitHistogram, ReliabilityBins,
                                             apply_temperature, calibration_scores,
                                             fit_temperature, reliability_bins)
from medflow.uncertainty.inputs import (CaseFiles, Rescale, load_case, load_probabilities,
                                        read_truth_and_mask)
from medflow.uncertainty.qubrats import QUCurves, score_case
from medflow.uncertainty.regions import Region


@dataclass
class ScoreOptions:
    """Everything that changes the numbers (recorded in the sidecar)."""

    regions: tuple[Region, ...]
    num_points: int = 40
    n_bins: int = 15
    rescale: Rescale = None
    temperatures: dict[str, float] = field(default_factory=dict)
    prob_channels: str = "regions"  # probability maps: a channel per region or per class

    def parameters(self) -> dict:
        return {"regions": {r.name: list(r.labels) for r in self.regions},
                "num_points": self.num_points, "calibration_bins": self.n_bins,
                "rescale": self.rescale, "temperatures": self.temperatures,
                "probability_channels": self.prob_channels}


@dataclass
class SubjectResult:
    row: dict
    curves: dict[str, QUCurves]
    bins: dict[str, ReliabilityBins]


def score_subject(files: CaseFiles, opts: ScoreOptions) -> SubjectResult:
    """Read, check and score one case: QU-BraTS AUCs and score, calibration if probabilities.

    Args:
        files: the case's paths. opts: regions, thresholds, bins, rescaling, temperatures.

    Returns:
        :class:`SubjectResult`; its row has ``subject``, the QU-BraTS columns, and with
        probabilities ``<region>_ece``, ``_mce``, ``_brier``, ``_nll`` (plus ``_temperature``
        and the same four with ``_ts`` when temperatures are given).
    """
    case = load_case(files, opts.regions, opts.rescale, opts.prob_channels)
    row, curves = score_case(case.truth, case.pred, case.uncertainty, case.mask, opts.regions,
                             opts.num_points)
    row = {"subject": files.subject, **row}
    bins: dict[str, ReliabilityBins] = {}
    if case.prob is not None:
        for i, region in enumerate(opts.regions):
            p = case.prob[..., i][case.mask]
            y = region.mask(case.truth[case.mask])
            row.update({f"{region.key}_{k}": v
                        for k, v in calibration_scores(p, y, opts.n_bins).items()})
            bins[region.name] = reliability_bins(p, y, opts.n_bins)
            if region.name in opts.temperatures:
                t = opts.temperatures[region.name]
                scaled = calibration_scores(apply_temperature(p, t), y, opts.n_bins)
                row[f"{region.key}_temperature"] = t
                row.update({f"{region.key}_{k}_ts": v for k, v in scaled.items()})
    return SubjectResult(row, curves, bins)


def fit_temperatures(cases: list[CaseFiles], regions: tuple[Region, ...],
                     prob_channels: str = "regions") -> dict[str, float]:
    """One temperature per region, fitted on the pooled voxels (inside masks) of ``cases``.

    Args:
        cases: validation cases with ``probabilities`` set.
        regions: the regions.
        prob_channels: the maps' channels, per region or per class (:func:`load_probabilities`).

    Returns:
        Region name -> T minimising the validation NLL.
    """
    hists = {r.name: LogitHistogram() for r in regions}
    for files in cases:
        ref, truth, mask = read_truth_and_mask(files, regions)
        prob = load_probabilities(files.probabilities, regions, ref, files.truth,
                                  truth.shape, prob_channels)
        for i, r in enumerate(regions):
            hists[r.name].add(prob[..., i][mask], r.mask(truth[mask]))
    return {name: round(fit_temperature(h), 6) for name, h in hists.items()}


def score_cohort(cases: list[CaseFiles], opts: ScoreOptions, jobs: int = 1
                 ) -> list[SubjectResult]:
    """Score every case (in order; ``jobs`` > 1 scores subjects in parallel processes)."""
    if jobs > 1 and len(cases) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(score_subject, cases, [opts] * len(cases)))
    return [score_subject(c, opts) for c in cases]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Cohort summary: one row per metric column with n, mean, median and std (ddof 1)."""
    metrics = [c for c in rows.columns if c != "subject"]
    values = rows[metrics].astype(float)
    return pd.DataFrame({"metric": metrics,
                         "n": values.count().to_numpy().astype(np.int64),
                         "mean": values.mean().to_numpy(),
                         "median": values.median().to_numpy(),
                         "std": values.std(ddof=1).to_numpy()})


def curves_table(results: list[SubjectResult]) -> pd.DataFrame:
    """Long table of every curve: subject, region, threshold, dice, ftp, ftn."""
    frames = [pd.DataFrame({"subject": r.row["subject"], "region": name,
                            "threshold": c.thresholds, "dice": c.dice, "ftp": c.ftp,
                            "ftn": c.ftn})
              for r in results for name, c in r.curves.items()]
    return pd.concat(frames, ignore_index=True)


def mean_curves(results: list[SubjectResult]) -> dict[str, QUCurves]:
    """Per-region curves averaged over subjects (for the cohort plot)."""
    names = list(results[0].curves)
    out = {}
    for name in names:
        cs = [r.curves[name] for r in results]
        out[name] = QUCurves(cs[0].thresholds, *(np.mean([getattr(c, a) for c in cs], axis=0)
                                                 for a in ("dice", "ftp", "ftn")))
    return out


def pooled_bins(results: list[SubjectResult]) -> dict[str, ReliabilityBins]:
    """Reliability bins summed over subjects (empty when no probabilities were given)."""
    out: dict[str, ReliabilityBins] = {}
    for r in results:
        for name, b in r.bins.items():
            out[name] = out[name] + b if name in out else b
    return out
