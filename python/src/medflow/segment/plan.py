"""Planning the cascade from the data, as nnU-Net plans from a dataset fingerprint.

The fingerprint is the training images' median and largest shape (voxels, at the training
spacing) and that spacing. From it, under a training memory budget (default a 16 GB GPU):

* **patch**: a box of ``PATCH_VOXELS`` with equal sides in millimetres (nnU-Net starts from
  256^3; 96^3 keeps CPU training steps and inference windows about a second per core),
  clipped to the median shape and rounded down to the pooling product;
* **levels**: pool while an axis keeps at least ``MIN_AXIS`` voxels, up to ``MAX_LEVELS``
  (anisotropy-aware: :func:`config.plan_levels`);
* **widths**: ``BASE_WIDTH`` doubling per level (stage 1 half), the modest widths of the
  memory-efficient U-net; nnU-Net also keeps its widths and fits the patch instead;
* **stage-1 factor**: the smallest power of two (at least 2) that brings the median image
  to at most ``PATCH_VOXELS`` coarse voxels, so stage 1 never sees more than a stage-2
  patch; its window at inference (``stage1_patch``) is that median coarse grid;
* then, while one training step's estimate (:func:`memory.training_bytes`) exceeds the
  budget: coarser stage 1 if stage 1 dominates, else a smaller patch (the longest axis in
  mm first, down to ``MIN_PATCH`` voxels), else half the width. Training holds a whole
  image and its one-hot labels on the device, which no plan changes: when that alone
  is over the budget, the plan says so and fits the rest in a quarter of the budget.

Explicit options are kept as given (a note says when they exceed the budget).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from medflow.segment.config import CascadeConfig, divisor_of, plan_levels, stage1_factors
from medflow.segment.memory import GiB, gib, image_bytes, training_bytes

PATCH_VOXELS = 96**3
MAX_LEVELS = 5
BASE_WIDTH = 8
MIN_WIDTH = 4
MIN_PATCH = 16
DEFAULT_BUDGET = 16 * GiB
FACTORS = (2, 4, 8, 16, 32)

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Fingerprint:
    """What the plan reads from the training data."""

    median_shape: Triple
    largest_shape: Triple
    spacing: tuple[float, float, float]
    images: int

    @classmethod
    def of(cls, shapes, spacing) -> "Fingerprint":
        """From the (X, Y, Z) shapes of the training samples at ``spacing`` (mm)."""
        arr = np.asarray([tuple(s)[:3] for s in shapes], dtype=float)
        return cls(tuple(int(round(v)) for v in np.median(arr, axis=0)),
                   tuple(int(v) for v in arr.max(axis=0)),
                   tuple(float(s) for s in spacing), len(arr))


@dataclass
class Plan:
    """The planned (or given) architecture and the estimate it was checked against."""

    fingerprint: Fingerprint
    config: CascadeConfig
    budget_bytes: int
    train_bytes: int
    given: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log: what was chosen, from what, under which budget."""
        cfg, fp = self.config, self.fingerprint
        s1 = (f"stage-1 factor {'x'.join(map(str, cfg.stage1_factor))} "
              f"(window {'x'.join(map(str, cfg.stage1_patch))}), " if cfg.stages == 2 else "")
        given = f"; given: {', '.join(self.given)}" if self.given else ""
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (f"plan from {fp.images} image(s), median {'x'.join(map(str, fp.median_shape))}"
                f" at {'x'.join(f'{s:g}' for s in fp.spacing)} mm: patch "
                f"{'x'.join(map(str, cfg.patch))}, {len(cfg.channels2)} levels, widths "
                f"{cfg.channels2[0]}-{cfg.channels2[-1]}, {s1}overlap {cfg.overlap}; "
                f"training step about {gib(self.train_bytes)} of {gib(self.budget_bytes)}"
                f"{given}{notes}")

    def card(self) -> dict:
        """The plan as recorded in the model card."""
        return {"fingerprint": asdict(self.fingerprint), "budget_bytes": self.budget_bytes,
                "train_step_estimate_bytes": self.train_bytes, "given": self.given,
                "notes": self.notes, "patch": list(self.config.patch),
                "levels": len(self.config.channels2),
                "channels1": list(self.config.channels1),
                "channels2": list(self.config.channels2),
                "stage1_factor": list(self.config.stage1_factor),
                "stage1_patch": list(self.config.stage1_patch or []),
                "overlap": self.config.overlap}


def initial_patch(fp: Fingerprint, voxels: int = PATCH_VOXELS) -> Triple:
    """A box of about ``voxels`` with equal sides in mm, clipped to the median shape
    (rounded to whole voxels: header spacings carry float32 noise)."""
    edge_mm = (voxels * math.prod(fp.spacing)) ** (1 / 3)
    return tuple(max(1, min(m, round(edge_mm / s))) for m, s in zip(fp.median_shape, fp.spacing))


