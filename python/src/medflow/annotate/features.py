"""From a samplesheet (and the current model) to the feature table the strategies rank:
one row per annotation unit with its latent embedding, the model's uncertainty and, for
labelled units, the segmentation-loss gradient carried into the latent space.

Units: ``subject`` (a whole volume) or ``slice`` (one slice along the image's third voxel
axis). A 4D cine contributes its first frame (end-diastole in UK Biobank order). Every
image is normalised as the model normalises it (clip 0.5-99.5 percentiles, z-score) and
block-averaged to a thumbnail for the VAE (:mod:`medflow.annotate.vae`).

The gradient column (``gradient``, the seed's gradient-guided sampling made practical): the
length of the segmentation-loss gradient with respect to the image, ``|dL/dx|`` on the
model's grid, with the model's own segmentation as the target (the expected-gradient-length
convention, Settles and Craven 2008): large where a small change of the image would change
what the model predicts, i.e. where the model has not learnt the images yet. Carrying this
gradient into the VAE's latent space (``J_D^T dL/dx``) was measured and rejected: the
projection cancels the diffuse uncertainty of unfamiliar images and keeps the coherent
boundary of large tumours (docs/suggest-annotation.md).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medflow.annotate.options import FeatureOptions
from medflow.annotate.vae import VAEConfig, embed, train_vae
from medflow.io.images import read_image
from medflow.io.volume import Volume

log = logging.getLogger("medflow")


def _first_frame(vol: Volume) -> Volume:
    return vol if vol.data.ndim == 3 else Volume(np.asarray(vol.data[..., 0]), vol.affine,
                                                 vol.kind)


def read_channels(row: dict, roles) -> list[Volume]:
    """The first frame of every image channel of a samplesheet row."""
    return [_first_frame(read_image(row[r])) for r in roles]


def thumbnails(channels: list[Volume], unit: str, grid) -> torch.Tensor:
    """(units, C, *grid) thumbnails of one subject: the whole volume, or each slice on
    ``(gx, gy, 1)``; block averages of the model-normalised image."""
    from medflow.segment.gradients import normalised_channels

    x = normalised_channels(channels)                         # (1, C, X, Y, Z)
    if unit == "subject":
        return F.adaptive_avg_pool3d(x, tuple(grid))
    slices = x[0].permute(3, 0, 1, 2)[..., None]              # (Z, C, X, Y, 1)
    return F.adaptive_avg_pool3d(slices, (grid[0], grid[1], 1))


def unit_grid(opts: FeatureOptions) -> tuple[int, int, int]:
    g = tuple(int(v) for v in opts.grid)
    return g if opts.unit == "subject" else (g[0], g[1], 1)


def field_of_view(channels: list[Volume]) -> np.ndarray:
    """Voxels inside the acquired (or skull-stripped) field: the first image is non-zero."""
    fov = np.asarray(channels[0].data) != 0
    return fov if fov.any() else np.ones_like(fov)


def uncertainty_of(model, channels: list[Volume], unit: str, opts: FeatureOptions
                   ) -> np.ndarray:
    """Mean predictive uncertainty (0-100) over the field of view, per unit of a subject.

    ``entropy``: entropy of the class probabilities / log(classes); ``disagreement``:
    MC-dropout disagreement from ``segment-cascaded`` (``--mc-samples`` draws).
    """
    from medflow.segment.predict import label_dtype, segment

    cfg = model.cfg
    shape = channels[0].shape3
    labels = np.zeros(shape, label_dtype(cfg.labels))
    if opts.uncertainty == "entropy":
        probs = np.zeros((*shape, cfg.n_classes), np.float32)
        segment(model, channels, labels, probs, device=opts.device, seed=opts.seed)
        p = np.clip(probs, 1e-12, 1.0)
        unc = 100.0 * -(p * np.log(p)).sum(-1) / np.log(cfg.n_classes)
    else:
        maps = {name: np.zeros(shape, np.float32) for name in (list(cfg.regions) or [""])}
        segment(model, channels, labels, None, maps, mc=max(2, opts.mc_samples),
                uncertainty="disagreement", device=opts.device, seed=opts.seed)
        unc = np.mean(list(maps.values()), axis=0)
    fov = field_of_view(channels)
    if unit == "subject":
        return np.array([unc[fov].mean()])
    return np.array([unc[..., k][fov[..., k]].mean() if fov[..., k].any() else 0.0
                     for k in range(shape[2])])


def loss_gradient_norm(model, channels: list[Volume], unit: str) -> np.ndarray:
    """``|dL/dx|`` per unit of one subject (the whole volume, or each native slice), the
    model's own segmentation as the target (see the module docstring)."""
    from medflow.segment.gradients import (model_grid_input, segmentation_loss,
                                           whole_volume_logits)

    model.eval()
    x = model_grid_input(model, channels).requires_grad_(True)   # (1, C, X', Y', Z')
    logits = whole_volume_logits(model, x)
    loss = segmentation_loss(logits, logits.detach().argmax(1))
    (grad,) = torch.autograd.grad(loss, x)
    per_slice = (grad[0].double() ** 2).sum(dim=(0, 1, 2)).numpy()  # (Z',)
    if unit == "subject":
        return np.sqrt([per_slice.sum()])
    n, z = channels[0].shape3[2], len(per_slice)  # model slice j lies in native slice k(j)
    k = np.minimum(((np.arange(z) + 0.5) * n / z).astype(int), n - 1)
    return np.sqrt(np.bincount(k, weights=per_slice, minlength=n))


