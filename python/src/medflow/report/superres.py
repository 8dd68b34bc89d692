"""The report's superres section: the stage's table and, for a few subjects, three
orthogonal planes through the high-resolution ED shape beside the acquired stack's labels
on the same planes (the stack drawn as acquired: 10 mm bands, shifts and all)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from medflow.io.images import read_image
from medflow.io.tables import read_table
from medflow.io.volume import nearest_on

VIEWS = 3  # subjects shown


def _nearest_on(stack, affine: np.ndarray, shape) -> np.ndarray:
    """The stack's first-frame labels sampled (nearest) at another grid's voxels."""
    data = np.asarray(stack.data)
    return nearest_on(data[..., 0] if data.ndim == 4 else data, stack.affine, affine, shape)


def orthogonal_views(hr_path: Path, stack_path: Path, path: Path, title: str) -> Path:
    """2 x 3 panels: the stack's labels (top) and the HR shape (bottom) on the grid's three
    central planes through the LV (short axis, and the two long-axis cuts)."""
    from medflow.report.figures import COLOURS, _save, plt
    from matplotlib.colors import ListedColormap

    hr = read_image(hr_path, kind="label")
    labels = np.asarray(hr.data)
    stack = _nearest_on(read_image(stack_path, kind="label"), hr.affine, hr.shape3)
    lv = np.argwhere(labels == 1)
    centre = lv.mean(axis=0).round().astype(int) if len(lv) else np.array(labels.shape) // 2
    cmap = ListedColormap(["#000000"] + COLOURS)
    fig, axes = plt.subplots(2, 3, figsize=(9, 6))
    names = ("long axis (i fixed)", "long axis (j fixed)", "short axis (k fixed)")
    for col, axis in enumerate((0, 1, 2)):
        for row, (vol, what) in enumerate(((stack, "stack"), (labels, "1.25 mm shape"))):
            plane = np.take(vol, centre[axis], axis=axis)
            ax = axes[row, col]
            ax.imshow(plane.T, cmap=cmap, vmin=0, vmax=len(COLOURS), origin="lower",
                      interpolation="nearest", aspect="equal")
            ax.set_title(f"{what}: {names[col]}", fontsize=8)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def superres_section(results: Path, report: Path, table_html) -> list[str]:
    """HTML parts: the superres table and orthogonal views for the first subjects."""
    folder = results / "superres"
    table_path = folder / "superres.parquet"
    if not table_path.exists():
        return []
    table = read_table(table_path)
    out = ["<h2>superres</h2>",
           "<p>ED and ES shapes on a 1.25 mm grid from the short-axis segmentation "
           "(latent optimisation with a shape prior; the per-slice breath-hold shifts it "
           "estimated are in each shape's JSON sidecar). Volumes in ml, shifts in mm.</p>",
           table_html(table)]
    for subject in list(dict.fromkeys(table["subject"]))[:VIEWS]:
        for hr in sorted((folder / subject).glob(f"{subject}_*_hr_ed.nii.gz")):
            try:
                meta = json.loads(hr.with_name(hr.name.replace(".nii.gz", ".json")).read_text())
                stack = Path(meta["inputs"]["input"]["path"])
            except (OSError, ValueError, KeyError):
                continue
            if not stack.exists():
                continue
            png = orthogonal_views(hr, stack, report / f"superres_{subject}.png",
                                   f"{subject} ED: stack as acquired (top), 1.25 mm shape "
                                   "(bottom)")
            rel = Path(os.path.relpath(png, report)).as_posix()
            out.append(f'<img src="{html.escape(rel)}" alt="{html.escape(subject)} superres">')
    return out
