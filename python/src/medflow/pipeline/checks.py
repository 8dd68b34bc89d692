"""Checks made before any task runs, so that a run that cannot succeed stops at once."""

from __future__ import annotations

import json
from pathlib import Path

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.paths import existing_folder


def check_model(folder: Path) -> dict:
    """The model card, after checking the folder can be read (65/66 otherwise).

    Note:
        The card and the weights' header are read, not the weights: cheap enough to run
        before every pipeline, without importing torch here.
    """
    from safetensors import SafetensorError, safe_open

    folder = existing_folder(folder, "model folder")
    card_path, weights = folder / "model.json", folder / "model.safetensors"
    for path in (card_path, weights):
        if not path.is_file():
            raise MissingInputError(f"no {path.name} in the model folder", folder)
    try:
        card = json.loads(card_path.read_text())
        roles = card["training"]["image_roles"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidDataError(f"not a readable model card ({exc})", card_path) from None
    if not (isinstance(roles, list) and roles and all(isinstance(r, str) for r in roles)):
        raise InvalidDataError("the model card names no image roles", card_path)
    try:
        with safe_open(str(weights), framework="numpy") as fh:
            if not list(fh.keys()):
                raise InvalidDataError("the weights file holds no tensors", weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidDataError(f"corrupt weights file ({exc})", weights) from None
    return card


def check_prior(folder: Path) -> dict:
    """The card of a ``super-resolve train-prior`` folder (65/66 otherwise), read without
    torch: the folder, its card (made by super-resolve, method latent) and weights."""
    folder = existing_folder(folder, "shape prior folder")
    card_path = folder / "model.json"
    for path in (card_path, folder / "model.safetensors"):
        if not path.is_file():
            raise MissingInputError(f"no {path.name} in the shape prior folder", folder)
    try:
        card = json.loads(card_path.read_text())
    except ValueError as exc:
        raise InvalidDataError(f"not a readable model card ({exc})", card_path) from None
    if not isinstance(card, dict) or card.get("tool") != "super-resolve" \
            or card.get("method") != "latent":
        raise InvalidDataError("not a shape prior written by 'super-resolve train-prior'",
                               card_path)
    return card
