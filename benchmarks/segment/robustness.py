"""Artefact suite and calibration under domain shift, for ``cardiac_accuracy.py``.

- :func:`artefact_sheets`: the test subjects corrupted by each artefact of
  :data:`medflow.phantom.artefacts.ARTEFACTS` (fixed severities; subject i's draw is seeded
  with i, so every run corrupts the same way), one samplesheet per artefact.
- :func:`calibrated_models`: copies of the model, each with a calibrator fitted by
  ``medflow segment-cascaded calibrate`` on the model's own validation subjects (held out
  of training by ``--val-fraction``; never the test subjects).
- :func:`ece_report`: top-label ECE of the probabilities ``predict`` wrote, pooled over the
  test subjects and frames, on the voxels :func:`medflow.segment.calibrate.roi_mask` scores
  (the truth's foreground box widened by 8 voxels in-plane), plus the reliability bins.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medflow.phantom.artefacts import ARTEFACTS, corrupt
from medflow.segment.calibrate import roi_mask
from medflow.segment.calibration import top_label_ece


def _rows(sheet: Path) -> list[dict]:
    with open(sheet) as fh:
        return list(csv.DictReader(fh))


def _write(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def artefact_sheets(sheet: Path, workdir: Path) -> dict[str, Path]:
    """One samplesheet per artefact kind, its ``sa`` images corrupted (labels as they are)."""
    out = {}
    for kind in ARTEFACTS:
        folder = workdir / "artefacts" / kind
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, row in enumerate(_rows(sheet)):
            path = folder / f"{row['subject']}_sa.nii.gz"
            if not path.exists():
                img = nib.load(row["sa"])
                data = corrupt(np.asarray(img.dataobj, np.float32), img.affine, kind, seed=i)
                header = img.header.copy()
                header.set_data_dtype(np.float32)          # artefacts are not integers
                nib.save(nib.Nifti1Image(data, img.affine, header), path)
            rows.append({**row, "sa": str(path)})
        out[kind] = _write(rows, workdir / f"test8_{kind}.csv")
    return out


def calibrated_models(medflow, model: Path, train_sheet: Path, workdir: Path, tag: str,
                      methods: list[str], extra: list[str]) -> dict[str, Path]:
    """``{method: model copy with that calibrator}``, fitted on the model's validation
    subjects (from ``train_sheet``)."""
    val = set(json.loads((model / "model.json").read_text())["training"]["val_subjects"])
    rows = [r for r in _rows(train_sheet) if r["subject"] in val]
    if not rows:
        raise SystemExit("the model has no validation subjects: train with --val-fraction > 0")
    sheet = _write(rows, workdir / f"val_{tag}.csv")
    out = {}
    for method in methods:
        copy = workdir / f"model_{tag}_{method}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(model, copy)
        medflow("segment-cascaded", "calibrate", "--model", str(copy), "--samplesheet",
                str(sheet), "--method", method, *extra)
        out[method] = copy
    return out


def ece_report(sheet: Path, results: Path) -> dict:
    """ECE (top label, 15 bins) of ``results/<subject>/<subject>_sa_prob.nii.gz`` against
    ``seg_sa``, pooled; also the reliability bins (mean confidence, accuracy, count)."""
    bins = None
    for row in _rows(sheet):
        sub = row["subject"]
        probs = np.asarray(nib.load(results / sub / f"{sub}_sa_prob.nii.gz").dataobj)
        lab = np.asarray(nib.load(row["seg_sa"]).dataobj).astype(np.int64)
        if lab.ndim == 3:
            lab, probs = lab[..., None], probs[..., None, :]
        for t in range(lab.shape[3]):
            roi = roi_mask(lab[..., t])
            b = top_label_ece(torch.from_numpy(probs[..., t, :][roi].astype(np.float32)),
                              torch.from_numpy(lab[..., t][roi]))
            bins = b if bins is None else bins + b
    conf, acc = bins.means()
    return {"ece": round(bins.ece(), 4), "voxels": int(bins.counts.sum()),
            "reliability": {"confidence": np.round(conf, 4).tolist(),
                            "accuracy": np.round(acc, 4).tolist(),
                            "count": bins.counts.astype(int).tolist()}}


def reliability_png(reports: dict[str, dict], path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per variant, the diagonal ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for name, rep in reports.items():
        r = rep["reliability"]
        ax.plot(r["confidence"], r["accuracy"], "o-", ms=3, label=f"{name} ECE {rep['ece']:.3f}")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
