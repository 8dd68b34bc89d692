"""Model folders of cluster-unsupervised: ``model.safetensors`` + ``model.json`` (card).

The weights file holds the encoder, its classifier head, the cluster centres and the 2D
map (all tensors, no pickle). The card names the tool; a folder written by another tool
(a segmentation model, say) is refused with exit 65.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from medflow import __version__
from medflow.cluster.card import CARD, FORMAT, TOOL, WEIGHTS, read_card
from medflow.cluster.encoder import EncoderConfig, SliceEncoder
from medflow.errors import InvalidDataError
from medflow.io.weights import read_tensors, write_model_folder

__all__ = ["CARD", "FORMAT", "TOOL", "WEIGHTS", "load_model", "read_card", "save_model"]
EXTRA = ("centres", "map_mean", "map_axes")


def save_model(folder: str | os.PathLike, model: SliceEncoder, extra: dict[str, np.ndarray],
               card: dict) -> Path:
    """Write weights and card atomically into ``folder`` (created)."""
    tensors = {f"encoder.{k}": v for k, v in model.state_dict().items()}
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(extra[k])) for k in EXTRA})
    card = {"format": FORMAT, "format_version": 1, "tool": TOOL,
            "medflow_version": __version__, "config": model.cfg.to_dict(), **card}
    return write_model_folder(folder, WEIGHTS, tensors, CARD, card)


def load_model(folder: str | os.PathLike, device: str = "cpu"
               ) -> tuple[SliceEncoder, dict[str, np.ndarray], dict]:
    """Rebuild the encoder from the card and load the weights (no pickle).

    Returns:
        (model in eval mode, {centres (k, F), map_mean (F,), map_axes (2, F)}, card).
    """
    folder = Path(folder)
    card = read_card(folder)
    path = folder / WEIGHTS
    tensors = read_tensors(path)
    try:
        model = SliceEncoder(EncoderConfig.from_dict(card["config"]))
        state = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        model.load_state_dict(state, strict=True)
        extra = {k: tensors[k].numpy() for k in EXTRA}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidDataError(f"weights do not fit the card ({msg})", path) from None
    if model.classifier is None or extra["centres"].shape[0] != model.cfg.clusters:
        raise InvalidDataError("the model has no clusters (centres and classifier disagree)",
                               path)
    return model.to(device).eval(), extra, card
