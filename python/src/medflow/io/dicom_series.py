"""How frames become series: by SeriesInstanceUID, without copies, one kind per series,
and UK Biobank's one-series-per-slice cines joined into one stack.

Rules, each recorded in the series' ``notes`` (they reach the sidecar):

- **Copies are dropped**, not stacked as time: frames with the same SOPInstanceUID (the
  same export present twice) keep their first file in path order (dcm2niix's rule);
  frames that only share InstanceNumber, frame, position and trigger time under new UIDs
  (a re-export) are dropped too, after :mod:`.dicom_stack` checks their pixels are equal.
- **One kind per series**: frames that differ in ImageType, complex component, echo or
  phase-encoding polarity, or that a vendor's private tags tell apart (a GE field map
  beside its magnitude, a Philips derived trace after the diffusion directions), are split
  into series named ``<description>_<what differs>`` (e.g. ``_m`` / ``_p``, ``_e1`` /
  ``_e2``, ``_rev``; a kind with nothing to name keeps the description), selectable like
  any series.
- **UK Biobank blocks** (``CINE_segmented_SAX_b1`` ... ``_bN``) are joined only when every
  block is parallel, holds one slice position, and the blocks' positions differ: the rule
  belongs to per-slice cine series, not to any name ending in ``_b`` + digits
  (``ep2d_diff_b0`` and ``ep2d_diff_b1000`` stay apart). A block acquired twice (two series
  with one description) keeps the last acquired (highest SeriesNumber, then acquisition
  time, then UID: ukbb_cardiac keeps the last too), unless ``prefer`` names the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from medflow.io.dicom_frames import Frame

#: Direction cosines are written with ~6 decimals; 1e-3 is ~0.06 degrees.
ORIENTATION_TOL = 1e-3
#: Positions within this fraction of a pixel are the same.
POSITION_RTOL = 0.01
_BLOCK = re.compile(r"^(?P<stem>.+)_b(?P<n>\d+)$")


@dataclass
class Series:
    uid: str
    description: str
    number: int
    modality: str
    acquired: float                    # seconds of the day (earliest frame), for "last"
    frames: list[Frame] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (description, uid)
    notes: dict = field(default_factory=dict)    # duplicates, replaced series, kind
    twins: list[tuple[Frame, Frame]] = field(default_factory=list)  # (kept, dropped)


def parallel(a: Frame, b: Frame) -> bool:
    return a.shape == b.shape and np.abs(a.iop - b.iop).max() <= ORIENTATION_TOL


def normal_of(frame: Frame) -> np.ndarray:
    return np.cross(frame.iop[:3], frame.iop[3:])


def positions(frames: list[Frame]) -> list[float]:
    """Distinct positions along the first frame's normal (within POSITION_RTOL pixel)."""
    normal = normal_of(frames[0])
    tol = POSITION_RTOL * min(frames[0].pixel_spacing)
    out: list[float] = []
    for p in sorted(float(f.ipp @ normal) for f in frames):
        if not out or p - out[-1] > tol:
            out.append(p)
    return out


def drop_copies(series: Series, shown) -> Series:
    """Drop frames present twice (see module docstring); count them in ``notes``."""
    kept: dict = {}
    by_instance: dict = {}
    dropped: list[str] = []
    for fr in sorted(series.frames, key=lambda fr: (str(fr.file), fr.index)):
        if fr.sop in kept:
            dropped.append(shown(fr.file))
            continue
        kept[fr.sop] = fr
        if fr.instance:
            tol = POSITION_RTOL * min(fr.pixel_spacing)
            key = (fr.instance, fr.index, fr.tile, fr.trigger_ms, fr.kind,
                   tuple(np.round(fr.ipp / tol).astype(int)))
            twin = by_instance.get(key)
            if twin is not None:
                del kept[fr.sop]
                series.twins.append((twin, fr))
                dropped.append(shown(fr.file))
                continue
            by_instance[key] = fr
    if dropped:
        series.frames = list(kept.values())
        series.notes["duplicates_dropped"] = len(dropped)
        series.notes["duplicate_files"] = sorted(set(dropped))[:20]
    return series