def neighbour_scale(emb: np.ndarray) -> float:
    """Median distance of a unit to its nearest other unit in the latent space."""
    from medflow.annotate.table import pairwise

    if len(emb) < 2:
        return 1.0
    d = pairwise(emb, emb)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1))) or 1.0


def cohort_thumbnails(sheet: pd.DataFrame, image_roles, opts: FeatureOptions,
                      labelled: set[str]) -> tuple[torch.Tensor, pd.DataFrame]:
    """Every unit's thumbnail (N, C, *grid) and the unit table (subject, slice, labelled)."""
    thumbs, units = [], []
    for row in sheet.to_dict("records"):
        t = thumbnails(read_channels(row, image_roles), opts.unit, unit_grid(opts))
        thumbs.append(t)
        slices = [-1] if opts.unit == "subject" else list(range(t.shape[0]))
        units += [(row["subject"], k, row["subject"] in labelled) for k in slices]
    return torch.cat(thumbs), pd.DataFrame(units, columns=["subject", "slice", "labelled"])


def fit_latent_space(thumbs: torch.Tensor, opts: FeatureOptions):
    """Train the VAE on all thumbnails; (vae, embeddings (N, latent), facts)."""
    cfg = VAEConfig(in_channels=thumbs.shape[1], grid=unit_grid(opts), latent=opts.latent,
                    steps=opts.vae_steps)
    vae, losses = train_vae(thumbs, cfg, opts.seed, opts.device)
    emb = embed(vae, thumbs, opts.device)
    scale = neighbour_scale(emb)
    return vae, emb, {"vae": cfg.to_dict(), "vae_final_loss": float(np.mean(losses[-20:])),
                      "latent_neighbour_distance": scale}


def feature_table(sheet: pd.DataFrame, units: pd.DataFrame, emb: np.ndarray, model,
                  image_roles, opts: FeatureOptions,
                  uncertainty: bool = True, gradient: bool = True) -> pd.DataFrame:
    """The feature table (columns in :mod:`medflow.annotate.table`) for one model.

    Args:
        sheet: validated samplesheet (absolute paths), rows in the order of ``units``.
        units: from :func:`cohort_thumbnails`; ``emb`` its embeddings.
        model: the current segment-cascaded model, or None (embeddings only).
        uncertainty / gradient: which model columns to compute for the unlabelled units
            (mean predictive uncertainty; loss-gradient length).

    Note:
        Labelled units get no model columns: they are never suggested.
    """
    table = units.copy()
    table["uncertainty"], table["gradient_norm"] = np.nan, np.nan
    if model is not None and (uncertainty or gradient):
        positions = units.groupby("subject", sort=False).indices
        col_u, col_g = table.columns.get_loc("uncertainty"), table.columns.get_loc("gradient_norm")
        for row in sheet.to_dict("records"):
            idx = positions[row["subject"]]
            if bool(units["labelled"].iloc[idx[0]]):
                continue
            chans = read_channels(row, image_roles)
            if uncertainty:
                table.iloc[idx, col_u] = uncertainty_of(model, chans, opts.unit, opts)
            if gradient:
                table.iloc[idx, col_g] = loss_gradient_norm(model, chans, opts.unit)
    names = [f"emb_{i}" for i in range(emb.shape[1])]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(emb, columns=names)], axis=1)
