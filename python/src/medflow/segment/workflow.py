"""File-level steps behind the commands: samplesheet -> model folder, images -> outputs.

Everything here reads and writes files (atomically, with sidecars); the method itself
lives in cascade/train/infer/predict.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.images import read_image
from medflow.io.outputs import check_outputs
from medflow.io.paths import inside
from medflow.io.sidecar import Timer, make_sidecar, sidecar_path, write_json

log = logging.getLogger("medflow")
CURVE, CURVE_PNG, TRAIN_SIDECAR = "training_curve.parquet", "training_curve.png", "train.json"
REGIONS = {"brats": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}}
NAMES = {"cardiac": {0: "background", 1: "LV", 2: "myocardium", 3: "RV"},
         "brats": {0: "background", 1: "necrosis", 2: "oedema", 3: "enhancing",
                   4: "enhancing"}}


def build_config(samples, labels, spacing, patch, stage1_factor, channels, levels, stages,
                 regions, in_channels, kind: str = "generic", memory_budget=None,
                 copies: int = 1, context: tuple[str, ...] = (), cooperative: bool = False):
    """Plan the architecture from the data (:func:`plan.plan_cascade`: patch, levels,
    widths, stage-1 factor under ``memory_budget`` bytes; explicit options kept) and add
    labels, regions and temporal context. Returns the :class:`plan.Plan` (its ``config``
    is the model's). ``cooperative`` adds the refiner (:mod:`segment.cooperative`) and
    plans for one more copy (the hard example's stage-2 decoder pass and the refiner on
    three inputs, counted as a whole stage-2 copy: the safe side)."""
    import dataclasses

    from medflow.segment.cooperative import refiner_channels
    from medflow.segment.plan import DEFAULT_BUDGET, Fingerprint, plan_cascade

    if regions != "none" and not set(labels) >= {0, 1, 2, 4} and not set(labels) >= {0, 1, 2, 3}:
        raise InvalidDataError(f"--regions brats needs BraTS labels, found {list(labels)}")
    reg = {}
    if regions == "brats":
        et = 4 if 4 in labels else 3
        reg = {k: tuple(et if v == 4 else v for v in vals) for k, vals in REGIONS[regions].items()}
    names = NAMES.get(kind, {0: "background"})
    fp = Fingerprint.of([s.classes.shape for s in samples], spacing)
    plan = plan_cascade(fp, memory_budget or DEFAULT_BUDGET, patch=patch,
                        stage1_factor=stage1_factor, channels=channels, levels=levels,
                        stages=stages, copies=copies + int(cooperative),
                        in_channels=in_channels, context_frames=tuple(context),
                        labels=tuple(labels), regions=reg,
                        label_names=tuple(names.get(v, f"label_{v}") for v in labels))
    if cooperative:
        plan.config = dataclasses.replace(
            plan.config, refiner_channels=refiner_channels(plan.config.channels2))
    return plan


def train_outputs(out: Path) -> list[Path]:
    """Every file training writes into the model folder ``out`` (overwrite check)."""
    from medflow.segment.modelio import CARD, OPTIMIZER, WEIGHTS

    return [Path(out) / n for n in (WEIGHTS, CARD, OPTIMIZER, CURVE, CURVE_PNG, TRAIN_SIDECAR)]


def check_resume(out: Path, prior: dict, had_refiner: bool, augment: str,
                 cooperative: bool) -> None:
    """Refuse (exit 2) to continue the model in ``out`` with another ``--cooperative`` (the
    weights hold a refiner or not) or ``--augment`` (the card records one for every epoch)."""
    before = prior["training"].get("options", {}).get("augment", augment)
    if had_refiner != cooperative:
        trained = ("with" if had_refiner else "without") + " --cooperative"
    elif before != augment:
        trained = f"with --augment {before}"
    else:
        return
    import click

    raise click.UsageError(f"--resume: the model in {out} was trained {trained}; give the "
                           "same option to continue it")


def train_model(df, image_roles, label_role, out: Path, *, epochs, patch, stage1_factor,
                augment, val_fraction, channels, levels, lr, stages, regions, resume, device,
                seed, samplesheet, context: tuple[str, ...] = (), phase_weight: float = 0.0,
                phase_loss_weight: float = 0.0, adv_steps: int = 1, progress=False,
                memory_budget=None, cooperative: bool = False,
                announce=None) -> dict:
    """Train from a samplesheet into ``out``; returns the model card.

    ``context``: temporal context frames (:mod:`segment.context`); a resumed run keeps the
    saved model's. ``announce`` receives the plan's one-line summary before training starts
    (default: the log, at info). ``cooperative``: train the shape-correcting refiner with
    latent-space hard examples (:mod:`segment.cooperative`); a resumed run must match the
    saved model (exit 2 otherwise)."""
    import torch
    from tqdm import tqdm

    from medflow.segment import advchain
    from medflow.segment.cascade import Cascade
    from medflow.segment.cooperative import card as cooperative_card
    from medflow.segment.data import load_training_samples, training_checksum
    from medflow.segment.modelio import load_model, load_optimizer, read_card, save_model
    from medflow.segment.train import TrainOptions, split_subjects, train

    timer = Timer()
    opts = TrainOptions(epochs=epochs, lr=lr, augment=augment, phase_weight=phase_weight,
                        phase_loss_weight=phase_loss_weight, adv_steps=adv_steps,
                        cooperative=cooperative, seed=seed)
    prior = read_card(out) if resume and (Path(out) / "model.json").exists() else None
    known = tuple(prior["config"]["labels"]) if prior else None
    spacing = tuple(prior["config"]["spacing"]) if prior else None
    if prior:
        context = tuple(prior["config"].get("context_frames", ()))
    samples, labels, spacing = load_training_samples(df, image_roles, label_role, known, spacing,
                                                     context)
    if not samples:
        raise InvalidDataError("no labelled frames in the samplesheet", samplesheet)
    if prior:
        model, _ = load_model(out, device)
        check_resume(out, prior, model.refiner is not None, augment, cooperative)
        history, plan_card = prior["training"]["history"], prior.get("plan")
    else:
        plan = build_config(samples, labels, spacing, patch, stage1_factor, channels, levels,
                            stages, regions, len(image_roles), df.attrs.get("kind", "generic"),
                            memory_budget, advchain.copies(augment), context, cooperative)
        (announce or log.info)(plan.line())
        torch.manual_seed(seed)
        model, history, plan_card = Cascade(plan.config).to(device), [], plan.card()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    if prior:
        load_optimizer(out, opt)
    train_set, val_set = split_subjects(samples, val_fraction, seed)
    base = {"plan": plan_card, "labels": list(labels), "label_names": list(model.cfg.label_names),
            "spacing_mm": list(spacing), "normalisation": model.cfg.normalisation,
            "input": input_card(model.cfg, image_roles),
            "training": {"image_roles": list(image_roles), "label_role": label_role,
                         "data_sha256": training_checksum(df, (*image_roles, label_role)),
                         "subjects": int(df.shape[0]), "samples": len(samples),
                         "val_subjects": sorted({s.subject for s in val_set}),
                         "options": {**vars(opts), "val_fraction": val_fraction,
                                     **advchain.card(augment),
                                     **(cooperative_card() if cooperative else {})}}}

    def card_for(history) -> dict:
        last = history[-1] if history else {}
        dice = {name: last.get(f"val_dice_{i}") for i, name in
                enumerate(model.cfg.label_names) if i > 0 and f"val_dice_{i}" in last}
        return {**base, "training": {**base["training"], "epochs_done": len(history),
                                     "history": history},
                "validation": {"dice": dice, "mean_dice": last.get("val_dice_mean")}}

    def on_epoch(model, opt, history):
        save_model(out, model, card_for(history), opt)
        write_curve(out, history)

    total = len(train_set) * max(0, epochs - len(history))
    with tqdm(total=total, disable=not progress, desc="train", unit="step") as bar:
        history = train(model, samples, opts, val_fraction, device, len(history), history,
                        opt, on_epoch, bar)
    card = card_for(history)
    if not (Path(out) / "model.safetensors").exists():  # resumed with nothing left to do
        save_model(out, model, card, opt)
    timer.mark("train_s")
    with atomic_outputs() as o:
        write_json(make_sidecar("segment-cascaded train", {**vars(opts), "stages": stages,
                                "context_frames": list(model.cfg.context_frames)},
                                {"samplesheet": samplesheet}, timer), o.path(out / TRAIN_SIDECAR))
    return card


def input_card(cfg, image_roles) -> dict:
    """What ``predict`` must be given and builds: the image roles in order, whether a cine
    is needed, and the network's channels (each role at the frame, then at each context
    frame)."""
    frames = ["t"] + ["frame 0 (ED)" if c == "ed" else f"t{c} (cyclic)"
                      for c in cfg.context_frames]
    return {"image_roles": list(image_roles), "context_frames": list(cfg.context_frames),
            "needs_cine": bool(cfg.context_frames),
            "network_channels": [f"{r} at {f}" for f in frames for r in image_roles]}


def write_curve(out: Path, history: list[dict]) -> None:
    """Training curve as Parquet and PNG (loss and validation Dice per epoch)."""
    import matplotlib
    import pandas as pd

    from medflow.io.tables import write_table

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ax[0].plot(df["epoch"], df["loss"])
    ax[0].set(xlabel="epoch", ylabel="training loss")
    for col in [c for c in df.columns if c.startswith("val_dice_")]:
        ax[1].plot(df["epoch"], df[col], label=col[9:])
    ax[1].set(xlabel="epoch", ylabel="validation Dice", ylim=(0, 1))
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_outputs() as o:
        write_table(df, o.path(out / CURVE))
        fig.savefig(o.path(out / CURVE_PNG), dpi=80, metadata={"Software": None})
    plt.close(fig)


def uncertainty_paths(path: Path, regions: dict) -> dict[str, Path]:
    """``U.nii.gz`` -> {"": U.nii.gz}, or {region: U_wt.nii.gz, ...} for region models."""
    if not regions:
        return {"": Path(path)}
    name = Path(path).name
    stem, ext = (name[:-7], ".nii.gz") if name.endswith(".nii.gz") else os.path.splitext(name)
    return {r: Path(path).with_name(f"{stem}_{r.lower()}{ext}") for r in regions}


def predict_files(model, card, model_dir, inputs, output, probabilities=None,
                  uncertainty=None, *, tta=1, mc=1, kind="entropy", device="cpu", seed=0,
                  progress=False, overlap=None, max_memory=None,
                  ventricle_anatomy=True, calibrator=None, refine: bool = False) -> Path:
    """Read the input channel(s) (uncompressed NIfTI memory-mapped), segment every frame,
    write the label map (and probabilities, uncertainty) atomically with a JSON sidecar.
    The memory estimate is checked against ``max_memory`` (bytes) before any output.
    ``calibrator`` (:func:`calibrate.load_calibrator`) calibrates the probabilities, hence
    uncertainty and labels; the sidecar names it. ``refine``: the probabilities (hence
    labels and uncertainty) are the model's refiner's (:mod:`segment.cooperative`; a model
    without one is refused by :func:`~medflow.segment.predict.segment`, 65)."""
    from tqdm import tqdm

    from medflow.segment.memory import windows_run
    from medflow.segment.predict import (NiftiSink, check_input, label_dtype, plan_prediction,
                                         segment)

    timer = Timer()
    cfg = model.cfg
    check_outputs(prediction_outputs(output, probabilities, uncertainty, cfg.regions),
                  [*inputs, model_dir])
    vols = [read_image(p, mmap=True) for p in inputs]
    check_input(model, vols, inputs[0])
    first = vols[0]
    shape, affine = tuple(first.data.shape), first.affine
    unc_paths = uncertainty_paths(uncertainty, cfg.regions) if uncertainty else {}
    voxels = math.prod(shape)
    held = sum(n for path, n in [(output, label_dtype(cfg.labels).itemsize),
                                 (probabilities, 4 * cfg.n_classes),
                                 *[(p, 1) for p in unc_paths.values()]]
               if path is not None and not str(path).lower().endswith(".nii")) * voxels
    layout, cost, grid = plan_prediction(model, vols, draws=max(1, tta) * max(1, mc),
                                         outputs_in_memory=held, overlap=overlap,
                                         max_memory=max_memory, path=inputs[0])
    windows = first.n_frames * windows_run(cfg, grid, layout)
    with atomic_outputs() as out:
        label = NiftiSink(out.path(output), shape, affine, label_dtype(cfg.labels), "label")
        prob = (NiftiSink(out.path(probabilities), (*shape, cfg.n_classes), affine,
                          np.float32) if probabilities else None)
        unc = {name: NiftiSink(out.path(p), shape, affine, np.uint8)
               for name, p in unc_paths.items()}
        with tqdm(total=windows, disable=not progress, desc="predict", unit="window") as bar:
            facts = segment(model, vols, label.array, prob.array if prob else None,
                            {k: s.array for k, s in unc.items()}, tta, mc, kind, device, seed,
                            bar.update, layout, ventricle_anatomy, calibrator, refine)
        for sink in (label, prob, *unc.values()):
            if sink is not None:
                sink.close()
        timer.mark("predict_s")
        params = {"tta": tta, "mc_samples": mc, "uncertainty_kind": kind, "seed": seed,
                  "device": device, "model": str(model_dir), "overlap": overlap,
                  "max_memory_bytes": max_memory, "ventricle_anatomy": ventricle_anatomy,
                  "calibration": calibrator.method if calibrator is not None else "none",
                  "refine": refine}
        ins = {f"input_{i}": p for i, p in enumerate(inputs)}
        ins["model_weights"] = Path(model_dir) / "model.safetensors"
        if calibrator is not None:
            from medflow.segment.calibrate import CALIBRATION

            ins["calibrator"] = Path(model_dir) / CALIBRATION
        extra = {"outputs": {"labels": str(output), "probabilities": probabilities,
                             "uncertainty": [str(p) for p in unc_paths.values()]},
                 "geometry": first.geometry(), "labels": list(cfg.labels),
                 "label_names": list(cfg.label_names), **facts,
                 "windows_per_frame": facts["windows"] // max(1, first.n_frames),
                 "memory_estimate_bytes": {"total": cost.total, "fixed": cost.fixed,
                                           "streaming": cost.streaming,
                                           "whole_volume": cost.in_memory}}
        write_json(make_sidecar("segment-cascaded predict", params, ins, timer, **extra),
                   out.path(sidecar_path(output)))
    return Path(output)


def prediction_outputs(output, probabilities, uncertainty, regions: dict) -> list[Path]:
    """Every file :func:`predict_files` writes (label map, its sidecar, probabilities,
    uncertainty maps), for the overwrite check."""
    files = [Path(output), sidecar_path(output), probabilities]
    return files + (list(uncertainty_paths(uncertainty, regions).values()) if uncertainty else [])


def predict_batch(model, card, model_dir, samplesheet, outdir, roles, save_probabilities=False,
                  save_uncertainty=False, **options) -> int:
    """Segment every subject of a samplesheet into ``outdir/<subject>/``; every output is
    checked against every input first (exit 2)."""
    from medflow.io.samplesheet import is_metadata_column, load_samplesheet

    df = load_samplesheet(samplesheet, required_roles=tuple(roles))
    tag = roles[0]
    jobs = []
    for _, row in df.iterrows():
        sub = row["subject"]
        names = [inside(outdir, sub, f"{sub}_{tag}_{what}.nii.gz")
                 for what in ("seg", "prob", "unc")]
        jobs.append((sub, [Path(row[r]) for r in roles], names[0],
                     names[1] if save_probabilities else None,
                     names[2] if save_uncertainty else None))
    inputs = [Path(v) for c in df.columns if c != "subject" and not is_metadata_column(c)
              for v in df[c] if v]
    check_outputs([p for job in jobs for p in prediction_outputs(*job[2:], model.cfg.regions)],
                  [*inputs, samplesheet, model_dir])
    for sub, images, seg, prob, unc in jobs:
        predict_files(model, card, Path(model_dir), images, seg, prob, unc, **options)
        log.info("segmented %s", sub)
    return int(df.shape[0])
