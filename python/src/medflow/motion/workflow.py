"""File-level steps behind ``estimate-motion-mesh fit``: views -> meshes -> measures ->
outputs, for one subject or every row of a samplesheet."""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError
from medflow.io.sidecar import Timer, make_sidecar
from medflow.motion.fit import EDFit, FitOptions, fit_ed, fit_motion
from medflow.motion.edshape import ed_targets, read_ed_shape
from medflow.motion.initial import initial_frame
from medflow.motion.inputs import Inputs, read_inputs
from medflow.motion.measures import mesh_wall, phenotypes, quality
from medflow.io.outputs import check_outputs
from medflow.motion.outputs import output_paths, vertex_table, write_subject
from medflow.motion.targets import View, build_targets
from medflow.motion.template import LV_ENDO, LV_EPI, Topology

log = logging.getLogger("medflow")
TOOL = "estimate-motion-mesh"


def residuals(rms: np.ndarray, planes: list[tuple[str, int]]) -> dict[str, float]:
    """Mean contour distance (mm) per view over its planes, frames and surfaces."""
    out = {}
    for view in dict.fromkeys(name for name, _ in planes):
        sel = [i for i, (name, _) in enumerate(planes) if name == view]
        vals = rms[:, sel]
        out[view] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def measure(inputs: Inputs, topo: Topology, vertices: np.ndarray, info: dict,
            planes: list, ed: EDFit) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """Phenotypes, QC, the per-frame table and the vertex table of fitted meshes."""
    sa = inputs.views[0]
    row, curves, geometry = phenotypes(topo, vertices, info["volumes_ml"],
                                       inputs.frame_interval_s, sa.labels, sa.spacing)
    res = residuals(info["rms_mm"], planes)
    row.update({f"fit_rms_{view}_mm": v for view, v in res.items()})
    row["wall_volume_ratio_min"] = info["cell_volume_ratio_min"]
    row["wall_volume_ratio_max"] = info["cell_volume_ratio_max"]
    row.update(quality(row, curves, sa.labels[..., row["ed_frame"]], res,
                       info["cell_volume_ratio_min"]))
    frames = pd.DataFrame({"frame": np.arange(vertices.shape[0]), **curves})
    wall, _ = mesh_wall(topo, vertices, row["ed_frame"])
    aha = np.zeros(topo.n_vertices, np.int64)
    aha[topo.ring_ids(LV_ENDO)] = wall.node_aha
    aha[topo.ring_ids(LV_EPI)] = wall.radial_aha
    geometry["slice_shifts_mm"] = ed.shifts.tolist()
    geometry["template_shape"] = ed.frame.shape.tolist()
    geometry["kinematic_per_frame"] = info["kinematic"].tolist()
    return row, frames, vertex_table(topo, vertices[row["ed_frame"]], aha), geometry


def read_subject(sa: Path, la_2ch: Path | None, la_4ch: Path | None, opts: FitOptions):
    """Views, slicer targets and plane list of one subject (both modes)."""
    inputs = read_inputs(sa, la_2ch, la_4ch)
    targets, planes = build_targets(inputs.views, {
        "la_2ch": opts.long_axis_weight, "la_4ch": opts.long_axis_weight})
    return inputs, targets, planes


def ed_fit(inputs: Inputs, targets, topo: Topology, opts: FitOptions,
           shape: View | None = None) -> EDFit:
    """The ED mesh (``fit``'s first stage), from the views' own starting frame; with a
    high-resolution ED ``shape`` (:mod:`medflow.motion.edshape`) its planes join the
    acquired ones for this stage only (``loss["ed_shape_planes"]`` counts them)."""
    init = initial_frame(inputs.views[0], inputs.views[1:])
    added = 0
    if shape is not None:
        targets, added = ed_targets(targets, shape, opts.ed_shape_spacing_mm,
                                    opts.ed_shape_weight)
    ed = fit_ed(targets, inputs.views[0].labels.shape[2], init, topo, opts)
    if shape is not None:
        ed.loss["ed_shape_planes"] = added
    return ed


