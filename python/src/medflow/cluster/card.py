"""The model card of cluster-unsupervised, readable without torch (the pipeline checks a
``--cluster-model`` before any task runs)."""

from __future__ import annotations

import os
from pathlib import Path

from medflow.errors import MissingInputError
from medflow.io.modelcard import read_model_card

FORMAT = "medflow-cluster-unsupervised"
TOOL = "cluster-unsupervised"
WEIGHTS, CARD = "model.safetensors", "model.json"


def read_card(folder: str | os.PathLike) -> dict:
    """The card; 66 when the folder or card is missing, 65 when it is not this tool's.

    Example:
        >>> read_card("results/cluster/model")["training"]["k"]    # doctest: +SKIP
        3
    """
    card = read_model_card(folder, CARD, FORMAT, TOOL)
    if not (Path(folder) / WEIGHTS).is_file():
        raise MissingInputError(f"no {WEIGHTS} in the model folder", folder)
    return card
