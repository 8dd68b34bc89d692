"""One config dataclass for the cascade, saved beside the weights in model.json (nanoGPT's
GPTConfig pattern): every hyperparameter lives here, never in a subclass per setting.

Anisotropy (cardiac cine: 1.8 x 1.8 x 10 mm, about 10 slices). :func:`plan_levels` follows
the nnU-Net rule: an axis is pooled at a level only while its current spacing is at most
twice the finest current spacing *and* it keeps at least ``MIN_AXIS`` voxels after pooling;
a convolution kernel is 1 (not 3) along an axis whose spacing is still more than 3x the
finest. For a 96 x 96 x 10 cardiac patch this gives pools (2,2,1),(2,2,1),(2,2,2) and
kernels (3,3,1),(3,3,3),(3,3,3),(3,3,3): the 10-slice axis is pooled once, to 5 slices
(never below ``MIN_AXIS``), and the first layer does not mix slices 10 mm apart before
in-plane context is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MIN_AXIS = 4  # fewest voxels an axis keeps after pooling

Triple = tuple[int, int, int]


@dataclass
class CascadeConfig:
    """Architecture, data and inference settings of a trained cascade.

    Args:
        in_channels: image channels (1 for a cine; 4 for BraTS t1, t1ce, t2, flair).
        context_frames: other frames of a cine fed beside each frame (``"ed"`` = frame 0,
            ``"-1"``/``"+1"`` neighbours; :mod:`segment.context`); the networks see
            ``net_channels = in_channels x (1 + len(context_frames))`` channels.
        labels: label value of each class index; class 0 is background.
        label_names: human names, same order as ``labels``.
        regions: region name -> label values (BraTS WT/TC/ET), for per-region uncertainty.
        stages: 2 for the cascade, 1 for the single-stage baseline (stage 2 alone).
        channels1 / channels2: feature widths per level of the stage-1 / stage-2 U-nets.
        pools1 / pools2: pooling factor per axis between levels (len = levels - 1).
        kernels1 / kernels2: convolution kernel per axis at each level.
        stage1_factor: integer downsampling per axis from full resolution to stage 1.
        stage1_patch: stage-1 window (coarse voxels) at inference: the stage-1 grid of a
            median training image. A larger input is covered by windows of this size, so
            stage 1 never sees (or holds) more than it did in training; None (models from
            before planning) lets inference choose a bounded window.
        patch: stage-2 patch size (voxels), also the sliding-window size at inference.
        spacing: voxel spacing (mm) the model was trained at; inputs are resampled to it.
        dropout: decoder dropout probability (MC-dropout uncertainty uses it).
        checkpoint: activation checkpointing on encoder blocks while training.
        overlap / sigma_scale: sliding-window overlap and Gaussian blending width.
        refiner_channels: widths per level of the shape-correcting network trained by
            ``--cooperative`` (:class:`cooperative.ShapeRefiner`, on stage 2's first
            pools and kernels); () for none (every model from before it).
    """

    in_channels: int = 1
    context_frames: tuple[str, ...] = ()
    labels: tuple[int, ...] = (0, 1, 2, 3)
    label_names: tuple[str, ...] = ("background", "LV", "myocardium", "RV")
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    stages: int = 2
    channels1: tuple[int, ...] = (8, 16, 32, 64)
    channels2: tuple[int, ...] = (16, 32, 64, 128)
    pools1: tuple[Triple, ...] = ((2, 2, 1), (2, 2, 1), (2, 2, 1))
    pools2: tuple[Triple, ...] = ((2, 2, 1), (2, 2, 1), (2, 2, 1))
    kernels1: tuple[Triple, ...] = ((3, 3, 3),) * 4
    kernels2: tuple[Triple, ...] = ((3, 3, 3),) * 4
    stage1_factor: Triple = (2, 2, 1)
    stage1_patch: Triple | None = None
    patch: Triple = (64, 64, 16)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dropout: float = 0.1
    checkpoint: bool = True
    overlap: float = 0.5
    sigma_scale: float = 0.125
    normalisation: str = "zscore-clip-0.5-99.5"
    refiner_channels: tuple[int, ...] = ()

    @property
    def net_channels(self) -> int:
        """Input channels of the networks: the image channels at the frame and at each
        context frame."""
        return self.in_channels * (1 + len(self.context_frames))

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CascadeConfig":
        """Rebuild from model.json; tuples come back from JSON lists; unknown keys fail."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        out = {}
        for k, v in d.items():
            if k == "regions":
                out[k] = {str(r): tuple(int(x) for x in vals) for r, vals in v.items()}
            elif isinstance(v, list):
                out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            else:
                out[k] = v
        return cls(**out)


def stage1_factors(spacing, factor: int) -> Triple:
    """Per-axis integer downsampling for stage 1: the finest axis by ``factor``, every
    axis only as far as ``factor x finest spacing`` (the 10 mm cardiac axis is left alone).

    Example:
        >>> stage1_factors((1.8, 1.8, 10.0), 2)
        (2, 2, 1)
    """
    target = min(spacing) * factor
    return tuple(int(max(1, min(factor, target / s + 1e-6))) for s in spacing)


def plan_levels(shape, spacing, n_levels: int = 4, even: bool = True
                ) -> tuple[tuple, tuple, tuple]:
    """Pools and kernels for a U-net seeing ``shape`` voxels at ``spacing`` mm.

    Args:
        even: pool an axis only while its size is even (a given patch is used as is);
            False plans for a size that will be rounded to the pool product afterwards.

    Returns:
        (pools, kernels, divisor): ``n_levels - 1`` pool triples, ``n_levels`` kernel
        triples, and the per-axis product of pools (input sizes must be multiples of it).

    Example:
        >>> plan_levels((96, 96, 10), (1.8, 1.8, 10.0))[0]
        ((2, 2, 1), (2, 2, 1), (2, 2, 2))
    """
    size = [int(s) for s in shape]
    sp = [float(s) for s in spacing]
    pools, kernels = [], []
    for level in range(n_levels):
        finest = min(sp)
        kernels.append(tuple(1 if s > 3 * finest else 3 for s in sp))
        if level == n_levels - 1:
            break
        pool = tuple(2 if (s <= 2 * finest and n // 2 >= MIN_AXIS
                           and (n % 2 == 0 or not even)) else 1 for s, n in zip(sp, size))
        pools.append(pool)
        size = [n // p for n, p in zip(size, pool)]
        sp = [s * p for s, p in zip(sp, pool)]
    divisor = tuple(int(_prod(p[a] for p in pools)) for a in range(3))
    return tuple(pools), tuple(kernels), divisor


def divisor_of(pools) -> Triple:
    """Per-axis product of the pooling factors."""
    return tuple(int(_prod(p[a] for p in pools)) for a in range(3))


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out