def _start(sa: Path, la_2ch: Path | None, la_4ch: Path | None, out: Path,
           prefix: str | None, opts: FitOptions, seed: int, threads: int,
           ed_shape: Path | None = None):
    """What both modes do first: seed and threads, the output check (nothing may
    overwrite an input), the views (and the ``ed_shape`` map, checked against the stack
    before any work) and the ED fit. Returns (timer, inputs, targets, planes, topo, ed)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    check_outputs(output_paths(out, prefix).values(), [sa, la_2ch, la_4ch, ed_shape])
    timer = Timer()
    inputs, targets, planes = read_subject(sa, la_2ch, la_4ch, opts)
    shape = None
    if ed_shape is not None:
        shape = read_ed_shape(ed_shape, inputs.views[0])
        inputs.paths["ed_shape"] = Path(ed_shape)
    topo = Topology()
    timer.mark("read_s")
    ed = ed_fit(inputs, targets, topo, opts, shape)
    timer.mark("ed_fit_s")
    return timer, inputs, targets, planes, topo, ed


def fit_files(sa: Path, la_2ch: Path | None, la_4ch: Path | None, out: Path,
              prefix: str | None = None,
              opts: FitOptions | None = None, seed: int = 0, threads: int = 1,
              ed_shape: Path | None = None) -> dict:
    """Fit one subject and write its outputs; returns the phenotype row.

    Args:
        sa, la_2ch, la_4ch: cine segmentations (UK Biobank labels); long-axis optional.
        out, prefix: output folder and file prefix (see :mod:`medflow.motion.outputs`).
        opts: fitting options; seed: torch seed (the fit is deterministic given it).
        ed_shape: optional high-resolution ED label map (``super-resolve``'s hr_ed,
            world mm) whose planes join the ED fit (:mod:`medflow.motion.edshape`).

    Raises:
        MissingInputError: an input is missing (66).
        InvalidDataError: a segmentation or the ``ed_shape`` map is unusable (65, naming
            the file); nothing is written.
    """
    opts = opts or FitOptions()
    timer, inputs, targets, planes, topo, ed = _start(sa, la_2ch, la_4ch, out, prefix, opts,
                                                      seed, threads, ed_shape)
    vertices, info = fit_motion(targets, ed, topo, opts)
    timer.mark("motion_fit_s")
    params = {"options": opts.to_dict(), "seed": seed, "mode": "fit",
              "ed_shape": None if ed_shape is None else str(ed_shape),
              "frame_interval_s": inputs.frame_interval_s}
    return _write(out, prefix, inputs, topo, vertices, info, planes, ed, params, timer)


def predict_files(model: Path, sa: Path, la_2ch: Path | None, la_4ch: Path | None,
                  out: Path, prefix: str | None = None, seed: int = 0,
                  threads: int = 1, ed_shape: Path | None = None) -> dict:
    """Predict one subject's motion with a trained network and write the same outputs
    as :func:`fit_files`; returns the phenotype row. The ED mesh is fitted with the
    options the network was trained with (the model card's).

    Args:
        model: the model folder (``estimate-motion-mesh train``).
        ed_shape: optional high-resolution ED label map for the ED fit (as in
            :func:`fit_files`; the network then moves that mesh).

    Raises:
        MissingInputError: no model folder, card or weights (66).
        InvalidDataError: a corrupt or foreign model folder, or bad segmentations (65).
    """
    from medflow.motion import learn
    from medflow.motion.modelio import load_model

    net, card = load_model(model)
    opts = FitOptions.from_dict(card["fit_options"])
    given = {"sa": sa, "la_2ch": la_2ch, "la_4ch": la_4ch}
    missing = [v for v in card.get("views", ["sa"]) if given.get(v) is None]
    if missing:
        # The network never saw a subject without them: its motion would be a guess.
        raise InvalidDataError(f"the model was trained with the {', '.join(card['views'])} "
                               f"views; this subject has no {', '.join(missing)} (use `fit`, "
                               "or a model trained without it)", sa)
    timer, inputs, targets, planes, topo, ed = _start(sa, la_2ch, la_4ch, out, prefix, opts,
                                                      seed, threads, ed_shape)
    subject = learn.prepare(prefix or "subject", targets, planes, ed, topo, opts)
    vertices, info = learn.predict(net, subject, opts)
    timer.mark("motion_predict_s")
    params = {"options": opts.to_dict(), "seed": seed, "mode": "predict",
              "model": str(model), "model_trained_utc": card.get("trained_utc"),
              "ed_shape": None if ed_shape is None else str(ed_shape),
              "frame_interval_s": inputs.frame_interval_s}
    return _write(out, prefix, inputs, topo, vertices, info, planes, ed, params, timer)


def _write(out, prefix, inputs: Inputs, topo: Topology, vertices: np.ndarray, info: dict,
           planes: list, ed: EDFit, params: dict, timer: Timer) -> dict:
    """Measure meshes and write one subject's outputs (both modes); the phenotype row."""
    row, frames, vtable, geometry = measure(inputs, topo, vertices, info, planes, ed)
    # the views as seg_<view>; the --ed-shape map under its own name
    ins = {k if k == "ed_shape" else f"seg_{k}": p for k, p in inputs.paths.items()}
    sidecar = make_sidecar(f"{TOOL} {params['mode']}", params, ins, timer, phenotypes=row,
                           geometry=geometry, losses={**ed.loss, "motion": {
                               k: v for k, v in info.items() if isinstance(v, float)}})
    write_subject(out, prefix, topo, vertices, row, frames, vtable, sidecar)
    return row


def _subject_row(args) -> tuple[str, str | None]:
    subject, paths, outdir, opts, seed, model = args
    from medflow.errors import MedflowError

    try:
        if model is None:
            fit_files(paths["sa"], paths.get("la_2ch"), paths.get("la_4ch"), outdir / subject,
                      subject, opts, seed)
        else:
            predict_files(model, paths["sa"], paths.get("la_2ch"), paths.get("la_4ch"),
                          outdir / subject, subject, seed)
        return subject, None
    except MedflowError as exc:
        return subject, f"exit {exc.exit_code}: {exc.format_message()}"


def subject_views(samplesheet: Path, roles: dict[str, str]) -> list[tuple[str, dict]]:
    """(subject, {view: path}) of every samplesheet row (``roles``: view -> column)."""
    from medflow.io.samplesheet import load_samplesheet

    df = load_samplesheet(samplesheet, required_roles=(roles["sa"],))
    return [(row["subject"], {view: Path(row[col]) for view, col in roles.items()
                              if col in row and isinstance(row[col], str)})
            for row in df.to_dict("records")]


def fit_batch(samplesheet: Path, outdir: Path, roles: dict[str, str], opts: FitOptions,
              seed: int, jobs: int, model: Path | None = None) -> tuple[int, list[str]]:
    """Fit (or, given a ``model`` folder, predict) every subject of a samplesheet into
    ``outdir/<subject>/``.

    Args:
        roles: view -> samplesheet column (``sa``, ``la_2ch``, ``la_4ch``).

    Returns:
        (subjects done, one line per failed subject).
    """
    if model is not None:
        from medflow.motion.modelio import load_model

        load_model(model)  # a bad model folder fails once, before any subject
    work = [(subject, paths, Path(outdir), opts, seed, model)
            for subject, paths in subject_views(samplesheet, roles)]
    # Before any subject: no subject's output may overwrite an input (exit 2).
    check_outputs([p for subject, _, out, *_ in work
                   for p in output_paths(out / subject, subject).values()],
                  [samplesheet, *(p for w in work for p in w[1].values())])
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_subject_row, work))
    else:
        results = [_subject_row(w) for w in work]
    failed = [f"{s}: {err}" for s, err in results if err]
    return len(results) - len(failed), failed


