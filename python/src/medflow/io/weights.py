"""Weights of model folders: safetensors files (never pickle) written atomically beside
the card (:mod:`medflow.io.modelcard`), and read with one refusal per kind of fault."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medflow.errors import InvalidDataError, MissingInputError


def write_model_folder(folder: str | os.PathLike, weights_name: str,
                       tensors: dict[str, torch.Tensor], card_name: str, card: dict) -> Path:
    """Write ``tensors`` and ``card`` into ``folder`` (created); both appear or neither."""
    from safetensors.torch import save_file

    from medflow.io.atomic import atomic_outputs
    from medflow.io.outputs import output_folder
    from medflow.io.sidecar import write_json

    folder = output_folder(folder)  # 73 when it cannot be made
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_outputs() as out:
        save_file(tensors, str(out.path(folder / weights_name)), metadata={"format": "pt"})
        write_json(card, out.path(folder / card_name))
    return folder


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file.

    Raises:
        MissingInputError: no such file (66, naming the model folder).
        InvalidDataError: not a readable safetensors file (65).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no {path.name} in the model folder", path.parent)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidDataError(f"corrupt weights file ({exc})", path) from None


def load_state(net: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path,
               card_name: str) -> torch.nn.Module:
    """Load ``tensors`` into ``net`` strictly; weights of another shape or set are 65."""
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InvalidDataError(f"weights do not fit the config in {card_name} "
                               f"({str(exc).splitlines()[0]})", path) from None
    return net
