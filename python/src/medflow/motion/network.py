"""The motion network of ``estimate-motion-mesh train`` / ``predict``: one pass from a
frame's probed label maps (:mod:`medflow.motion.probe`) to that frame's motion.

The motion has the form ``fit`` uses (:mod:`medflow.motion.fit`): the 13 kinematic
parameters (:mod:`medflow.motion.kinematic`) carry the global motion, and a smooth
displacement on top, here one 3-vector per node (heart frame, mm) spread onto the
vertices by :class:`~medflow.motion.probe.NodeWeights`. The nodes share one small
network, as the points of a point cloud do (PointNet, Qi et al., CVPR 2017), with a
global summary pooled from all nodes: a few tens of thousands of weights learn from a
cohort of tens of subjects. The multi-view motion seed (MulViMotion, Meng et al., IEEE TMI
2022) likewise predicts motion from all views at once, trained through a mesh slicer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from medflow.motion.kinematic import N_PARAMS
from medflow.motion.probe import FEATURES


@dataclass
class NetConfig:
    """Architecture (saved in the model card)."""

    hidden: int = 64
    glob: int = 128
    shape_params: int = 7

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        """Raises TypeError (unknown field) or ValueError (not an integer >= 1)."""
        cfg = cls(**d)
        for name, value in asdict(cfg).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return cfg


def _mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers[:-1])


class MotionNet(nn.Module):
    """Node features (T, K, FEATURES), node positions (K, 3), node surfaces (K,) and the
    ED template shape (7,) -> kinematic parameters (T, 13) and node displacements
    (T, K, 3) heart frame mm.

    Outputs are standardised: the buffers ``kin_mean``/``kin_std`` (13,) and ``node_std``
    (a scalar, mm) hold the training cohort's statistics, set before training.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, g = cfg.hidden, cfg.glob
        self.local = _mlp(FEATURES + 3 + 3, h, h)
        self.summary = _mlp(2 * h + cfg.shape_params, g, g)
        self.kin_head = _mlp(g, g, N_PARAMS)
        self.node_head = _mlp(h + g, h, 3)
        self.register_buffer("kin_mean", torch.zeros(N_PARAMS))
        self.register_buffer("kin_std", torch.ones(N_PARAMS))
        self.register_buffer("node_std", torch.ones(()))
        self.register_buffer("shape_mean", torch.zeros(cfg.shape_params))
        self.register_buffer("shape_std", torch.ones(cfg.shape_params))

    def forward(self, feats: torch.Tensor, position: torch.Tensor, surface: torch.Tensor,
                shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T, K, _ = feats.shape
        onehot = nn.functional.one_hot(surface, 3).to(feats.dtype)
        x = torch.cat([feats, position.expand(T, K, 3), onehot.expand(T, K, 3)], -1)
        local = self.local(x)                                            # (T, K, h)
        z = ((shape - self.shape_mean) / self.shape_std).expand(T, -1)
        g = self.summary(torch.cat([local.mean(1), local.amax(1), z], -1))  # (T, g)
        kin = self.kin_mean + self.kin_std * self.kin_head(g)
        nodes = self.node_head(torch.cat([local, g[:, None].expand(T, K, -1)], -1))
        return kin, self.node_std * nodes
