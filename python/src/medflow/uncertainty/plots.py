"""Figures: QU-BraTS curves (Dice, FTP, FTN against threshold) and reliability diagrams.

Matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import os

import numpy as np

from medflow.uncertainty.calibration import ReliabilityBins
from medflow.uncertainty.qubrats import QUCurves


def _figure(n_panels: int, title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * n_panels, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def plot_curves(curves: dict[str, QUCurves], path: str | os.PathLike,
                title: str = "QU-BraTS curves") -> None:
    """Three panels (Dice, FTP, FTN) against the uncertainty threshold, a line per region.

    Args:
        curves: region name -> curves (one case, or cohort means).
        path: PNG to write (use a temporary path from ``atomic_outputs``).
        title: figure title.
    """
    fig, axes = _figure(3, title)
    for ax, attr, label in zip(axes, ("dice", "ftp", "ftn"), ("Dice", "FTP ratio", "FTN ratio")):
        for name, c in curves.items():
            s = c.scores()[f"auc_{attr}"]
            ax.plot(c.thresholds, getattr(c, attr), label=f"{name} (AUC {s:.3f})")
        ax.set(xlabel="uncertainty threshold", ylabel=label, xlim=(100, 0), ylim=(-0.02, 1.02))
        ax.grid(True, linestyle=":")
        ax.legend(fontsize=7)
    fig.savefig(os.fspath(path), format="png", dpi=100, metadata={"Software": None})


def plot_reliability(bins: dict[str, ReliabilityBins], path: str | os.PathLike,
                     title: str = "Reliability") -> None:
    """Reliability diagram per region: observed frequency against mean probability per bin.

    Args:
        bins: region name -> reliability bins (one case or pooled over a cohort).
        path: PNG to write.
        title: figure title.
    """
    fig, axes = _figure(len(bins), title)
    for ax, (name, b) in zip(axes, bins.items()):
        edges = np.linspace(0, 1, b.n_bins + 1)
        mean_p, freq = b.means()
        full = b.counts > 0
        ax.bar(edges[:-1][full], freq[full], width=1 / b.n_bins, align="edge",
               edgecolor="black", linewidth=0.5, label="observed")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
        ax.plot(mean_p[full], freq[full], "o", color="tab:red", markersize=3, label="bin mean")
        ax.set(title=f"{name}: ECE {b.ece():.4f}", xlabel="predicted probability",
               ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    fig.savefig(os.fspath(path), format="png", dpi=100, metadata={"Software": None})
