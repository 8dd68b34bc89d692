"""Parquet tables: one row per subject (or subject and frame), units in column names."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medflow.errors import InvalidDataError, MissingInputError


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as Parquet (no pandas index). Use inside atomic_outputs."""
    path = Path(path)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    pq.write_table(table, str(path))
    return path


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise MissingInputError("no such table", p)
    try:
        return pq.read_table(str(p)).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet table ({exc})", p) from None
