"""JSON sidecars: what produced an output, from what, with which parameters, how long."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from medflow import __version__
from medflow.io.paths import absolute, source_file


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of every file in a folder (sorted by relative path); for a
    ``zip#series`` cell, of the zip."""
    p = Path(path)
    if not p.exists():
        p = source_file(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Timer:
    """Wall-clock stopwatch for the sidecar's ``timings``."""

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.perf_counter() - self._t0, 4)

    def as_dict(self) -> dict:
        return {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "total_s": round(time.perf_counter() - self._t0, 4), **self.marks}


def make_sidecar(tool: str, parameters: dict, inputs: dict[str, str | os.PathLike | None],
                 timer: Timer | None = None, **extra) -> dict:
    """Build the sidecar dict: tool, version, parameters, inputs with checksums, timings."""
    return _jsonable({
        "tool": tool,
        "medflow_version": __version__,
        "python": platform.python_version(),
        "parameters": parameters,
        "inputs": {role: {"path": str(absolute(p)), "sha256": sha256(p)}
                   for role, p in inputs.items() if p is not None},
        "timings": timer.as_dict() if timer else {},
        **extra,
    })


def sidecar_path(output: str | os.PathLike) -> Path:
    """``x.nii.gz`` -> ``x.json`` beside it."""
    p = Path(output)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".parquet", ".mha", ".nrrd"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(p.stem + ".json")


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write JSON with sorted keys (stable diffs). Use inside atomic_outputs."""
    path = Path(path)
    path.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")
    return path
