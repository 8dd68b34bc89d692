"""The slice encoder: a small CNN that turns a 64 x 64 slice into a unit embedding.

Small on purpose: it is trained on the cohort's own slices on CPU in minutes and embeds
hundreds of slices a second on two cores. ``stem`` then three stride-2 stages then global
average pooling; ``projector`` maps to the space of the contrastive loss (SimCLR: the
loss is taken after a projection head, the clustering uses the features before it);
``classifier`` holds the self-labelling head (one logit per cluster).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EncoderConfig:
    """Everything needed to rebuild the network (saved in the model card)."""

    widths: tuple[int, ...] = (8, 16, 32, 64)     # stem, then one stage per further width
    size: int = 64                                # input side in pixels (slices stored x2)
    scales: int = 2                               # input channels: whole slice, centre
    projection: int = 64                          # contrastive space dimension
    clusters: int = 0                             # classifier outputs (0: none yet)
    positions: int = 8                            # slices drawn per series
    frames: int = 2                               # frames drawn per slice position (cine)
    pooling: str = "avgmax"                       # spatial pooling: "avg" or "avgmax"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.setdefault("pooling", "avg")  # cards written before pooling was a choice
        if "widths" in known:
            known["widths"] = tuple(int(w) for w in known["widths"])
        return cls(**known)

    @property
    def features(self) -> int:
        return self.widths[-1] * (2 if self.pooling == "avgmax" else 1)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


#: Temperature the classifier's initial logits (cosine similarities) are divided by.
HEAD_TEMPERATURE = 0.1


class SliceEncoder(nn.Module):
    """Slices (B, scales, S, S) -> features (B, F), projections (B, P), cluster logits."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = _conv_bn_relu(cfg.scales, w[0], stride=2)              # S/2
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(a, b, stride=2), _conv_bn_relu(b, b))
            for a, b in zip(w[:-1], w[1:]))                                 # S/4, S/8, S/16
        f = cfg.features
        self.projector = nn.Sequential(nn.Linear(f, f), nn.ReLU(inplace=True),
                                       nn.Linear(f, cfg.projection))
        self.classifier = nn.Linear(f, cfg.clusters) if cfg.clusters else None

    def set_clusters(self, centres: torch.Tensor) -> None:
        """(Re)build the self-labelling head from unit cluster centres (k, F): its logits
        start as cosine similarity to each centre over a temperature of 0.1, so before
        any self-labelling a slice goes to its nearest centre."""
        k = int(centres.shape[0])
        self.cfg.clusters = k
        self.classifier = nn.Linear(self.cfg.features, k)
        with torch.no_grad():
            self.classifier.weight.copy_(centres / HEAD_TEMPERATURE)
            self.classifier.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, scales, S, S) -> (B, F) pooled features (not normalised)."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        if self.cfg.pooling == "avgmax":  # max: a few-pixel response is not averaged away
            return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1)   # (B, F)
        return h.mean(dim=(2, 3))                                           # (B, F)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, k) cluster logits (the head sees unit features)."""
        return self.classifier(F.normalize(feats, dim=1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, scales, S, S) -> (B, F) unit-length embeddings (what clustering uses)."""
        return F.normalize(self.features(x), dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(unit projections (B, P), cluster logits (B, k) or None)."""
        feats = self.features(x)
        proj = F.normalize(self.projector(feats), dim=1)
        logits = self.logits(feats) if self.classifier is not None else None
        return proj, logits


def supcon_loss(z: torch.Tensor, positive: torch.Tensor, ignore: torch.Tensor | None = None,
                temperature: float = 0.3) -> torch.Tensor:
    """Supervised-contrastive (SupCon) loss with metadata positives instead of labels.

    Args:
        z: (N, P) unit projections.
        positive: (N, N) bool, True where row j is a positive of row i (the diagonal is
            ignored): here neighbouring slices/frames of one series, and the two views of
            one slice.
        ignore: (N, N) bool, pairs that are neither positive nor negative (other slices of
            the same series: they may show something else, they are not another image).
        temperature: softmax temperature.

    Returns:
        Scalar loss: mean over rows with at least one positive of
        ``-mean_{p in P(i)} log softmax_{a}(z_i . z_a / t)[p]`` where ``a`` runs over the
        row's positives and negatives (Khosla et al. 2020).
    """
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    drop = self_mask if ignore is None else (self_mask | (ignore & ~positive))
    sim = (z @ z.T / temperature).masked_fill(drop, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = positive & ~self_mask
    count = pos.sum(1)
    has = count > 0
    mean_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)[has] / count[has]
    return -mean_pos.mean()


@dataclass
class TrainConfig:
    """Training hyperparameters (saved in the model card)."""

    steps: int = 600            # contrastive steps
    refine_steps: int = 150     # self-labelling steps (per round)
    rounds: int = 2             # self-labelling rounds (k-means again on the refined embedding)
    batch: int = 64             # anchors per step (x2 views)
    per_series: int = 2         # anchors drawn from each series in a step
    visit_mates: float = 1.0    # share of a batch's series drawn in visit pairs
    slice_reach: int = 0        # positives: position ranks at most this far apart
    strength: float = 1.0       # scales every augmentation range (augment.draw)
    lr: float = 3e-3
    temperature: float = 0.3
    keep: float = 0.6           # fraction of each cluster's series used as pseudo-labels
    max_series: int = 1000      # series sampled for training (assign reads every one)
    k_max: int = 30             # largest k the criterion tries
    extra: dict = field(default_factory=dict)
