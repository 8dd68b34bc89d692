"""MR artefacts at fixed severities, for evaluating segmenters on corrupted test subjects.

TorchIO's artefact transforms (Pérez-García et al. 2021; motion and ghosting after Shaw et
al. 2019, spikes as a k-space spike, bias field as a smooth multiplicative polynomial,
Gaussian noise), each with one fixed parameter range (:data:`ARTEFACTS`) and drawn from a
seeded generator, so the same image, kind and seed give the same bytes. They are all
intensity transforms: a label map is never touched (the anatomy the truth describes does
not move; motion is simulated in k-space as TorchIO does, ghosting along the in-plane
phase-encoding axis y).

A cine (X, Y, Z, T) is corrupted frame by frame with one draw (the frames are TorchIO's
channels).
"""

from __future__ import annotations

import numpy as np

#: The suite: kind -> (TorchIO transform, its fixed parameters). ``noise`` is given as a
#: fraction of the image's 99th intensity percentile (TorchIO's std is absolute).
ARTEFACTS: dict[str, tuple[str, dict]] = {
    "motion": ("RandomMotion", {"degrees": 4.0, "translation": 4.0, "num_transforms": 2}),
    "ghosting": ("RandomGhosting", {"num_ghosts": (4, 4), "axes": (1,),
                                    "intensity": (0.6, 0.6)}),
    "spike": ("RandomSpike", {"num_spikes": (1, 1), "intensity": (0.4, 0.4)}),
    "bias": ("RandomBiasField", {"coefficients": 0.5, "order": 3}),
    "noise": ("RandomNoise", {"std_fraction": 0.05}),
}


def corrupt(data: np.ndarray, affine: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """One artefact of the suite applied to an image.

    Args:
        data: (X, Y, Z) or (X, Y, Z, T) intensities.
        affine: 4x4 voxel-to-world (mm), used by motion (translations in mm).
        kind: a key of :data:`ARTEFACTS`.
        seed: seeds the draw (same seed, same bytes); the global torch generator is left
            as it was.

    Returns:
        float32 array of ``data``'s shape.

    Raises:
        ValueError: an unknown ``kind`` or a 2D/5D array.

    Example:
        >>> img = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32)
        >>> out = corrupt(img, np.eye(4), "ghosting", seed=1)
        >>> out.shape == img.shape and not np.allclose(out, img)
        True
    """
    import torch
    import torchio as tio

    if kind not in ARTEFACTS:
        raise ValueError(f"unknown artefact {kind!r}; expected one of {sorted(ARTEFACTS)}")
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{arr.ndim}D image: 3D or 3D+time only")
    tensor = torch.from_numpy(np.ascontiguousarray(
        arr[None] if arr.ndim == 3 else np.moveaxis(arr, 3, 0)))        # (C, X, Y, Z)
    name, params = ARTEFACTS[kind]
    if kind == "noise":
        std = params["std_fraction"] * float(np.percentile(arr, 99))
        params = {"std": (std, std)}
    transform = getattr(tio, name)(**params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = transform(tio.ScalarImage(tensor=tensor, affine=np.asarray(affine, float)))
    result = out.data.numpy().astype(np.float32)
    return result[0] if arr.ndim == 3 else np.moveaxis(result, 0, 3)
