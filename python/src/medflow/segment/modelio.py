"""Model folders: ``model.safetensors`` (weights) plus ``model.json`` (the model card).

Loading never unpickles: weights come from safetensors, the config from JSON. The card
holds the architecture config, labels, spacing, normalisation, the training data
checksum and validation Dice.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from medflow import __version__
from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.modelcard import read_model_card
from medflow.io.sidecar import write_json
from medflow.io.weights import read_tensors
from medflow.segment.cascade import Cascade
from medflow.segment.config import CascadeConfig

FORMAT = "medflow-segment-cascaded"
WEIGHTS, CARD, OPTIMIZER = "model.safetensors", "model.json", "optimizer.safetensors"


def save_model(folder: str | os.PathLike, model: Cascade, card: dict,
               optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write weights, card (and optimizer state for --resume) atomically into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = {"format": FORMAT, "format_version": 1, "medflow_version": __version__,
            "config": model.cfg.to_dict(), **card}
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_outputs() as out:
        save_file(weights, str(out.path(folder / WEIGHTS)), metadata={"format": "pt"})
        write_json(card, out.path(folder / CARD))
        if optimizer is not None:
            save_file(optimizer_tensors(optimizer), str(out.path(folder / OPTIMIZER)))
    return folder


def read_card(folder: str | os.PathLike) -> dict:
    """The model card; exit 66 when the folder or file is missing, 65 when unreadable."""
    return read_model_card(folder, CARD, FORMAT, "segment-cascaded")


def load_model(folder: str | os.PathLike, device: str = "cpu") -> tuple[Cascade, dict]:
    """Rebuild the cascade from ``model.json`` and load ``model.safetensors`` (no pickle).

    Returns:
        (model in eval mode on ``device``, card dict).
    """
    folder = Path(folder)
    card = read_card(folder)
    try:
        cfg = CascadeConfig.from_dict(card["config"])
        model = Cascade(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"bad architecture config in {CARD} ({exc})", folder) from None
    state = read_tensors(folder / WEIGHTS)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise InvalidDataError(f"weights do not fit the config in {CARD} ({msg})",
                               folder / WEIGHTS) from None
    return model.to(device).eval(), card


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam-style optimizer state as flat named tensors (safetensors has no pickle)."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous().clone()
    return out


def load_optimizer(folder: str | os.PathLike, opt: torch.optim.Optimizer) -> bool:
    """Restore optimizer state saved by :func:`save_model`; False when there is none."""
    path = Path(folder) / OPTIMIZER
    if not path.exists():
        return False
    flat = read_tensors(path)
    sd = opt.state_dict()
    state: dict = {}
    for name, v in flat.items():
        i, k = name.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    return True
