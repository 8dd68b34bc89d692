"""Model folders of ``estimate-motion-mesh train``: ``model.safetensors`` (the network)
plus ``model.json`` (the card: architecture, the fit options the network was trained
with, the training cohort and its losses). Loading never unpickles; another tool's folder
or a corrupt one is refused (65), a missing one is 66.
"""

from __future__ import annotations

import os
from pathlib import Path

from medflow import __version__
from medflow.errors import InvalidDataError
from medflow.io.modelcard import read_model_card
from medflow.io.weights import load_state, read_tensors, write_model_folder

FORMAT = "medflow-estimate-motion-mesh"
TOOL = "estimate-motion-mesh"
WEIGHTS, CARD = "model.safetensors", "model.json"


def save_model(folder: str | os.PathLike, net, card: dict) -> Path:
    """Write the network and its card into ``folder`` (created; both or neither)."""
    card = {"format": FORMAT, "format_version": 1, "tool": TOOL,
            "medflow_version": __version__, "config": net.cfg.to_dict(), **card}
    return write_model_folder(folder, WEIGHTS, net.state_dict(), CARD, card)


def load_model(folder: str | os.PathLike):
    """The network (eval mode, CPU) and card of a model folder.

    Raises:
        MissingInputError: no folder, card or weights (66).
        InvalidDataError: another tool's folder, a corrupt card or weights, weights that do
            not fit the card's architecture, or unreadable fit options (65).
    """
    from medflow.motion.fit import FitOptions
    from medflow.motion.network import MotionNet, NetConfig

    folder = Path(folder)
    card = read_model_card(folder, CARD, FORMAT, TOOL)
    try:
        net = MotionNet(NetConfig.from_dict(card["config"]))
        FitOptions.from_dict(card["fit_options"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"bad config in {CARD} ({type(exc).__name__}: {exc})",
                               folder / CARD) from None
    load_state(net, read_tensors(folder / WEIGHTS), folder / WEIGHTS, CARD)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), card
