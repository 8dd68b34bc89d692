"""``clusters.parquet``, written as the assignments stream in, plus what is tallied on the
way: cluster sizes, the contingency with known categories, the samplesheet column check
and the most typical members of each cluster (for the montage).

Columns: ``file``, ``series`` (unique key), ``series_name`` (what a person calls it),
``subject``, ``column`` (samplesheet column, "" for --input-dir), ``cluster``,
``distance_cosine`` (to the cluster centre), ``map_x``, ``map_y`` (2D map of the
embedding), ``n_slices``; with categories ``truth``; with samplesheet columns
``column_share`` (share of the column in this cluster), ``flagged`` (the image does not
fit its column) and ``looks_like`` (the column this cluster is the usual content of).
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medflow.cluster.assign import Assignment
from medflow.cluster.clustering import MIN_COLUMN_SHARE, column_check, scores_from_counts

ROW_GROUP = 8192
TYPICAL = 8  # thumbnails kept per cluster


class ClusterTable:
    """Streams rows into a Parquet file; keeps only tallies and a few thumbnails."""

    def __init__(self, path: str | os.PathLike, with_truth: bool, with_columns: bool):
        self.path = Path(path)
        self.with_truth, self.with_columns = with_truth, with_columns
        self.rows: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.sizes: Counter = Counter()
        self.truth_counts: Counter = Counter()
        self.column_counts: Counter = Counter()
        self.typical: dict[int, list] = {}
        self.n = 0

    def add(self, a: Assignment) -> None:
        i = a.info
        row = {"file": i.file, "series": i.key, "series_name": i.name, "subject": i.subject,
               "column": i.column, "cluster": a.cluster, "distance_cosine": a.distance,
               "map_x": a.map_xy[0], "map_y": a.map_xy[1], "n_slices": a.n_slices}
        if self.with_truth:
            row["truth"] = i.truth
            self.truth_counts[(i.truth, a.cluster)] += 1
        if self.with_columns:
            self.column_counts[(i.column, a.cluster)] += 1
        self.sizes[a.cluster] += 1
        heap = self.typical.setdefault(a.cluster, [])
        item = (-a.distance, -self.n, a.thumbnail, f"{i.subject} {i.column or i.name}")
        (heapq.heappush if len(heap) < TYPICAL else heapq.heappushpop)(heap, item)
        self.rows.append(row)
        self.n += 1
        if len(self.rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows)
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        self.writer.write_table(table)
        self.rows = []

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()

    def scores(self) -> dict | None:
        return scores_from_counts(self.truth_counts) if self.with_truth else None

    def checks(self) -> dict:
        return column_check(self.column_counts) if self.with_columns else {}

    def typical_members(self) -> dict[int, list[tuple[np.ndarray, str]]]:
        """Per cluster, its most typical members (closest to the centre first)."""
        return {c: [(t, label) for _, _, t, label in sorted(h, key=lambda x: (-x[0], -x[1]))]
                for c, h in sorted(self.typical.items())}


def add_column_flags(src: Path, dst: Path, checks: dict) -> int:
    """Copy ``src`` to ``dst`` batch by batch, adding the column-check columns.

    Returns:
        The number of flagged images.
    """
    reader = pq.ParquetFile(str(src))
    writer = None
    flagged = 0
    try:
        for batch in reader.iter_batches(batch_size=ROW_GROUP):
            t = pa.Table.from_batches([batch])
            keys = zip(t.column("column").to_pylist(), t.column("cluster").to_pylist())
            found = [checks[k] for k in keys]
            flags = [f["flag"] for f in found]
            flagged += sum(flags)
            t = t.append_column("column_share", pa.array([f["share"] for f in found]))
            t = t.append_column("flagged", pa.array(flags))
            t = t.append_column("looks_like", pa.array([f["looks_like"] for f in found]))
            if writer is None:
                writer = pq.ParquetWriter(str(dst), t.schema)
            writer.write_table(t)
    finally:
        if writer is not None:
            writer.close()
    return flagged


def summary(table: ClusterTable, skipped: list[tuple[str, str]], checks: dict) -> dict:
    """What the sidecar and the command's last lines report."""
    out = {"images": table.n, "skipped": len(skipped),
           "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
           "cluster_sizes": {str(c): n for c, n in sorted(table.sizes.items())}}
    if table.with_truth:
        out["scores"] = table.scores()
    if table.with_columns:
        out["column_check"] = {
            "min_share": MIN_COLUMN_SHARE,
            "flagged": sum(table.column_counts[k] for k, v in checks.items() if v["flag"]),
            "clusters": [{"column": col, "cluster": c, "images": table.column_counts[(col, c)],
                          **v} for (col, c), v in sorted(checks.items())]}
    return out
