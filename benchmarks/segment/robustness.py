"""Artefact suite and calibration under domain shift, for ``cardiac_accuracy.py``.

Both run on a few frames of each test cine (:func:`frame_sheet`, default ED and the true
ES frame: a whole cine per artefact and calibrator is more CPU than the shared cores give).

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
import resource
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medflow.phantom.artefacts import ARTEFACTS, corrupt
from medflow.segment.calibrate import roi_mask
from medflow.segment.calibration import top_label_ece

NAMES = {1: "LV", 2: "myocardium", 3: "RV"}


def _rows(sheet: Path) -> list[dict]:
    with open(sheet) as fh:
        return list(csv.DictReader(fh))


def _write(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def frame_sheet(sheet: Path, workdir: Path, spec: str = "ed,es") -> Path:
    """The test cines cut to the frames ``spec`` names (``ed`` = 0, ``es`` = truth.json's
    ``es_frame``, or numbers), image and labels alike, as 4D images; a samplesheet of them."""
    folder = workdir / f"frames_{spec.replace(',', '_')}" / Path(sheet).stem
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in _rows(sheet):
        names = spec.split(",")
        es = json.loads(Path(row["truth"]).read_text())["es_frame"] if "es" in names else None
        frames = [0 if f == "ed" else es if f == "es" else int(f) for f in names]
        out = dict(row)
        for role in ("sa", "seg_sa"):
            path = folder / f"{row['subject']}_{role}.nii.gz"
            if not path.exists():
                img = nib.load(row[role])
                data = np.asarray(img.dataobj)[..., frames]
                nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
            out[role] = str(path)
        rows.append(out)
    return _write(rows, folder.with_suffix(".csv"))


def dice(sheet: Path, results: Path) -> dict[str, float]:
    """Mean over subjects of the Dice of each class over all frames."""
    scores: dict[str, list] = {n: [] for n in NAMES.values()}
    for row in _rows(sheet):
        sub = row["subject"]
        pred = np.asarray(nib.load(results / sub / f"{sub}_sa_seg.nii.gz").dataobj)
        truth = np.asarray(nib.load(row["seg_sa"]).dataobj)
        for c, name in NAMES.items():
            a, b = pred == c, truth == c
            scores[name].append(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return {n: round(float(np.mean(v)), 4) for n, v in scores.items()}


def _predict(medflow, model: Path, sheet: Path, out: Path, extra: list[str]) -> dict:
    """Run predict; its wall and CPU seconds (children)."""
    t0, c0 = time.perf_counter(), _child_cpu()
    medflow("segment-cascaded", "predict", "--model", str(model), "--samplesheet", str(sheet),
            "--outdir", str(out), *extra)
    return {"predict_s": round(time.perf_counter() - t0, 1),
            "predict_cpu_s": round(_child_cpu() - c0, 1)}


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def artefact_rows(medflow, model: Path, sheet: Path, workdir: Path, tag: str,
                  extra: list[str]) -> dict:
    """Dice on the clean frames and per artefact, its drop from clean (per class, mean)."""
    _predict(medflow, model, sheet, workdir / f"pred_{tag}_clean_frames", extra)
    clean = dice(sheet, workdir / f"pred_{tag}_clean_frames")
    out: dict = {"clean": {"dice": clean}}
    for kind, corrupted in artefact_sheets(sheet, workdir).items():
        res = workdir / f"pred_{tag}_{kind}"
        _predict(medflow, model, corrupted, res, extra)
        d = dice(corrupted, res)
        drop = {n: round(clean[n] - d[n], 4) for n in d}
        out[kind] = {"dice": d, "drop": drop,
                     "mean_drop": round(float(np.mean(list(drop.values()))), 4)}
    out["mean_drop_over_artefacts"] = round(float(np.mean(
        [out[k]["mean_drop"] for k in ARTEFACTS])), 4)
    return out


def calibration_rows(medflow, model: Path, models: dict[str, Path], sheet: Path,
                     workdir: Path, tag: str, extra: list[str]) -> dict:
    """ECE (and Dice, predict time) uncalibrated and with each calibrated model copy; a
    reliability diagram ``reliability_<tag>.png``."""
    reports = {}
    for name, path, flags in [("uncalibrated", model, ["--no-calibration"]),
                              *[(m, p, []) for m, p in models.items()]]:
        res = workdir / f"prob_{tag}_{name}"
        cost = _predict(medflow, path, sheet, res, ["--save-probabilities", *flags, *extra])
        reports[name] = {**ece_report(sheet, res), "dice": dice(sheet, res), **cost}
        if name != "uncalibrated":
            reports[name]["fit"] = json.loads((path / "model.json").read_text())["calibration"]
    reliability_png(reports, workdir / f"reliability_{tag}.png", tag)
    return reports


def artefact_sheets(sheet: Path, workdir: Path) -> dict[str, Path]:
    """One samplesheet per artefact kind, its ``sa`` images corrupted (labels as they are)."""
    out = {}
    for kind in ARTEFACTS:
        folder = workdir / "artefacts" / Path(sheet).stem / kind
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
        out[kind] = _write(rows, workdir / f"{Path(sheet).stem}_{kind}.csv")
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
