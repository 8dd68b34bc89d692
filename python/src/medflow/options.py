"""Options shared by every medflow command, defined once (rasterio's rio/options.py pattern)."""

from __future__ import annotations

import logging
import sys
from typing import Callable

import click

log = logging.getLogger("medflow")

#: ``--augment`` choices of ``segment-cascaded train`` and of the annotation simulation that
#: trains it. Spelled out here, not imported from ``medflow.segment``, so ``--help`` does not
#: load PyTorch; a test checks it against ``segment.augment.MODES`` and
#: ``segment.advchain.BASE_MODE``, where each mode is built.
AUGMENT_MODES = ("none", "standard", "gin-ipa", "remap", "adv-chain", "gin-ipa+adv-chain")


class NiftiPath(click.Path):
    """An output image's path: the name must end in .nii or .nii.gz (lower case), or the
    command stops with a usage error (exit 2) before any work; nibabel would refuse the
    name only when the result is written."""

    name = "nifti"

    def __init__(self) -> None:
        from pathlib import Path

        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if not str(path).endswith((".nii", ".nii.gz")):  # lower case: see the atomic writer
            self.fail(f"{str(value)!r}: images are written as NIfTI; end the name in .nii or "
                      ".nii.gz", param, ctx)
        return path


def _set_level(ctx: click.Context) -> None:
    meta = ctx.find_root().meta
    level = logging.WARNING
    if meta.get("medflow.quiet"):
        level = logging.ERROR
    if meta.get("medflow.verbose") or meta.get("medflow.debug"):
        level = logging.DEBUG if meta.get("medflow.debug") else logging.INFO
    logging.basicConfig(format="medflow: %(message)s", stream=sys.stderr)
    logging.getLogger("medflow").setLevel(level)


def _flag(name: str) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_root().meta[f"medflow.{name}"] = True
        _set_level(ctx)
        return value

    return callback


def verbosity_options(f: Callable) -> Callable:
    """--verbose/--quiet/--debug, accepted on the group and on every command."""
    f = click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
                     callback=_flag("debug"), help="Show tracebacks and debug logging.")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                     callback=_flag("quiet"), help="Only print errors.")(f)
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                     callback=_flag("verbose"), help="Print progress information.")(f)
    return f


def is_debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("medflow.debug"))


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("medflow.quiet"))


def show_progress() -> bool:
    """Progress bars only when a person watches: stderr is a terminal and not --quiet."""
    return sys.stderr.isatty() and not is_quiet()


seed_option = click.option(
    "--seed", type=int, default=0, show_default=True,
    help="Random seed; the same inputs and seed give the same output bytes.")

jobs_option = click.option(
    "--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
    help="Subjects processed in parallel in batch mode.")

device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the model runs; auto picks cuda when a GPU is visible.")


def resolve_device(device: str) -> str:
    """Turn --device auto|cpu|cuda into a torch device string, failing clearly without a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("cuda was asked for but no GPU is visible", param_hint="--device")
    return device


def parse_triplet(text: str, name: str, allow_keep: bool = False) -> tuple:
    """Parse 'X,Y,Z' (numbers, or 'keep' where allowed) into a 3-tuple; click error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise click.BadParameter(f"expected three comma-separated values, got {text!r}",
                                 param_hint=name)
    out = []
    for p in parts:
        if allow_keep and p.lower() == "keep":
            out.append(None)
            continue
        try:
            v = float(p)
        except ValueError:
            raise click.BadParameter(f"{p!r} is not a number", param_hint=name) from None
        if not v > 0:
            raise click.BadParameter(f"values must be positive, got {p}", param_hint=name)
        out.append(v)
    return tuple(out)
