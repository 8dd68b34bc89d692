"""Feature options shared by the rank and simulate commands (no torch import here, so
ranking a stored feature table stays light)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FeatureOptions:
    """How features are computed (recorded in the sidecar)."""

    unit: str = "subject"
    grid: tuple[int, int, int] = (16, 16, 8)
    latent: int = 16
    vae_steps: int = 300
    uncertainty: str = "entropy"
    mc_samples: int = 1
    seed: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)
