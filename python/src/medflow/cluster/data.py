"""The training set: slices of the cohort's own series, with the metadata of each."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from medflow.cluster.catalogue import Entry, Series, iter_series
from medflow.cluster.pairs import SliceMeta
from medflow.cluster.slices import series_slices

log = logging.getLogger("medflow")


@dataclass
class SeriesInfo:
    """What is known of one series besides its pixels (never an input of the network)."""

    key: str
    name: str
    file: str
    subject: str
    column: str
    truth: str


@dataclass
class TrainingSet:
    """Slices (N, S, S) float16 in [0, 1], the series each came from, and metadata."""

    slices: np.ndarray
    series_of: np.ndarray                 # (N,) series index
    meta: list[SliceMeta]
    series: list[SeriesInfo]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series_of)


def session_of(series: Series) -> str:
    """The visit a series belongs to: its samplesheet row (subject) or, for a DICOM folder
    or zip under --input-dir, that folder or zip."""
    entry = series.entry
    return entry.subject if entry.column or entry.path.is_file() else str(entry.path)


def series_info(series: Series) -> SeriesInfo:
    e = series.entry
    return SeriesInfo(series.key, series.name, str(e.path), e.subject, e.column, e.truth)


def pick_entries(entries: list[Entry], max_series: int, seed: int) -> list[Entry]:
    """At most ``max_series`` entries, drawn without replacement (seeded), in their order."""
    if len(entries) <= max_series:
        return list(entries)
    keep = np.random.default_rng(seed).choice(len(entries), max_series, replace=False)
    return [entries[i] for i in sorted(keep)]


def collect(entries: list[Entry], positions: int, frames: int, size: int,
            progress=None) -> TrainingSet:
    """Read every entry once and keep its series' slices.

    Args:
        entries: what to read (unreadable ones are skipped and listed in ``skipped``).
        positions, frames, size: see :func:`medflow.cluster.slices.series_slices`.
        progress: optional callable called once per entry.

    Returns:
        The :class:`TrainingSet` (slices stored as float16: 32 kB per 128 x 128 slice).
    """
    skipped: list[tuple[str, str]] = []
    chunks, owners, meta, infos = [], [], [], []
    for s in iter_series(entries, skipped):
        data, index = series_slices(s.volume.data, s.volume.spacing, positions, frames, size)
        i = len(infos)
        infos.append(series_info(s))
        chunks.append(data.astype(np.float16))
        owners.append(np.full(len(index), i))
        frame_rank = {f: r for r, f in enumerate(sorted({x.frame for x in index}))}
        meta += [SliceMeta(i, s.entry.subject, session_of(s), x.rank, frame_rank[x.frame])
                 for x in index]
        progress and progress()
    slices = np.concatenate(chunks) if chunks else np.zeros((0, size, size), np.float16)
    series_of = np.concatenate(owners) if owners else np.zeros(0, int)
    return TrainingSet(slices, series_of, meta, infos, skipped)
