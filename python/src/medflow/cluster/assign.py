"""Assigning series to a trained model's clusters, streamed.

Series are read one at a time; their slices are gathered into batches of ``batch`` slices
across series, embedded, and each series is finished as soon as its last slice is
embedded. Per series only one row of numbers (and, for the few most typical members of
each cluster, a 64 x 64 thumbnail) is kept, so memory does not grow with the number of
images: the rows go to Parquet in row groups (:mod:`medflow.cluster.table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medflow.cluster.data import SeriesInfo
from medflow.cluster.encoder import SliceEncoder
from medflow.cluster.slices import two_scale

#: Slices embedded per forward pass.
BATCH = 256


@dataclass
class Assignment:
    """One series' result."""

    info: SeriesInfo
    cluster: int
    distance: float          # cosine distance to its cluster's centre (0 = at the centre)
    map_xy: tuple[float, float]
    n_slices: int
    thumbnail: np.ndarray    # (2S, 2S) uint8: the series' middle drawn slice


class Assigner:
    """Embeds slices and assigns series: arg-max of the mean class probability of the
    series' slices (the self-labelled classifier), distance to that cluster's centre in
    the embedding space, position on the 2D map."""

    def __init__(self, model: SliceEncoder, extra: dict[str, np.ndarray], device: str = "cpu"):
        self.model = model.eval()
        self.device = device
        self.centres = extra["centres"].astype(np.float32)
        self.map_mean = extra["map_mean"].astype(np.float32)
        self.map_axes = extra["map_axes"].astype(np.float32)

    @torch.inference_mode()
    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = two_scale(torch.from_numpy(x)[:, None].to(self.device))
        f = self.model.features(t)
        probs = torch.softmax(self.model.logits(f), 1)
        return F.normalize(f, dim=1).cpu().numpy(), probs.cpu().numpy()

    def _finish(self, info: SeriesInfo, emb: np.ndarray, probs: np.ndarray,
                thumb: np.ndarray) -> Assignment:
        e = emb.mean(0)
        e /= max(float(np.linalg.norm(e)), 1e-12)
        cluster = int(probs.mean(0).argmax())
        distance = float(1.0 - e @ self.centres[cluster])
        xy = (e - self.map_mean) @ self.map_axes.T
        return Assignment(info, cluster, round(max(distance, 0.0), 6),
                          (round(float(xy[0]), 6), round(float(xy[1]), 6)), len(emb),
                          np.round(thumb * 255).astype(np.uint8))

    def run(self, items: Iterable[tuple[SeriesInfo, np.ndarray]], batch: int = BATCH
            ) -> Iterator[Assignment]:
        """Assign every (info, slices (n, S, S) float32) item, in order.

        Args:
            items: series and their slices, e.g. from :func:`series_items`.
            batch: slices per forward pass.

        Yields:
            One :class:`Assignment` per item, in the order given.
        """
        pending: list[tuple[SeriesInfo, np.ndarray]] = []
        queued = 0
        for info, slices in items:
            pending.append((info, slices))
            queued += len(slices)
            if queued >= batch:
                yield from self._flush(pending)
                pending, queued = [], 0
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[tuple[SeriesInfo, np.ndarray]]) -> Iterator[Assignment]:
        x = np.concatenate([s for _, s in pending]).astype(np.float32, copy=False)
        embs, probs = [], []
        for start in range(0, len(x), BATCH):
            e, p = self._forward(x[start:start + BATCH])
            embs.append(e)
            probs.append(p)
        emb, prob = np.concatenate(embs), np.concatenate(probs)
        start = 0
        for info, slices in pending:
            n = len(slices)
            yield self._finish(info, emb[start:start + n], prob[start:start + n],
                               slices[n // 2])
            start += n


def series_items(series_iter, positions: int, frames: int, size: int
                 ) -> Iterator[tuple[SeriesInfo, np.ndarray]]:
    """(info, slices) for each series of :func:`medflow.cluster.catalogue.iter_series`."""
    from medflow.cluster.data import series_info
    from medflow.cluster.slices import series_slices

    for s in series_iter:
        slices, _ = series_slices(s.volume.data, s.volume.spacing, positions, frames, size)
        yield series_info(s), slices
