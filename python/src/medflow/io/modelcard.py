"""The JSON card of a model folder (``model.json`` beside ``model.safetensors``), read the
same way by every tool that writes model folders; readable without torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from medflow.errors import InvalidDataError, MissingInputError


def read_model_card(folder: str | os.PathLike, card_name: str, fmt: str,
                    refusal: Callable[[object], str]) -> dict:
    """The card ``folder/card_name`` when its ``format`` is ``fmt``.

    Args:
        refusal: the message for a card of another format, given the parsed card (any JSON
            value), so each tool can name itself and the tool that made the folder.

    Raises:
        MissingInputError: no folder, or no card in it (66).
        InvalidDataError: unreadable card, or one of another format (65).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError("model folder not found", folder)
    path = folder / card_name
    if not path.exists():
        raise MissingInputError(f"no {card_name} in the model folder", folder)
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"corrupt model card ({exc})", path) from None
    if not isinstance(card, dict) or card.get("format") != fmt:
        raise InvalidDataError(refusal(card), path)
    return card
