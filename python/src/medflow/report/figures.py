"""Figures for the report (matplotlib, Agg backend): distributions per subject and
segmentations overlaid on their images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from medflow.io.atomic import atomic_path  # noqa: E402
from medflow.io.images import read_image  # noqa: E402

# Label colours: LV blood pool red, myocardium green, RV blue (then more for other labels).
COLOURS = ["#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def per_subject(table: pd.DataFrame, columns: list[str], path: Path, title: str) -> Path:
    """One panel per column: every subject's value as a dot over a box plot."""
    fig, axes = plt.subplots(1, len(columns), figsize=(2.2 * len(columns) + 0.5, 3),
                             squeeze=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same table gives the same PNG
    for ax, col in zip(axes[0], columns):
        values = pd.to_numeric(table[col], errors="coerce").dropna().to_numpy()
        if values.size:
            ax.boxplot(values, widths=0.5, showfliers=False)
            ax.scatter(1 + rng.uniform(-0.12, 0.12, values.size), values, s=14, alpha=0.8,
                       color="#444")
        ax.set_title(col, fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _best_slice(labels: np.ndarray, thin_axis: int) -> int:
    """The slice along ``thin_axis`` with the most labelled voxels."""
    other = tuple(a for a in range(3) if a != thin_axis)
    counts = (labels > 0).sum(axis=other)
    return int(np.argmax(counts)) if counts.any() else labels.shape[thin_axis] // 2


def overlay(image_path: Path, seg_path: Path, unc_path: Path | None, frame: int, path: Path,
            title: str) -> Path:
    """Image, segmentation overlaid, and uncertainty of one slice of one frame.

    The slice is cut across the axis with the fewest voxels (the stack's slice axis for a
    cine), at the position with the most labelled voxels.
    """
    img, seg = read_image(image_path), read_image(seg_path, kind="label")
    data, labels = np.asarray(img.data), np.asarray(seg.data)
    if data.ndim == 4:
        data, labels = data[..., frame], labels[..., frame]
    thin = int(np.argmin(data.shape[:3]))
    k = _best_slice(labels, thin)
    cut = [slice(None)] * 3
    cut[thin] = k
    image2d, labels2d = data[tuple(cut)].T, labels[tuple(cut)].T  # rows: second axis
    spacing = [s for a, s in enumerate(img.spacing) if a != thin]
    aspect = spacing[1] / spacing[0]
    panels = 3 if unc_path is not None and unc_path.exists() else 2
    fig, axes = plt.subplots(1, panels, figsize=(3 * panels, 3.2))
    lo, hi = np.percentile(image2d, [1, 99])
    for ax in axes[:2]:
        ax.imshow(image2d, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        ax.axis("off")
    values = [v for v in np.unique(labels2d) if v != 0]
    masked = np.ma.masked_equal(labels2d, 0)
    cmap = ListedColormap(COLOURS[:max(1, int(labels2d.max()))])
    axes[1].imshow(masked, cmap=cmap, vmin=0.5, vmax=max(1, labels2d.max()) + 0.5,
                   alpha=0.45, origin="lower", aspect=aspect, interpolation="nearest")
    axes[1].contour(labels2d, levels=np.arange(0.5, max(values, default=1) + 1), colors="w",
                    linewidths=0.4, origin="lower")
    axes[0].set_title("image", fontsize=8)
    axes[1].set_title("segmentation", fontsize=8)
    if panels == 3:
        unc = np.asarray(read_image(unc_path).data)
        unc = unc[..., frame] if unc.ndim == 4 else unc
        shown = axes[2].imshow(unc[tuple(cut)].T, cmap="magma", vmin=0, vmax=100,
                               origin="lower", aspect=aspect)
        axes[2].set_title("uncertainty (0-100)", fontsize=8)
        axes[2].axis("off")
        fig.colorbar(shown, ax=axes[2], fraction=0.046)
    fig.suptitle(f"{title} (frame {frame}, slice {k})", fontsize=9)
    return _save(fig, path)


def scores_by_subject(table: pd.DataFrame, columns: list[str], path: Path, title: str) -> Path:
    """Grouped bars: one group per subject, one bar per column (Dice, scores in [0, 1])."""
    n = len(columns)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(table) * n / 2 + 2), 3))
    x = np.arange(len(table))
    for i, col in enumerate(columns):
        ax.bar(x + (i - (n - 1) / 2) * 0.8 / n, table[col].astype(float), 0.8 / n, label=col,
               color=COLOURS[i % len(COLOURS)])
    ax.set_xticks(x, table["subject"], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=n)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def measured_vs_true(table: pd.DataFrame, pairs: list[tuple[str, str]], path: Path) -> Path:
    """Per phenotype: measured against true (with the identity line) above, and the
    difference (measured - true) against their mean below, with the mean difference and
    +-1.96 SD (Bland-Altman), one dot per subject."""
    fig, axes = plt.subplots(2, len(pairs), figsize=(2.6 * len(pairs) + 0.4, 5.2),
                             squeeze=False)
    for i, (measured, true) in enumerate(pairs):
        both = table[[measured, true]].apply(pd.to_numeric, errors="coerce").dropna()
        m, t = both[measured].to_numpy(), both[true].to_numpy()
        top, bottom = axes[0, i], axes[1, i]
        if m.size:
            lo, hi = float(min(m.min(), t.min())), float(max(m.max(), t.max()))
            top.plot([lo, hi], [lo, hi], color="#999", lw=0.8)
            top.scatter(t, m, s=14, color="#444")
            diff = m - t
            bottom.scatter((m + t) / 2, diff, s=14, color="#444")
            bottom.axhline(0, color="#999", lw=0.8)
            bottom.axhline(diff.mean(), color=COLOURS[0], lw=1)
            if diff.size > 1:
                for sign in (-1, 1):
                    bottom.axhline(diff.mean() + sign * 1.96 * diff.std(ddof=1),
                                   color=COLOURS[0], lw=0.8, ls="--")
        top.set_title(measured, fontsize=8)
        top.set_xlabel(true, fontsize=7)
        top.set_ylabel("measured", fontsize=7)
        bottom.set_xlabel("mean of measured and true", fontsize=7)
        bottom.set_ylabel("measured - true", fontsize=7)
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
    fig.suptitle("measured against truth.json", fontsize=9)
    return _save(fig, path)


def volume_curves(frames: pd.DataFrame, path: Path) -> Path:
    """LV (left) and RV (right) cavity volume (mL) against frame, one line per subject
    (columns ``subject``, ``frame``, ``lv_ml``, ``rv_ml``)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3), squeeze=False)
    for ax, col, title in zip(axes[0], ("lv_ml", "rv_ml"), ("LV cavity", "RV cavity")):
        for i, (subject, part) in enumerate(frames.groupby("subject", sort=True)):
            ax.plot(part["frame"], part[col], lw=1, color=COLOURS[i % len(COLOURS)],
                    label=subject)
        ax.set_title(f"{title} (mL)", fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.tick_params(labelsize=7)
    if frames["subject"].nunique() <= 12:
        axes[0, 1].legend(fontsize=6)
    return _save(fig, path)