def split_kinds(series: Series) -> list[Series]:
    """One series per kind of image (see module docstring)."""
    kinds = list(dict.fromkeys(fr.kind for fr in series.frames))
    if len(kinds) == 1:
        return [series]
    out = []
    suffixes = [_kind_suffix(kind, kinds) for kind in kinds]
    if suffixes.count("") > 1:  # kinds that differ in nothing nameable: number them
        suffixes = [sfx or f"kind{i + 1}" for i, sfx in enumerate(suffixes)]
    for kind, suffix in zip(kinds, suffixes):
        # the one kind with nothing to name (acquired DWI beside a derived trace) keeps
        # the series' own description
        name = f"{series.description}_{suffix}" if suffix else series.description
        part = Series(series.uid, name, series.number,
                      series.modality, series.acquired,
                      [fr for fr in series.frames if fr.kind == kind],
                      list(series.sources), dict(series.notes))
        part.twins = [t for t in series.twins if t[0].kind == kind]
        part.notes["image_kind"] = {"image_type": list(kind[0]), "complex_component":
                                    kind[1] or None, "echo": kind[2], "pe_reversed": kind[3]}
        out.append(part)
    return out


def _kind_suffix(kind: tuple, kinds: list[tuple]) -> str:
    image_type, component, echo, reversed_pe = kind
    words = []
    types = [k[0] for k in kinds]
    width = max(len(t) for t in types)
    for i in range(width):
        values = {t[i] if i < len(t) else "" for t in types}
        if len(values) > 1 and i < len(image_type):
            words.append(image_type[i])
    if len({k[1] for k in kinds}) > 1 and component:
        words.append(component)
    echoes = sorted({k[2] for k in kinds if k[2] is not None})
    if len(echoes) > 1 and echo is not None:
        number = echo if float(echo).is_integer() and echo < 100 else echoes.index(echo) + 1
        words.append(f"e{int(number)}")
    if len({k[3] for k in kinds}) > 1:
        words.append("rev" if reversed_pe else "fwd")
    return re.sub(r"[^a-z0-9]+", "_", "_".join(words).lower()).strip("_")


def merge_blocks(series: list[Series], prefer: str | None = None) -> list[Series]:
    """Join UK Biobank per-slice blocks into stacks (see module docstring)."""
    out, groups = [], {}
    for s in series:
        m = _BLOCK.match(s.description)
        if m is None or len(positions(s.frames)) != 1:
            out.append(s)
            continue
        parts = groups.setdefault(m["stem"], [])
        part = next((p for p in parts if parallel(p[0].frames[0], s.frames[0])), None)
        (part.append(s) if part is not None else parts.append([s]))
    for stem, parts in groups.items():
        for part in parts:
            out += _join(stem, part, prefer)
    return out


def _last_acquired(repeats: list[Series], prefer: str | None) -> Series:
    chosen = [s for s in repeats if prefer is not None and s.uid == prefer]
    return chosen[0] if chosen else max(repeats, key=lambda s: (s.number, s.acquired, s.uid))


def _join(stem: str, part: list[Series], prefer: str | None) -> list[Series]:
    by_block: dict[str, list[Series]] = {}
    for s in part:
        by_block.setdefault(s.description, []).append(s)
    kept, replaced = [], []
    for name, repeats in by_block.items():
        keep = _last_acquired(repeats, prefer)
        kept.append(keep)
        replaced += [{"description": name, "uid": s.uid, "series_number": s.number,
                      "kept_uid": keep.uid, "rule": "preferred by --series" if
                      prefer == keep.uid else "last acquired kept"}
                     for s in repeats if s is not keep]
    where = positions([s.frames[0] for s in kept])
    if len(kept) < 2 or len(where) != len(kept):
        return part  # one block, or blocks sharing a position: not a slice stack
    kept.sort(key=lambda s: int(_BLOCK.match(s.description)["n"]))
    first = kept[0]
    joined = Series(first.uid, stem, min(s.number for s in kept), first.modality,
                    min(s.acquired for s in kept), [fr for s in kept for fr in s.frames],
                    [src for s in kept for src in s.sources])
    joined.twins = [t for s in kept for t in s.twins]
    dups = sum(s.notes.get("duplicates_dropped", 0) for s in kept)
    if dups:
        joined.notes["duplicates_dropped"] = dups
        joined.notes["duplicate_files"] = sorted(
            {f for s in kept for f in s.notes.get("duplicate_files", [])})[:20]
    if replaced:
        joined.notes["replaced_series"] = replaced
    return [joined]
