"""The JSON card of a model folder (``model.json`` beside ``model.safetensors``), read the
same way by every tool that writes model folders; readable without torch.

Every tool refuses, with one line naming the path, the same kinds of bad model folder:
missing folder or card (66); a file where the folder should be, an unreadable card, a card
made by another tool, a card written by a newer medflow (a ``format_version`` this one does
not know), or an architecture ``config`` that is not a mapping (65).
"""

from __future__ import annotations

import json
import os

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.paths import existing_folder

#: The newest card layout this medflow reads (every tool writes ``format_version`` 1).
FORMAT_VERSION = 1


def made_by(card: object) -> str:
    """Who wrote a card, for a refusal message: its ``format`` or "an unknown tool"."""
    fmt = card.get("format") if isinstance(card, dict) else None
    return fmt if isinstance(fmt, str) and fmt else "an unknown tool"


def read_model_card(folder: str | os.PathLike, card_name: str, fmt: str, tool: str) -> dict:
    """The card ``folder/card_name`` when its ``format`` is ``fmt``.

    Args:
        folder: the model folder.
        card_name: the card's file name (``model.json``).
        fmt: the format the caller reads (``medflow-<tool>``).
        tool: the command that writes such folders, for the messages (``super-resolve``).

    Returns:
        The card (a dict whose ``config``, when present, is a dict).

    Raises:
        MissingInputError: no folder, or no card in it (66).
        InvalidDataError: a file instead of a folder, an unreadable card, one of another
            format or from a newer medflow, or a ``config`` that is not a mapping (65).

    Example:
        >>> read_model_card("prior", "model.json", "medflow-super-resolve",
        ...                 "super-resolve")["method"]                  # doctest: +SKIP
        'latent'
    """
    folder = existing_folder(folder, "model folder")
    path = folder / card_name
    if not path.exists():
        raise MissingInputError(f"no {card_name} in the model folder", folder)
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"corrupt model card ({exc})", path) from None
    if not isinstance(card, dict) or card.get("format") != fmt:
        article = "an" if tool[:1] in "aeiou" else "a"
        raise InvalidDataError(f"not {article} {tool} model (made by {made_by(card)})", path)
    version = card.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidDataError(f"bad format_version {version!r} in the model card", path)
    if version > FORMAT_VERSION:
        raise InvalidDataError(f"model card format_version {version} was written by a newer "
                               f"medflow (this one, {_version()}, reads up to "
                               f"{FORMAT_VERSION}): upgrade medflow", path)
    if "config" in card and not isinstance(card["config"], dict):
        raise InvalidDataError("bad architecture config in the model card (not a mapping)",
                               path)
    return card


def _version() -> str:
    from medflow import __version__

    return __version__
