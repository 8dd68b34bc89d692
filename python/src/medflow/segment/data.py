"""Training data: samplesheet rows -> normalised (image, class-index) samples.

A 4D cine gives one sample per labelled frame (a frame whose label map is not empty); a
model with temporal context (:mod:`segment.context`) gets the context frames' images as
extra channels of every sample.
Intensities are clipped to the 0.5-99.5 percentiles and z-scored per image; statistics
come from a strided subsample so a memory-mapped 640^3 volume is never read whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medflow.errors import InvalidDataError
from medflow.io.images import read_image
from medflow.io.sidecar import sha256
from medflow.io.volume import Volume

MAX_STAT_VOXELS = 2_000_000
SPACING_TOL = 0.05  # relative spacing difference above which inputs are resampled


@dataclass
class Sample:
    """One training sample: image (C, X, Y, Z) float32 and classes (X, Y, Z) int64."""

    subject: str
    frame: int
    image: np.ndarray
    classes: np.ndarray


def robust_stats(data: np.ndarray) -> tuple[float, float, float, float]:
    """(low, high, mean, std) of the clipped intensities, from a strided subsample.

    Note:
        Deterministic: the subsample is a fixed stride, not random.
    """
    step = max(1, int(np.ceil((data.size / MAX_STAT_VOXELS) ** (1 / 3))))
    sub = np.asarray(data[::step, ::step, ::step], dtype=np.float64).ravel()
    lo, hi = np.percentile(sub, [0.5, 99.5])
    clipped = np.clip(sub, lo, hi)
    std = float(clipped.std())
    return float(lo), float(hi), float(clipped.mean()), std if std > 1e-8 else 1.0


def normalise(data: np.ndarray, stats) -> np.ndarray:
    """Clip and z-score with ``stats`` from :func:`robust_stats`; returns float32."""
    lo, hi, mean, std = stats
    out = np.clip(np.asarray(data, dtype=np.float32), lo, hi)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


def encode_labels(data: np.ndarray, labels, path=None) -> np.ndarray:
    """Label values -> class indices (int64); a value not in ``labels`` is an error."""
    values = np.asarray(labels)
    arr = np.asarray(data).astype(np.int64)
    idx = np.searchsorted(values, arr).clip(0, len(values) - 1)
    bad = values[idx] != arr
    if bad.any():
        raise InvalidDataError(f"unknown label values {sorted(set(arr[bad].tolist()))[:5]} "
                               f"(the model knows {list(labels)})", path)
    return idx


def needs_resampling(spacing, target, tol: float = SPACING_TOL) -> bool:
    return any(abs(s - t) > tol * t for s, t in zip(spacing, target))


def resampled_shape(shape, spacing, target) -> tuple[int, int, int]:
    """Grid size covering the same field of view at (about) the target spacing."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resize(t: torch.Tensor, size, label: bool = False) -> torch.Tensor:
    """(B, C, X, Y, Z) -> size: trilinear (align_corners=False), nearest for labels."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    if label:
        return F.interpolate(t.float(), size=tuple(size), mode="nearest").to(t.dtype)
    return F.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)


def frames_of(vol: Volume) -> list[np.ndarray]:
    """The 3D frames of a 3D or 4D volume (views, no copy)."""
    if vol.data.ndim == 3:
        return [vol.data]
    return [vol.data[..., t] for t in range(vol.data.shape[3])]


def load_training_samples(df, image_roles, label_role, labels=None, spacing=None,
                          context: tuple[str, ...] = ()):
    """Read every row into samples (one per labelled frame).

    Args:
        df: samplesheet DataFrame (paths absolute), one row per subject.
        image_roles: column(s) holding the image channels.
        label_role: column holding the label map.
        labels: known label values; when None they are collected from the data.
        spacing: resample every image to this spacing (mm); None keeps the first subject's.
        context: context frames (:func:`segment.context.parse_context`); each sample's
            image then holds the roles at its frame, then at each context frame.

    Returns:
        (samples, labels, spacing).

    Raises:
        InvalidDataError: with ``context``, an image that is not a cine.
    """
    from medflow.segment.context import check_cine, frame_sources

    raw = []
    for _, row in df.iterrows():
        chans = [read_image(row[r]) for r in image_roles]
        lab = read_image(row[label_role], kind="label")
        for c in chans:
            if c.shape3 != lab.shape3 or c.n_frames != chans[0].n_frames:
                raise InvalidDataError(f"image and label grids differ ({list(c.data.shape)} "
                                       f"vs {list(lab.data.shape)})", row[label_role])
        if lab.n_frames not in (1, chans[0].n_frames):
            raise InvalidDataError("label frames do not match the image frames", row[label_role])
        check_cine(context, chans[0].n_frames, row[image_roles[0]])
        raw.append((row["subject"], chans, lab, row[label_role]))
    if labels is None:
        found = set()
        for _, _, lab, _ in raw:
            found |= set(np.unique(np.asarray(lab.data)).astype(int).tolist())
        labels = tuple(sorted(found | {0}))
    spacing = tuple(spacing or raw[0][1][0].spacing)
    samples = []
    for subject, chans, lab, lab_path in raw:
        stats = [robust_stats(c.data) for c in chans]
        lab_frames = frames_of(lab)
        img_frames = [frames_of(c) for c in chans]
        for t in range(chans[0].n_frames):
            classes = encode_labels(lab_frames[min(t, len(lab_frames) - 1)], labels, lab_path)
            if len(lab_frames) > 1 and not classes.any():
                continue  # unlabelled frame of a cine
            image = np.stack([normalise(f[k], s) for k in frame_sources(context, t, len(
                img_frames[0])) for f, s in zip(img_frames, stats)])
            if needs_resampling(chans[0].spacing, spacing):
                size = resampled_shape(image.shape[1:], chans[0].spacing, spacing)
                image = resize(torch.from_numpy(image)[None], size)[0].numpy()
                classes = resize(torch.from_numpy(classes)[None, None], size, True)[0, 0].numpy()
            samples.append(Sample(subject, t, np.ascontiguousarray(image), classes))
    return samples, tuple(int(v) for v in labels), spacing


def training_checksum(df, roles) -> str:
    """SHA-256 over the subjects and the checksums of their files (order independent)."""
    h = hashlib.sha256()
    for _, row in df.sort_values("subject").iterrows():
        h.update(row["subject"].encode())
        for r in roles:
            h.update(sha256(row[r]).encode())
    return h.hexdigest()
