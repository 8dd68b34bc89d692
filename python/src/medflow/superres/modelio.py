"""Model folders of ``super-resolve``: ``model.safetensors`` plus ``model.json`` (the card).

The card names the tool and the method (``latent``: the shape prior; ``joint``: the
image/label network), the architecture config, the label values, the training data
checksum and validation numbers. A joint model trained with ``--prior`` also holds that
prior's folder as ``prior/`` (the card's ``training.motion_correction`` says so), which
motion-corrects its input. Loading never unpickles; a folder written by another
tool, or for the other method, is refused (65); a missing folder or file is 66.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medflow import __version__
from medflow.errors import InvalidDataError
from medflow.io.modelcard import read_model_card
from medflow.io.weights import load_state, read_tensors, write_model_folder

FORMAT = "medflow-super-resolve"
TOOL = "super-resolve"
WEIGHTS, CARD = "model.safetensors", "model.json"
#: The sub-folder of a joint model that holds the prior it was trained with.
PRIOR_FOLDER = "prior"


def save_model(folder: str | os.PathLike, net: torch.nn.Module, method: str, card: dict) -> Path:
    """Write weights and card atomically into ``folder`` (created)."""
    card = {"format": FORMAT, "format_version": 1, "tool": TOOL, "method": method,
            "medflow_version": __version__, "config": net.cfg.to_dict(), **card}
    return write_model_folder(folder, WEIGHTS, net.state_dict(), CARD, card)


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
    load_state(net, read_tensors(path), path, CARD)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device).eval(), card


def load_joint(folder: str | os.PathLike, device: str = "cpu"):
    """A joint model and, when it was trained with one (``train --prior``), the shape
    prior it carries in ``prior/`` to motion-correct its input.

    Returns:
        (network, card, prior network or None).
    """
    net, card = load_model(folder, "joint", device)
    motion = card.get("training", {}).get("motion_correction")
    prior = load_model(Path(folder) / PRIOR_FOLDER, "latent", device)[0] if motion else None
    return net, card, prior
