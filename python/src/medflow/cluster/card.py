"""The model card of cluster-unsupervised, readable without torch (the pipeline checks a
``--cluster-model`` before any task runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medflow.errors import InvalidDataError, MissingInputError

FORMAT = "medflow-cluster-unsupervised"
TOOL = "cluster-unsupervised"
WEIGHTS, CARD = "model.safetensors", "model.json"


def read_card(folder: str | os.PathLike) -> dict:
    """The card; 66 when the folder or card is missing, 65 when it is not this tool's.

    Example:
        >>> read_card("results/cluster/model")["training"]["k"]    # doctest: +SKIP
        3
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError("model folder not found", folder)
    path = folder / CARD
    if not path.exists():
        raise MissingInputError(f"no {CARD} in the model folder", folder)
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"corrupt model card ({exc})", path) from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        made_by = card.get("format") if isinstance(card, dict) else None
        raise InvalidDataError(f"not a {TOOL} model (made by {made_by or 'an unknown tool'})",
                               path)
    if not (folder / WEIGHTS).is_file():
        raise MissingInputError(f"no {WEIGHTS} in the model folder", folder)
    return card
