"""Fitting a calibrator on labelled validation data, and storing it with the model.

Storage: ``calibration.safetensors`` in the model folder (the global temperature and, for
``local``, the network's weights; metadata name the method and the SHA-256 of the
``model.safetensors`` it was fitted for) plus a ``calibration`` entry in ``model.json``
naming the same checksum. Loading checks both against the weights in the folder, so a
calibrator fitted for another model (or left behind by a retrain) is refused (exit 65).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from medflow.errors import InvalidDataError, MissingInputError
from medflow.segment.calibration import (METHODS, PERTURBATIONS, Calibrator,
                                         LocalTemperatureNet, fit_global_temperature,
                                         fit_local, local_features, perturb, top_label_ece)

CALIBRATION = "calibration.safetensors"
#: Validation voxels scored: the bounding box of the true foreground, widened by this many
#: voxels in-plane (x, y) and one slice; the far background is trivially right and would
#: swamp every average.
ROI_MARGIN = 8


def roi_mask(classes: np.ndarray, margin: int = ROI_MARGIN) -> np.ndarray:
    """Boolean (X, Y, Z): the box around ``classes > 0`` (see :data:`ROI_MARGIN`); all
    False for an empty label map."""
    fg = np.argwhere(classes > 0)
    out = np.zeros(classes.shape, bool)
    if fg.size:
        lo = np.maximum(fg.min(0) - (margin, margin, 1), 0)
        hi = fg.max(0) + (margin, margin, 1) + 1
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return out


@torch.no_grad()
def collect_voxels(model, samples, *, copies: int = 2, max_voxels: int = 20000,
                   seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Stage-2 logits, local features and true classes of validation voxels.

    Every sample is seen clean and as ``copies`` GIN re-textured versions (random shallow
    conv nets, :func:`augment.apply_gin`): in-domain validation data alone holds few
    errors, the re-textured copies show the calibrator how predictions fail under a
    contrast change. Windows tile each image without overlap; at most ``max_voxels`` random
    ROI voxels (:func:`roi_mask`) are kept per image.

    Returns:
        {"logits": (N, C), "features": (N, 2C), "classes": (N,)}.
    """
    from medflow.segment.augment import apply_gin, sample_gin
    from medflow.segment.infer import ArraySource, stage1_outputs
    from medflow.segment.predict import IDENTITY_STATS
    from medflow.segment.windows import window_starts

    cfg, rng = model.cfg, np.random.default_rng(seed)
    model.eval()
    keep: dict[str, list] = {"logits": [], "features": [], "classes": []}
    for s in samples:
        roi = roi_mask(s.classes)
        clean = torch.from_numpy(s.image)
        views = [clean] + [apply_gin(clean, sample_gin(rng, cfg.in_channels))
                           for _ in range(copies)]
        for image in views:
            src = ArraySource(list(image.numpy()), [IDENTITY_STATS] * image.shape[0])
            coarse = stage1_outputs(model, src, device)
            logits = torch.zeros(cfg.n_classes, *src.shape)
            feats = torch.zeros(2 * cfg.n_classes, *src.shape)
            for start in itertools.product(*window_starts(src.shape, cfg.patch, 0.0)):
                x = src.read(start, cfg.patch)[None].to(device)
                ctx = (None, None) if coarse is None else _context(model, coarse, start,
                                                                   src.shape, device)
                z = model.forward_stage2(x, *ctx).float()
                zs = [model.forward_stage2(perturb(x, k, v), *ctx).float()
                      for k, v in PERTURBATIONS]
                f = local_features(z, zs)
                box = tuple(slice(max(a, 0), min(a + p, n))
                            for a, p, n in zip(start, cfg.patch, src.shape))
                inner = tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, start))
                logits[(slice(None), *box)] = z[0][(slice(None), *inner)].cpu()
                feats[(slice(None), *box)] = f[0][(slice(None), *inner)].cpu()
            idx = np.flatnonzero(roi)
            if idx.size > max_voxels:
                idx = np.sort(rng.choice(idx, max_voxels, replace=False))
            idx_t = torch.from_numpy(idx)
            keep["logits"].append(logits.flatten(1)[:, idx_t].T)
            keep["features"].append(feats.flatten(1)[:, idx_t].T)
            keep["classes"].append(torch.from_numpy(s.classes.ravel()[idx]))
    return {k: torch.cat(v) for k, v in keep.items()}


def _context(model, coarse, start, shape, device):
    from medflow.segment.cascade import upsample_region

    c = model.cfg.n_classes
    up = upsample_region(coarse, start, model.cfg.patch, shape).to(device)
    return up[:, :c], up[:, c:]