def train_files(samplesheet: Path, roles: dict[str, str], out: Path, epochs: int,
                seed: int = 0, threads: int = 1, teacher_weight: float = 1.0,
                opts: FitOptions | None = None) -> dict:
    """Train the motion network on every subject of a samplesheet and write the model
    folder; returns its card.

    Each subject costs one ``fit`` (the teacher) before training starts.

    Raises:
        InvalidDataError: a subject's segmentations are unusable (65, naming the file).
        MissingInputError: a listed file is missing (66).
    """
    import time

    import torch

    from medflow.io.sidecar import sha256
    from medflow.motion import learn
    from medflow.io.modelcard import read_model_card
    from medflow.motion.modelio import CARD, FORMAT, save_model

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    if (Path(out) / CARD).exists():  # retraining our own model is fine; another's is not
        read_model_card(out, CARD, FORMAT, "estimate-motion-mesh")
    opts = opts or FitOptions()
    topo = Topology()
    subjects, kinematic, views = [], [], []
    started = time.time()
    for name, paths in subject_views(samplesheet, roles):
        inputs, targets, planes = read_subject(paths["sa"], paths.get("la_2ch"),
                                               paths.get("la_4ch"), opts)
        ed = ed_fit(inputs, targets, topo, opts)
        views.append({v.name for v in inputs.views})
        subject = learn.prepare(name, targets, planes, ed, topo, opts)
        kinematic.append(learn.add_teacher(subject, opts))
        subjects.append(subject)
        log.info("%s: ED and teacher fitted (%d frames)", name, targets.sdf.shape[0])
    net, history = learn.train(subjects, opts, kinematic, epochs, seed=seed,
                               teacher_weight=teacher_weight,
                               progress=lambda h: log.info(
                                   "epoch %d: loss %.3f, contour distance %.3f mm^2, teacher "
                                   "%.3f mm^2", h["epoch"], h["loss"], h["data_mm2"],
                                   h.get("teacher_mm2", float("nan"))))
    card = {"fit_options": opts.to_dict(), "epochs": epochs, "seed": seed,
            "teacher_weight": teacher_weight, "subjects": [s.name for s in subjects],
            # the views every training subject had: predict asks a subject for them all
            "views": [v for v in ("sa", "la_2ch", "la_4ch") if all(v in s for s in views)],
            "frames": [int(s.targets.sdf.shape[0]) for s in subjects],
            "samplesheet_sha256": sha256(samplesheet), "history": history,
            "trained_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "train_s": round(time.time() - started, 1)}
    save_model(out, net, card)
    return card
