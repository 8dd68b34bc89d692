"""Analytic strain and wall thickness of the phantom heart (``truth.json``), with the same
definitions as the motion tool (:mod:`medflow.cardiac.strain`, :mod:`medflow.cardiac.aha`).

The LV wall is sampled on a fine grid of paired material points on the exact ED
endocardium and epicardium (the same ``(u, phi)`` parametrisation as the tool's template:
endocardium ``(a cos u, -c sin u)``, epicardium ``((a + w) cos u, -(c + w) sin u)``) and
moved by the phantom's exact forward mapping; the RV insertion points are the RV
crescent's edges at ``theta = +-beta``.
"""

from __future__ import annotations

import numpy as np

from medflow.cardiac.strain import label_wall, peak_strain, strain_curves, wall_thickness
from medflow.phantom.heart import HeartModel

LEVELS, ANGLES = 48, 120


def _shell(radius: float, length: float, u: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """(L, A, 3) heart-frame points of a truncated prolate ellipsoid."""
    r = radius * np.cos(u)[:, None]
    z = np.broadcast_to(-length * np.sin(u)[:, None], (len(u), len(phi)))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def _grid_faces(levels: int, angles: int) -> np.ndarray:
    ids = np.arange(levels * angles).reshape(levels, angles)
    nxt = np.roll(ids, -1, axis=1)
    quads = np.stack([ids[:-1], ids[1:], nxt[:-1], nxt[:-1], ids[1:], nxt[1:]], -1)
    return quads.reshape(-1, 3)


def strain_truth(heart: HeartModel, frames: int) -> dict:
    """Peak strain (global, per AHA segment, per long-axis segment), their global curves
    over the cycle and wall thickness at ED of the phantom heart.

    Returns:
        ``ecc_global_pct``, ``ecc_aha01_pct`` ..., ``err_*``, ``ell_global_pct``,
        ``ell_la1_pct`` ..., ``wt_global_mm``, ``wt_max_mm``, ``wt_aha01_mm`` ... and
        ``ecc_global_pct_per_frame`` (and Err, Ell), ``aha_insertions_deg``.
    """
    p = heart.params
    u = np.arange(LEVELS) / LEVELS * (np.pi / 2)
    phi = np.arange(ANGLES) / ANGLES * (2 * np.pi)
    endo0 = _shell(p.a, p.c, u, phi)
    epi0 = _shell(p.a + p.w, p.c + p.w, u, phi)
    times = np.arange(frames) / frames
    move = lambda pts: np.stack([heart.forward(heart.to_world(pts.reshape(-1, 3)), t)  # noqa
                                 .reshape(pts.shape) for t in times])
    endo, epi = move(endo0), move(epi0)
    beta = np.degrees(p.rv_beta)
    insertions = (90.0 - beta, 90.0 + beta)       # anterior, inferior (cardiac.aha angles)
    rot = heart.rot
    wall = label_wall(endo, epi, rot[:, 2], rot[:, 0], heart.to_world(np.zeros((1, 3)))[0],
                      heart.to_world(np.array([[0.0, 0.0, -p.c]]))[0], insertions)
    curves = strain_curves(wall)
    out = peak_strain(curves)
    # The epicardial surface, finely (its apex tip closes the grid).
    fine = _shell(p.a + p.w, p.c + p.w, np.linspace(0, np.pi / 2, 4 * LEVELS + 1)[:-1],
                  np.arange(2 * ANGLES) / (2 * ANGLES) * 2 * np.pi)
    verts = np.concatenate([fine.reshape(-1, 3), [[0.0, 0.0, -(p.c + p.w)]]])
    faces = _grid_faces(fine.shape[0], fine.shape[1])
    last = np.arange(fine.shape[1]) + (fine.shape[0] - 1) * fine.shape[1]
    tip = np.stack([last, np.full_like(last, len(verts) - 1), np.roll(last, -1)], 1)
    out.update(wall_thickness(wall, heart.to_world(verts), np.concatenate([faces, tip])))
    for kind in ("ecc", "err", "ell"):
        out[f"{kind}_global_pct_per_frame"] = curves[kind]["global"].tolist()
    out["aha_insertions_deg"] = list(insertions)
    return out
