"""The feature table every strategy ranks from, read in batches so that memory does not
grow with the cohort.

One row per annotation unit:

=================  ==========================================================================
``subject``        subject ID
``slice``          slice index along the image's third voxel axis; -1 for a whole subject
``labelled``       whether the unit already has a label (never suggested)
``uncertainty``    mean predictive uncertainty of the model over the unit's field of view,
                   0-100 (NaN without a model, or for labelled units)
``gradient_norm``  length of the segmentation-loss gradient with respect to the image, the
                   model's own segmentation as target (NaN without a model, or labelled)
``emb_0..``        the unit's latent embedding (VAE posterior mean)
=================  ==========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError, MissingInputError

BATCH_ROWS = 8192
REQUIRED = ("subject", "slice", "labelled")


def vector_columns(columns, prefix: str) -> list[str]:
    """``emb_0, emb_1, ...`` (in index order) among ``columns``."""
    found = [c for c in columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted(found, key=lambda c: int(c[len(prefix):]))


class FeatureSource:
    """Batches of the feature table: an in-memory DataFrame or a Parquet file.

    Args:
        table: a DataFrame, or the path of a Parquet file (read one row batch at a time).
        batch_rows: rows per batch.

    Note:
        Every strategy reads the table in one or a few passes of :meth:`batches` and keeps
        only what its budget needs, so ranking 100,000 subjects holds a few batches.
    """

    def __init__(self, table: pd.DataFrame | str | os.PathLike, batch_rows: int = BATCH_ROWS):
        self.batch_rows = int(batch_rows)
        if isinstance(table, pd.DataFrame):
            self.frame, self.path = table.reset_index(drop=True), None
            columns = list(table.columns)
        else:
            import pyarrow.parquet as pq

            self.frame, self.path = None, Path(table)
            if not self.path.exists():
                raise MissingInputError("feature table not found", self.path)
            try:
                columns = pq.ParquetFile(self.path).schema_arrow.names
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise InvalidDataError(f"not a readable Parquet table ({exc})", self.path) \
                    from None
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise InvalidDataError(f"feature table lacks column(s) {missing}", self.path)
        self.columns = columns
        self.embedding = vector_columns(columns, "emb_")

    def batches(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The table in row order, ``batch_rows`` rows at a time (only ``columns``)."""
        cols = [c for c in (columns or self.columns) if c in self.columns]
        if self.frame is not None:
            for start in range(0, len(self.frame), self.batch_rows):
                yield self.frame.iloc[start:start + self.batch_rows][cols]
            return
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(self.path).iter_batches(self.batch_rows, columns=cols):
            yield batch.to_pandas()

    def counts(self) -> tuple[int, int]:
        """(units, labelled units)."""
        n = labelled = 0
        for b in self.batches(["labelled"]):
            n += len(b)
            labelled += int(b["labelled"].astype(bool).sum())
        return n, labelled


def matrix(batch: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """(rows, len(columns)) float32 of a batch's vector columns."""
    return batch[columns].to_numpy(np.float32, copy=False)


def stable_keys(seed: int, subjects, slices) -> np.ndarray:
    """A reproducible pseudo-random uint64 per unit, independent of row order and batching
    (BLAKE2b of seed, subject and slice): the tie-breaker and the random draw."""
    import hashlib

    out = np.empty(len(subjects), np.uint64)
    for i, (s, k) in enumerate(zip(subjects, slices)):
        digest = hashlib.blake2b(f"{seed}|{s}|{int(k)}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


class TopK:
    """The ``k`` best units seen so far (highest score; ties: smallest key), with their
    embeddings if given: memory O(k) however many batches are pushed."""

    def __init__(self, k: int):
        self.k = int(k)
        self.score = np.empty(0)
        self.key = np.empty(0, np.uint64)
        self.subject = np.empty(0, object)
        self.slice = np.empty(0, np.int64)
        self.emb: np.ndarray | None = None
        self.tag = np.empty(0, np.int64)

    def push(self, score, key, subject, slc, emb: np.ndarray | None = None,
             tag=None) -> None:
        """Add a batch: scores, keys, subjects, slices, optional embeddings and int tags."""
        self.score = np.concatenate([self.score, np.asarray(score, np.float64)])
        self.key = np.concatenate([self.key, np.asarray(key, np.uint64)])
        self.subject = np.concatenate([self.subject, np.asarray(subject, object)])
        self.slice = np.concatenate([self.slice, np.asarray(slc, np.int64)])
        if emb is not None:
            self.emb = emb if self.emb is None else np.concatenate([self.emb, emb])
        self.tag = np.concatenate([self.tag, np.zeros(len(score), np.int64) if tag is None
                                   else np.asarray(tag, np.int64)])
        order = np.lexsort((self.key, -self.score))[:self.k]
        self.score, self.key = self.score[order], self.key[order]
        self.subject, self.slice = self.subject[order], self.slice[order]
        self.tag = self.tag[order]
        if self.emb is not None:
            self.emb = self.emb[order]

    def __len__(self) -> int:
        return len(self.score)


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) float32, without an (a, b, dims) temporary."""
    d2 = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
