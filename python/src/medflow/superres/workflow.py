"""Samplesheet- and folder-level work of ``super-resolve``: training from samplesheets,
prediction for one subject or a batch."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.images import read_image
from medflow.io.outputs import check_outputs
from medflow.io.paths import inside
from medflow.io.samplesheet import load_samplesheet
from medflow.io.sidecar import Timer, make_sidecar, sha256, write_json
from medflow.io.tables import write_table

log = logging.getLogger("medflow")


def data_checksum(df: pd.DataFrame, roles) -> str:
    """SHA-256 over the subjects and their files' checksums (row order independent)."""
    h = hashlib.sha256()
    for _, row in df.sort_values("subject").iterrows():
        h.update(row["subject"].encode())
        for role in roles:
            if row.get(role):
                h.update(sha256(row[role]).encode())
    return h.hexdigest()


def model_outputs(out: Path) -> list[Path]:
    """Every file a training command writes into its model folder."""
    return [Path(out) / n for n in ("model.safetensors", "model.json",
                                    "training_curve.parquet", "train.json")]


def split(subjects: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Subjects for training and validation (at least one of each when there are two)."""
    order = list(np.random.default_rng(seed).permutation(sorted(subjects)))
    n_val = int(round(val_fraction * len(order)))
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(order) > 1 else 0), len(order) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def train_prior_files(samplesheet: Path, roles: tuple[str, ...], out: Path, *, epochs: int,
                      batch: int, latent: int, lr: float, beta: float, val_fraction: float,
                      device: str, seed: int) -> dict:
    """Read every high-resolution label map of ``roles``, train the prior, write the model
    folder (+ training curve and sidecar); returns the card."""
    import torch

    from medflow.superres.modelio import save_model
    from medflow.superres.prior import PriorConfig
    from medflow.superres.shapes import Shape
    from medflow.superres.train_prior import train_prior

    timer = Timer()
    df = load_samplesheet(samplesheet, required_roles=roles)
    check_outputs(model_outputs(out), [samplesheet, *(v for r in roles for v in df[r] if v)])
    cfg = PriorConfig(latent=latent)
    train_ids, val_ids = split(list(df["subject"]), val_fraction, seed)
    shapes: dict[str, list] = {"train": [], "val": []}
    for _, row in df.iterrows():
        for role in roles:
            vol = read_image(row[role], kind="label")
            if vol.n_frames != 1:
                raise InvalidDataError("a high-resolution label map is 3D", row[role])
            try:
                shape = Shape.from_labels(np.asarray(vol.data), vol.affine, cfg.labels)
            except ValueError as exc:
                raise InvalidDataError(str(exc), row[role]) from None
            shapes["train" if row["subject"] in train_ids else "val"].append(shape)
    timer.mark("read_s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net, history, validation = train_prior(shapes["train"], shapes["val"], cfg, epochs=epochs,
                                           batch=batch, lr=lr, beta=beta, seed=seed,
                                           device=device)
    timer.mark("train_s")
    card = {"training": {"label_roles": list(roles), "subjects": len(df),
                         "train_subjects": train_ids, "val_subjects": val_ids,
                         "shapes": len(shapes["train"]), "epochs": epochs, "batch": batch,
                         "lr": lr, "beta": beta, "seed": seed,
                         "data_sha256": data_checksum(df, roles)},
            "validation": validation,
            "label_names": {"0": "background", "1": "LV blood pool", "2": "LV myocardium",
                            "3": "RV blood pool"}}
    save_model(out, net.cpu(), "latent", card)
    with atomic_outputs() as o:
        write_table(pd.DataFrame(history), o.path(Path(out) / "training_curve.parquet"))
        write_json(make_sidecar("super-resolve train-prior",
                                {"label_roles": list(roles), "epochs": epochs, "seed": seed},
                                {"samplesheet": samplesheet}, timer),
                   o.path(Path(out) / "train.json"))
    return card


def _frame_pairs(row, image_role, label_role, hr_image_roles, hr_label_roles, la_roles=()):
    """For ED (frame 0) and ES (least LV blood pool): ((thick image frame, thick labels
    frame, stack affine, HR image, HR labels, HR affine), long-axis views of the frame)."""
    from medflow.superres.inputs import frames_of, long_axis_at, read_long_axis, select_frames

    image = read_image(row[image_role])
    labels = read_image(row[label_role], kind="label")
    las = [read_long_axis(row[r], labels) for r in la_roles if row.get(r)]
    frames = dict(select_frames(labels, "ed,es"))
    out = []
    for name, hr_img_role, hr_lab_role in zip(("ed", "es"), hr_image_roles, hr_label_roles):
        hr_img, hr_lab = read_image(row[hr_img_role]), read_image(row[hr_lab_role], kind="label")
        t = frames[name] if name in frames else 0
        out.append(((frames_of(image)[..., t], frames_of(labels)[..., t], labels.affine,
                     np.asarray(hr_img.data), np.asarray(hr_lab.data), hr_lab.affine),
                    long_axis_at(las, t)))
    return out


def _copy_prior(prior: Path, out: Path, o) -> None:
    """The prior's files into ``out/prior`` (inside an atomic output set): a joint model
    trained on motion-corrected stacks carries the prior that corrects them."""
    import shutil

    from medflow.superres.modelio import CARD, PRIOR_FOLDER, WEIGHTS

    for name in (WEIGHTS, CARD):
        shutil.copyfile(Path(prior) / name, o.path(Path(out) / PRIOR_FOLDER / name))


def train_joint_files(samplesheet: Path, image_role: str, label_role: str,
                      hr_image_roles: tuple[str, ...], hr_label_roles: tuple[str, ...],
                      out: Path, *, steps: int, batch: int, lr: float, val_fraction: float,
                      device: str, seed: int, prior: Path | None = None,
                      la_roles: tuple[str, ...] = (), remap: float = 0.5) -> dict:
    """Train the joint network on every subject's ED/ES thick/HR pairs; returns the card.

    With ``prior`` (a ``train-prior`` folder) each thick stack is first motion-corrected
    (:func:`medflow.superres.run.estimate_shifts`, with the ``la_roles`` long-axis labels
    where the row has them), as ``predict`` will do; the prior is copied into the model
    folder (``prior/``)."""
    from medflow.superres.joint import make_pair, train_joint
    from medflow.superres.joint_net import JointConfig
    from medflow.superres.latent import FitOptions
    from medflow.superres.modelio import CARD, PRIOR_FOLDER, WEIGHTS, load_model, save_model
    from medflow.superres.run import estimate_shifts

    timer = Timer()
    roles = (image_role, label_role, *hr_image_roles, *hr_label_roles)
    df = load_samplesheet(samplesheet, required_roles=(*roles, *la_roles))
    prior_files = [Path(out) / PRIOR_FOLDER / n for n in (WEIGHTS, CARD)] \
        if prior is not None else []
    read_from = [samplesheet, prior, *(v for r in (*roles, *la_roles) for v in df[r] if v)]
    check_outputs([*model_outputs(out), *prior_files], [p for p in read_from if p is not None])
    shape_prior, prior_card = load_model(prior, "latent") if prior is not None else (None, None)
    if prior_card is not None and tuple(prior_card["config"]["labels"]) != JointConfig().labels:
        raise InvalidDataError(f"a prior for labels {prior_card['config']['labels']}; the "
                               f"joint network's are {list(JointConfig().labels)}", prior)
    cfg = JointConfig()
    train_ids, val_ids = split(list(df["subject"]), val_fraction, seed)
    pairs: dict[str, list] = {"train": [], "val": []}
    for _, row in df.iterrows():
        for args, views in _frame_pairs(row, image_role, label_role, hr_image_roles,
                                        hr_label_roles, la_roles):
            try:
                shifts = None
                if shape_prior is not None:
                    shifts = estimate_shifts(shape_prior, args[1], args[2], views,
                                             FitOptions(), seed)[0]
                pair = make_pair(*args, cfg, shifts_mm=shifts)
            except ValueError as exc:
                raise InvalidDataError(str(exc), row[label_role]) from None
            pairs["train" if row["subject"] in train_ids else "val"].append(pair)
    timer.mark("read_s")
    net, history, validation = train_joint(pairs["train"], pairs["val"], cfg, steps=steps,
                                           batch=batch, lr=lr, seed=seed, device=device,
                                           remap=remap)
    timer.mark("train_s")
    card = {"training": {"image_role": image_role, "label_role": label_role,
                         "hr_image_roles": list(hr_image_roles),
                         "hr_label_roles": list(hr_label_roles), "subjects": len(df),
                         "train_subjects": train_ids, "val_subjects": val_ids,
                         "steps": steps, "batch": batch, "lr": lr, "seed": seed,
                         "remap": remap, "data_sha256": data_checksum(df, roles),
                         "motion_correction": None if prior is None else {
                             "prior": PRIOR_FOLDER, "long_axis_roles": list(la_roles),
                             "prior_data_sha256": prior_card["training"].get("data_sha256")}},
            "validation": validation}
    save_model(out, net.cpu(), "joint", card)
    with atomic_outputs() as o:
        if prior is not None:
            _copy_prior(prior, out, o)
        write_table(pd.DataFrame(history), o.path(Path(out) / "training_curve.parquet"))
        write_json(make_sidecar("super-resolve train", {"method": "joint", "steps": steps,
                                                        "seed": seed},
                                {"samplesheet": samplesheet}, timer),
                   o.path(Path(out) / "train.json"))
    return card


def _load(method, model_dir, device):
    """(network or None, card or None, method, shape prior of a joint model or None) for a
    prediction."""
    if model_dir is None:
        return None, None, method, None
    from medflow.superres.modelio import load_joint, load_model, read_card

    method = method or read_card(model_dir).get("method")
    if method == "joint":
        net, card, prior = load_joint(model_dir, device)
        return net, card, method, prior
    if method == "latent":
        net, card = load_model(model_dir, method, device)
        return net, card, method, None
    return None, None, method, None


def predict_command(method, model_dir, *, seg, image, la, output, output_image, frames,
                    grid_like, iterations, label_thickness, samplesheet, outdir, label_role,
                    image_role, la_roles, jobs, device, seed,
                    shape_from: str = "stack") -> list[Path]:
    """``super-resolve predict``: one subject (``seg``/``output``) or a samplesheet."""
    from medflow.superres.latent import FitOptions
    from medflow.superres.run import predict_files

    net, card, method, prior = _load(method, model_dir, device)
    options = FitOptions(iterations=iterations, thickness_mm=label_thickness,
                         shape_from=shape_from)
    params = {"iterations": iterations, "label_thickness_mm": label_thickness,
              "shape_from": shape_from, "frames": frames} if method == "latent" \
        else {"frames": frames}
    if prior is not None:  # a joint model's motion correction
        params.update(iterations=iterations, label_thickness_mm=label_thickness)
    common = dict(net=net, card=card, model_dir=model_dir, frames=frames, grid_like=grid_like,
                  prior=prior,
                  fit_options=options, seed=seed, parameters=params)
    if seg is not None:
        return predict_files(method, seg, output, image=image, output_image=output_image,
                             la=la, **common)
    if method == "joint" and not image_role:  # the joint network needs its image column
        image_role = card.get("training", {}).get("image_role")
    roles = (label_role, *([image_role] if image_role else []), *la_roles)
    df = load_samplesheet(samplesheet, required_roles=roles)
    jobs_args = []
    for _, row in df.iterrows():
        sub = row["subject"]
        folder = inside(outdir, sub)
        role = label_role.removeprefix("seg_")
        views = {r.removeprefix("seg_la_"): Path(row[r]) for r in la_roles}
        jobs_args.append(dict(seg=Path(row[label_role]),
                              output=folder / f"{sub}_{role}_hr_{{frame}}.nii.gz",
                              image=Path(row[image_role]) if image_role else None,
                              output_image=(folder / f"{sub}_{role}_hrimage_{{frame}}.nii.gz"
                                            if image_role else None), la=views))
    if jobs > 1 and len(jobs_args) > 1:
        # spawned, not forked: a child forked after the parent's PyTorch started its
        # OpenMP threads waits for them forever (batch -j 2 hung with a model loaded)
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(predict_files, method, **a, **common) for a in jobs_args]
            return [p for f in futures for p in f.result()]
    return [p for a in jobs_args for p in predict_files(method, **a, **common)]