def fit_calibrator(voxels: dict[str, torch.Tensor], method: str, *, seed: int = 0,
                   epochs: int = 30) -> tuple[Calibrator, dict]:
    """Fit ``method`` on :func:`collect_voxels` output; returns (calibrator, the validation
    ECE uncalibrated / global temperature / local, on the voxels fitted on)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    z, f, y = voxels["logits"], voxels["features"], voxels["classes"]
    t = fit_global_temperature(z, y)
    report = {"voxels": int(y.numel()), "temperature": t,
              "ece_uncalibrated": top_label_ece(torch.softmax(z, 1), y).ece(),
              "ece_temperature": top_label_ece(torch.softmax(z / t, 1), y).ece()}
    if method == "temperature":
        return Calibrator("temperature", t), report
    net = fit_local(f, z, y, t, epochs=epochs, seed=seed)
    with torch.no_grad():
        report["ece_local"] = top_label_ece(torch.softmax(z / net(f), 1), y).ece()
    return Calibrator("local", t, net), report


def save_calibrator(path: Path, cal: Calibrator, model_sha256: str) -> None:
    """Write ``cal`` to ``path`` (safetensors; the caller makes it atomic)."""
    from safetensors.torch import save_file

    tensors = {"temperature": torch.tensor([cal.temperature], dtype=torch.float64)}
    if cal.net is not None:
        tensors.update({f"net.{k}": v.detach().contiguous()
                        for k, v in cal.net.state_dict().items()})
    save_file(tensors, str(path), metadata={"method": cal.method,
                                            "model_sha256": model_sha256})


def load_calibrator(model_dir: Path, card: dict) -> Calibrator | None:
    """The calibrator stored with the model in ``model_dir``, or None when it has none.

    Raises:
        InvalidDataError: the calibrator names other weights than the folder's
            ``model.safetensors``, or is unreadable, or the card and file disagree (65).
        MissingInputError: the card names a calibrator whose file is missing (66).
    """
    from safetensors import SafetensorError, safe_open

    from medflow.io.sidecar import sha256

    model_dir = Path(model_dir)
    path, entry = model_dir / CALIBRATION, card.get("calibration")
    if entry is None and not path.exists():
        return None
    if entry is not None and not isinstance(entry, dict):
        raise InvalidDataError("the 'calibration' entry is not a mapping (re-run calibrate)",
                               model_dir / "model.json")
    if not path.exists():
        raise MissingInputError(f"model.json names a calibrator but {CALIBRATION} is missing "
                                "(re-run calibrate, or predict --no-calibration)", model_dir)
    if entry is None:
        raise InvalidDataError("calibrator not recorded in model.json: fitted for another "
                               "model? (re-run calibrate)", path)
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidDataError(f"corrupt calibrator ({exc})", path) from None
    weights = sha256(model_dir / "model.safetensors")
    for where, named in (("the file", meta.get("model_sha256")),
                         ("model.json", entry.get("model_sha256"))):
        if named != weights:
            raise InvalidDataError(f"calibrator fitted for another model ({where} names "
                                   f"weights {str(named)[:12]}, this model is {weights[:12]}; "
                                   "re-run calibrate)", path)
    method = meta.get("method")
    if method not in METHODS or method != entry.get("method") or "temperature" not in tensors:
        raise InvalidDataError(f"calibrator method {method!r} unknown or not the card's", path)
    net = None
    if method == "local":
        net = LocalTemperatureNet(len(card["config"]["labels"]))
        try:
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        except RuntimeError as exc:
            raise InvalidDataError(f"calibrator weights do not fit "
                                   f"({str(exc).splitlines()[0]})", path) from None
        net.eval()
    return Calibrator(method, float(tensors["temperature"][0]), net)


def calibrate_model(model, card: dict, model_dir: Path, df, image_roles, label_role,
                    method: str, *, copies: int = 2, max_voxels: int = 20000, epochs: int = 30,
                    frames: int = 5, seed: int = 0, device: str = "cpu",
                    samplesheet=None) -> dict:
    """Fit ``method`` on the labelled subjects of ``df`` and store it in ``model_dir``
    (``calibration.safetensors``, the ``calibration`` entry of ``model.json``, and the
    sidecar ``calibrate.json``), atomically; ``frames`` labelled frames per subject, evenly
    spaced from the first (cine frames look alike; each costs 5 network passes per copy).
    Returns the card entry.

    Raises:
        InvalidDataError: no labelled voxel in the validation set (65).
    """
    from medflow.io.atomic import atomic_outputs
    from medflow.io.sidecar import Timer, make_sidecar, sha256, write_json
    from medflow.segment.data import load_training_samples
    from medflow.segment.modelio import CARD

    timer = Timer()
    cfg = model.cfg
    samples, _, _ = load_training_samples(df, image_roles, label_role, tuple(cfg.labels),
                                          tuple(cfg.spacing), tuple(cfg.context_frames))
    samples = spread_frames([s for s in samples if s.classes.any()], frames)
    if not samples:
        raise InvalidDataError(f"no labelled voxel in the validation set (column "
                               f"'{label_role}' holds background only)", samplesheet)
    voxels = collect_voxels(model, samples, copies=copies, max_voxels=max_voxels, seed=seed,
                            device=device)
    torch.manual_seed(seed)
    cal, report = fit_calibrator(voxels, method, seed=seed, epochs=epochs)
    timer.mark("calibrate_s")
    weights = sha256(Path(model_dir) / "model.safetensors")
    entry = {"method": method, "file": CALIBRATION, "model_sha256": weights,
             "perturbations": [list(p) for p in PERTURBATIONS],
             "validation": {"subjects": sorted({s.subject for s in samples}),
                            "frames": len(samples), "gin_copies": copies, **report}}
    params = {"method": method, "copies": copies, "max_voxels": max_voxels, "frames": frames,
              "epochs": epochs, "seed": seed, "device": device}
    with atomic_outputs() as out:
        save_calibrator(out.path(Path(model_dir) / CALIBRATION), cal, weights)
        write_json({**card, "calibration": entry}, out.path(Path(model_dir) / CARD))
        write_json(make_sidecar("segment-cascaded calibrate", params,
                                {"samplesheet": samplesheet,
                                 "model_weights": Path(model_dir) / "model.safetensors"},
                                timer, calibration=entry),
                   out.path(Path(model_dir) / "calibrate.json"))
    return entry


def spread_frames(samples, n: int) -> list:
    """At most ``n`` samples per subject, evenly spaced over its frames (first included)."""
    by_subject: dict[str, list] = {}
    for s in samples:
        by_subject.setdefault(s.subject, []).append(s)
    out = []
    for group in by_subject.values():
        picks = np.unique(np.linspace(0, len(group) - 1, min(n, len(group))).round())
        out += [group[int(i)] for i in picks]
    return out