def plan_cascade(fp: Fingerprint, budget: int = DEFAULT_BUDGET, *, patch=None,
                 stage1_factor: int | None = None, channels: int | None = None,
                 levels: int | None = None, stages: int = 2, patches: int = 2,
                 copies: int = 1, **cfg_fields) -> Plan:
    """Plan patch, levels, widths and stage-1 factor for ``fp`` under ``budget`` bytes.

    Args:
        patch / stage1_factor / channels / levels: explicit choices (kept as given; the
            patch is clipped to the largest image).
        patches / copies: patches per training step and appearance copies (gin-ipa: 2).
        cfg_fields: the other :class:`CascadeConfig` fields (labels, in_channels, ...).

    Returns:
        the plan; deterministic in its arguments.

    Example:
        >>> fp = Fingerprint((96, 96, 96), (96, 96, 96), (0.02, 0.02, 0.02), 2)
        >>> plan_cascade(fp).config.patch
        (96, 96, 96)
    """
    given = [name for name, v in (("patch", patch), ("stage1_factor", stage1_factor),
                                  ("channels", channels), ("levels", levels)) if v is not None]
    sp = fp.spacing
    floor = [min(MIN_PATCH, n) for n in fp.median_shape]
    size = (tuple(int(min(p, n)) for p, n in zip(patch, fp.largest_shape)) if patch
            else initial_patch(fp))
    factor = stage1_factor or next((f for f in FACTORS if math.prod(stage1_grid_of(
        fp.median_shape, stage1_factors(sp, f))) <= PATCH_VOXELS), FACTORS[-1])
    width, notes = channels or BASE_WIDTH, []
    cfg = _config(fp, size, factor, width, levels, stages, patch is not None, cfg_fields)
    fixed = image_bytes(cfg, fp.median_shape, copies)
    room = budget
    if fixed > 3 * budget / 4:
        notes.append(f"a training image with its one-hot labels alone needs {gib(fixed)}")
        room = fixed + budget / 4
    while True:
        cfg = _config(fp, size, factor, width, levels, stages, patch is not None, cfg_fields)
        est = training_bytes(cfg, fp.median_shape, patches, copies)
        if est <= room:
            break
        s1_share = est - training_bytes(CascadeConfig(**{**cfg.to_dict(), "stages": 1}),
                                        fp.median_shape, patches, copies)
        div = divisor_of(cfg.pools2)
        if stage1_factor is None and stages == 2 and s1_share > est / 2 \
                and factor < FACTORS[-1]:
            factor *= 2
        elif patch is None and any(n - d >= low for n, d, low in zip(cfg.patch, div, floor)):
            axis = max(range(3), key=lambda a: (cfg.patch[a] * sp[a]
                                                if cfg.patch[a] - div[a] >= floor[a] else -1))
            size = tuple(n - div[a] if a == axis else n for a, n in enumerate(cfg.patch))
        elif channels is None and width > MIN_WIDTH:
            width //= 2
        else:
            notes.append("over budget even at the smallest plan" if not given
                         else "over budget with the given options")
            break
    return Plan(fp, cfg, int(budget), int(est), given, notes)


def stage1_grid_of(shape, factors) -> Triple:
    return tuple(-(-int(n) // f) for n, f in zip(shape, factors))


def _config(fp: Fingerprint, size, factor: int, width: int, levels: int | None, stages: int,
            patch_given: bool, fields: dict) -> CascadeConfig:
    """The config for one candidate: pools for the patch (rounded to them unless given)."""
    sp = fp.spacing
    n_levels = levels or MAX_LEVELS
    if not patch_given:
        _, _, div = plan_levels(size, sp, n_levels, even=False)
        size = tuple(max(d, n // d * d) for n, d in zip(size, div))
    pools2, kernels2, _ = plan_levels(size, sp, n_levels)
    if levels is None:                       # drop trailing levels that pool nothing
        while len(pools2) > 1 and pools2[-1] == (1, 1, 1):
            pools2, kernels2 = pools2[:-1], kernels2[:-1]
    n_levels = len(kernels2)
    f = stage1_factors(sp, factor)
    low = stage1_grid_of(fp.median_shape, f)
    pools1, kernels1, div1 = plan_levels(low, [s * k for s, k in zip(sp, f)], n_levels)
    cfg = CascadeConfig(**{
        **fields, "stages": stages, "patch": tuple(int(n) for n in size),
        "channels1": tuple(max(MIN_WIDTH, width // 2) * 2**i for i in range(n_levels)),
        "channels2": tuple(width * 2**i for i in range(n_levels)),
        "pools1": pools1, "pools2": pools2, "kernels1": kernels1, "kernels2": kernels2,
        "stage1_factor": f, "spacing": tuple(sp),
        "stage1_patch": (tuple(-(-n // d) * d for n, d in zip(low, div1)) if stages == 2
                         else None)})
    return cfg
