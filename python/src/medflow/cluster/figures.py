"""Pictures for a person: typical members of every cluster, and the 2D map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def montage(typical: dict[int, list[tuple[np.ndarray, str]]], sizes: dict[int, int],
            path: str | os.PathLike, title: str = "") -> Path:
    """One row per cluster: its size and its most typical members (closest to the centre
    first), each the middle slice drawn from the series, as the encoder saw it.

    Args:
        typical: cluster -> [(thumbnail (S, S) uint8, label)], as kept by ClusterTable.
        sizes: cluster -> number of images.
        path: PNG to write (use an atomic path).
    """
    plt = _pyplot()
    clusters = sorted(typical)
    cols = max((len(v) for v in typical.values()), default=1)
    fig, axes = plt.subplots(max(len(clusters), 1), cols + 1, squeeze=False,
                             figsize=(1.3 * (cols + 1), 1.35 * max(len(clusters), 1)))
    for ax in axes.flat:
        ax.axis("off")
    for r, c in enumerate(clusters):
        axes[r, 0].text(0.5, 0.5, f"cluster {c}\n{sizes.get(c, 0)} images", ha="center",
                        va="center", fontsize=8)
        for j, (thumb, label) in enumerate(typical[c]):
            ax = axes[r, j + 1]
            ax.imshow(thumb.T, cmap="gray", origin="lower", vmin=0, vmax=255)
            ax.set_title(label[:22], fontsize=5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def embedding_map(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, flagged: np.ndarray | None,
                  path: str | os.PathLike) -> Path:
    """Scatter of the 2D map coloured by cluster; flagged images ringed in red."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab20")
    for c in np.unique(cluster):
        sel = cluster == c
        ax.scatter(x[sel], y[sel], s=8, color=cmap(int(c) % 20), label=f"{c}")
    if flagged is not None and flagged.any():
        ax.scatter(x[flagged], y[flagged], s=40, facecolors="none", edgecolors="red",
                   label="flagged")
    ax.set_xlabel("map x (first principal axis)")
    ax.set_ylabel("map y (second principal axis)")
    ax.legend(fontsize=6, markerscale=1.5, ncol=2, title="cluster", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
