"""Positive pairs from metadata (metadata-enhanced contrastive learning, seed 001).

Plain SimCLR makes the two views of a positive pair from one image by augmentation only,
and treats every other image in the batch as a negative, including other slices of the
same series, which show the same thing. Here a positive pair is two *different* slices
that metadata says show the same kind of image: same subject, same session, same series,
slice positions at most ``reach`` drawn positions apart and neighbouring cine frames (at
most one drawn frame apart). Training uses ``reach`` 0 (``TrainConfig.slice_reach``): the
same position in neighbouring frames; with 1 (neighbouring positions too) the SSFP views
of the mixed benchmark set split into two or three clusters each (benchmarks/cluster).
A series with a single slice pairs it with itself (augmentation only). In the loss, the other slices of the same series in a batch are
neither positives nor negatives: they are no other image to be pushed away from, but a
slice far along the stack may show something else (the one slice of a brain stack with
an enhancing tumour rim is what tells t1ce from t1).

Different series of one subject and session (a short-axis and a 4-chamber cine of one
visit) are *not* positives: they are the hard negatives that teach the encoder what a
view looks like rather than what a subject looks like; :func:`visit_mates` puts them in
the same batch on purpose. The headers only define pairs;
they are never inputs of the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SliceMeta:
    """Metadata of one stored training slice."""

    series: int     # index of its series
    subject: str
    session: str    # the samplesheet row or the DICOM folder/zip it came from
    rank: int       # order of its position among the positions drawn from the series
    frame: int      # order of its frame among the frames drawn at that position


def positive_candidates(meta: list[SliceMeta], reach: int = 1) -> list[np.ndarray]:
    """For every slice, the indices of the slices it may be paired with.

    Args:
        meta: one :class:`SliceMeta` per stored slice.

    Returns:
        A list (one per slice) of int arrays: slices of the same subject, session and
        series whose position rank differs by at most ``reach`` and frame rank by at most
        one, the slice itself excluded; just the slice itself when there is none.

    Example:
        >>> m = [SliceMeta(0, "s", "a", r, 0) for r in range(3)]
        >>> [c.tolist() for c in positive_candidates(m)]
        [[1], [0, 2], [1]]
    """
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(meta):
        groups.setdefault((m.subject, m.session, m.series), []).append(i)
    out: list[np.ndarray] = [np.empty(0, int)] * len(meta)
    for members in groups.values():
        idx = np.asarray(members)
        rank = np.array([meta[i].rank for i in members])
        frame = np.array([meta[i].frame for i in members])
        near = (np.abs(rank[:, None] - rank[None, :]) <= reach) & \
               (np.abs(frame[:, None] - frame[None, :]) <= 1)
        np.fill_diagonal(near, False)
        for row, i in enumerate(members):
            found = idx[near[row]]
            out[i] = found if found.size else np.array([i])
    return out


def draw_partners(anchors: np.ndarray, candidates: list[np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    """One partner per anchor, uniformly among its candidates."""
    return np.array([c[rng.integers(len(c))] for c in (candidates[a] for a in anchors)])


def batch_masks(idx: np.ndarray, meta: list[SliceMeta], reach: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Positive and ignored pairs among the slices ``idx`` of a batch.

    Returns:
        (positive, ignore), (N, N) bool: positive where two rows are the same slice (two
        views) or neighbours as :func:`positive_candidates` defines them; ignore where they
        are other slices of the same series (neither pulled together nor pushed apart).
    """
    series = np.array([meta[i].series for i in idx])
    rank = np.array([meta[i].rank for i in idx])
    frame = np.array([meta[i].frame for i in idx])
    same = series[:, None] == series[None, :]
    near = same & (np.abs(rank[:, None] - rank[None, :]) <= reach) & \
        (np.abs(frame[:, None] - frame[None, :]) <= 1)
    positive = near | (idx[:, None] == idx[None, :])
    return positive, same & ~positive


def visit_mates(meta: list[SliceMeta]) -> dict[int, np.ndarray]:
    """For every series, the other series of its subject and session (its visit).

    They are the hard negatives of seed 001's metadata pairs: a visit's short axis and
    4-chamber cine, or its t1 and t1ce, share the subject's anatomy and differ only in
    what tells the categories apart. Drawn into one batch together (see
    :func:`mate_slices`) they teach the encoder that difference; drawn independently they
    almost never meet.

    Example:
        >>> m = [SliceMeta(0, "s", "a", 0, 0), SliceMeta(1, "s", "a", 0, 0),
        ...      SliceMeta(2, "t", "b", 0, 0)]
        >>> {k: v.tolist() for k, v in visit_mates(m).items()}
        {0: [1], 1: [0], 2: []}
    """
    visits: dict[tuple[str, str], set[int]] = {}
    for m in meta:
        visits.setdefault((m.subject, m.session), set()).add(m.series)
    out = {}
    for members in visits.values():
        for s in members:
            out[s] = np.array(sorted(members - {s}), int)
    return out


def mate_slices(anchors: np.ndarray, mates: np.ndarray, members: list[np.ndarray],
                meta: list[SliceMeta]) -> np.ndarray:
    """For each anchor slice, the slice of the mate series at the nearest position rank
    and frame rank (the same level of the stack: for brain sequences, the same lesion)."""
    out = []
    for a, s in zip(anchors, mates):
        cand = members[s]
        gap = [abs(meta[c].rank - meta[a].rank) * 1000 + abs(meta[c].frame - meta[a].frame)
               for c in cand]
        out.append(cand[int(np.argmin(gap))])
    return np.array(out, int)
