"""Model folders of ``super-resolve``: ``model.safetensors`` plus ``model.json`` (the card).

The card names the tool and the method (``latent``: the shape prior; ``joint``: the
image/label network), the architecture config, the label values, the training data
checksum and validation numbers. Loading never unpickles; a folder written by another
tool, or for the other method, is refused (65); a missing folder or file is 66.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medflow import __version__
from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.modelcard import read_model_card
from medflow.io.atomic import atomic_outputs
from medflow.io.sidecar import write_json

FORMAT = "medflow-super-resolve"
TOOL = "super-resolve"
WEIGHTS, CARD = "model.safetensors", "model.json"


def save_model(folder: str | os.PathLike, net: torch.nn.Module, method: str, card: dict) -> Path:
    """Write weights and card atomically into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = {"format": FORMAT, "format_version": 1, "tool": TOOL, "method": method,
            "medflow_version": __version__, "config": net.cfg.to_dict(), **card}
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_outputs() as out:
        save_file(weights, str(out.path(folder / WEIGHTS)), metadata={"format": "pt"})
        write_json(card, out.path(folder / CARD))
    return folder


def read_card(folder: str | os.PathLike, method: str | None = None) -> dict:
    """The card of a super-resolve model folder.

    Raises:
        MissingInputError: no folder, or no ``model.json`` in it (66).
        InvalidDataError: unreadable card, another tool's folder, or another method's (65).
    """
    card = read_model_card(folder, CARD, FORMAT, TOOL)
    path = Path(folder) / CARD
    if method is not None and card.get("method") != method:
        raise InvalidDataError(f"a '{card.get('method')}' model, not a '{method}' one", path)
    return card


def load_model(folder: str | os.PathLike, method: str, device: str = "cpu"):
    """Rebuild the network named by the card and load its weights (no pickle).

    Returns:
        (network in eval mode on ``device``, card).
    """
    folder = Path(folder)
    card = read_card(folder, method)
    try:
        if method == "latent":
            from medflow.superres.prior import PriorConfig, ShapeVAE

            net = ShapeVAE(PriorConfig.from_dict(card["config"]))
        else:
            from medflow.superres.joint_net import JointConfig, JointNet

            net = JointNet(JointConfig.from_dict(card["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"bad architecture config in {CARD} ({exc})", folder) from None
    path = folder / WEIGHTS
    if not path.exists():
        raise MissingInputError(f"no {WEIGHTS} in the model folder", folder)
    try:
        state = load_file(str(path))
        net.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidDataError(f"corrupt weights file ({exc})", path) from None
    except RuntimeError as exc:
        raise InvalidDataError(f"weights do not fit the config in {CARD} "
                               f"({str(exc).splitlines()[0]})", path) from None
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device).eval(), card
