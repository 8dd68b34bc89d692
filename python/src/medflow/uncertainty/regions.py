"""Evaluation regions: named sets of labels (BraTS WT/TC/ET, cardiac LV/Myo/RV, or a file)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.errors import InvalidDataError, MissingInputError


@dataclass(frozen=True)
class Region:
    """A named region: the voxels whose label is in ``labels``.

    Example:
        >>> Region("TC", (1, 4)).mask(np.array([0, 1, 2, 4])).tolist()
        [False, True, False, True]
    """

    name: str
    labels: tuple[int, ...]

    @property
    def key(self) -> str:
        """Lower-case prefix for table columns (``wt`` -> ``wt_score``)."""
        return self.name.lower()

    def mask(self, labels: np.ndarray) -> np.ndarray:
        return np.isin(labels, self.labels)


def brats_regions(et_label: int = 4) -> tuple[Region, ...]:
    """BraTS regions: WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}; ET is 4 (<= 2021) or 3 (2023)."""
    return (Region("WT", (1, 2, et_label)), Region("TC", (1, et_label)),
            Region("ET", (et_label,)))


CARDIAC = (Region("LV", (1,)), Region("Myo", (2,)), Region("RV", (3,)))
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_regions(spec: str = "brats", et_label: int | None = None) -> tuple[Region, ...]:
    """Regions from ``brats``, ``cardiac`` or a JSON file ``{"WT": [1, 2, 4], ...}``.

    Args:
        spec: ``brats``, ``cardiac`` or the path of a JSON object mapping names to labels.
        et_label: the enhancing-tumour label for ``brats`` (4 by default, 3 for BraTS 2023).

    Returns:
        The regions in file order.

    Note:
        A JSON file that is missing raises MissingInputError (66); one that is not a
        mapping of names (letters, digits, ``_``) to lists of whole numbers raises
        InvalidDataError (65). ``et_label`` only applies to ``brats``.
    """
    if spec == "brats":
        return brats_regions(4 if et_label is None else et_label)
    if et_label is not None:
        raise ValueError("--et-label only applies to --regions brats")
    if spec == "cardiac":
        return CARDIAC
    path = Path(spec)
    if not path.exists():
        raise MissingInputError("region definition not found (expected brats, cardiac or a "
                                "JSON file)", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"not valid JSON ({exc})", path) from None
    ok = isinstance(data, dict) and data and all(
        isinstance(k, str) and _NAME.match(k) and isinstance(v, list) and v
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        for k, v in data.items())
    if not ok:
        raise InvalidDataError('expected an object like {"WT": [1, 2, 4], "TC": [1, 4]} '
                               "(names: letters, digits, _; labels: whole numbers)", path)
    if len({k.lower() for k in data}) != len(data):
        raise InvalidDataError("region names must differ in more than letter case", path)
    return tuple(Region(k, tuple(v)) for k, v in data.items())


def known_labels(regions: tuple[Region, ...]) -> set[int]:
    """Background (0) plus every label some region uses."""
    return {0} | {lab for r in regions for lab in r.labels}


def unknown_labels(labels: np.ndarray, regions: tuple[Region, ...]) -> list[int]:
    """Label values present in ``labels`` that no region (nor background) defines."""
    flat = np.asarray(labels).ravel()
    if flat.dtype.kind in "ui" and flat.size and 0 <= flat.min() and flat.max() < 65536:
        present = np.flatnonzero(np.bincount(flat))  # far faster than np.unique's sort
    else:
        present = np.unique(flat)
    known = np.array(sorted(known_labels(regions)))
    return [int(v) if float(v).is_integer() else float(v)
            for v in present[~np.isin(present, known)]]


#: What the last axis of a probability map holds: one channel per region (in region
#: order), or one per class: background, then every label a region uses, ascending (the
#: layout ``segment-cascaded predict --probabilities`` writes: ``(X, Y, Z[, T], C)`` with
#: channel i the class of the i-th smallest label, so cardiac 0/1/2/3 and BraTS 0/1/2/4).
PROB_CHANNELS = ("regions", "classes")


def channel_names(regions: tuple[Region, ...], channels: str = "regions") -> list[str]:
    """What each channel of a ``channels`` probability map is, in order (for messages)."""
    if channels == "classes":
        return [f"label {v}" for v in sorted(known_labels(regions))]
    return [r.name for r in regions]


def region_probabilities(prob: np.ndarray, regions: tuple[Region, ...],
                         channels: str = "regions") -> np.ndarray:
    """Per-region probabilities ``(..., R)`` from a probability map ``(..., channels)``.

    Args:
        prob: probabilities with the channel axis last (see :data:`PROB_CHANNELS`).
        regions: the regions, in output order.
        channels: ``"regions"`` (returned as they are) or ``"classes"``: a region's
            probability is the sum of the channels of its labels, clipped to [0, 1]
            (float32 rounding), e.g. cardiac LV/Myo/RV <- classes 1/2/3, BraTS WT <- 1+2+4.

    Returns:
        float32 array ``(..., R)``.

    Raises:
        ValueError: the channel count is not :func:`channel_names`'s.

    Example:
        >>> p = np.array([[0.1, 0.2, 0.3, 0.4]])          # one voxel, classes 0/1/2/4
        >>> print(region_probabilities(p, brats_regions(), "classes"))  # WT, TC, ET
        [[0.9 0.6 0.4]]
    """
    if channels not in PROB_CHANNELS:
        raise ValueError(f"channels must be one of {PROB_CHANNELS}, got {channels!r}")
    want = len(channel_names(regions, channels))
    if prob.shape[-1] != want:
        raise ValueError(f"expected {want} channels, got {prob.shape[-1]}")
    if channels == "regions":
        return np.asarray(prob, dtype=np.float32)
    index = {v: i for i, v in enumerate(sorted(known_labels(regions)))}
    out = np.empty((*prob.shape[:-1], len(regions)), np.float32)
    for k, region in enumerate(regions):
        out[..., k] = np.asarray(prob[..., [index[v] for v in region.labels]]).sum(-1)
    return np.clip(out, 0.0, 1.0, out=out)
