"""The differentiable slicer and mesh volumes against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medflow.motion.slicer import cut, section_losses
from medflow.motion.targets import View, build_targets
from medflow.motion.template import LV_ENDO, LV_EPI, RV_ENDO, Topology, closed_volumes

A, B, C = 30.0, 20.0, 45.0          # ellipsoid semi-axes, mm


def ellipsoid(subdivisions: int = 4):
    """Vertices (1, V, 3) float64 and outward faces of a closed ellipsoid mesh."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    verts = torch.as_tensor(np.asarray(sphere.vertices) * [A, B, C])[None]
    return verts, torch.as_tensor(np.asarray(sphere.faces), dtype=torch.long)


def section_area(verts, faces, origin, normal) -> float:
    o, n = torch.as_tensor([origin], dtype=verts.dtype), torch.as_tensor([normal],
                                                                         dtype=verts.dtype)
    sec = cut(verts, faces, torch.zeros(len(faces), dtype=torch.long), o, n)
    return float(0.5 * (torch.cross(sec.p1 - o, sec.p2 - o, dim=-1) * n).sum()), sec


def test_axial_cut_of_ellipsoid_is_the_analytic_ellipse():
    verts, faces = ellipsoid()
    z0 = 15.0
    area, sec = section_area(verts, faces, (0.0, 0.0, z0), (0.0, 0.0, 1.0))
    scale = np.sqrt(1 - (z0 / C) ** 2)
    a, b = A * scale, B * scale
    assert area == pytest.approx(np.pi * a * b, rel=5e-3)
    pts = torch.cat([sec.p1, sec.p2]).numpy()
    assert np.allclose(pts[:, 2], z0, atol=1e-9)
    radius = np.sqrt((pts[:, 0] / a) ** 2 + (pts[:, 1] / b) ** 2)
    assert np.all(np.abs(radius - 1) < 5e-3)       # chords of the ellipsoid's facets


def test_oblique_central_cut_has_the_analytic_area():
    """A central plane with unit normal n cuts the ellipse of area pi abc / |(an_x, bn_y,
    cn_z)| (a long-axis-like, oblique plane)."""
    verts, faces = ellipsoid()
    n = np.array([0.3, -0.5, 0.8])
    n /= np.linalg.norm(n)
    area, _ = section_area(verts, faces, (0.0, 0.0, 0.0), tuple(n))
    expected = np.pi * A * B * C / np.linalg.norm(n * [A, B, C])
    assert area == pytest.approx(expected, rel=5e-3)


def test_plane_missing_the_mesh_cuts_nothing():
    verts, faces = ellipsoid(3)
    area, sec = section_area(verts, faces, (0.0, 0.0, C + 1.0), (0.0, 0.0, 1.0))
    assert area == 0.0 and len(sec.frame) == 0


def test_closed_mesh_volume_is_analytic():
    verts, faces = ellipsoid()
    tri = verts[0][faces]
    vol = float((tri[:, 0] * torch.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6000.0)
    assert vol == pytest.approx(4 / 3 * np.pi * A * B * C / 1000, rel=5e-3)


def test_template_volumes_match_the_analytic_half_ellipsoids():
    """The template's LV cavity and epicardium are half-ellipsoids closed at the base:
    2/3 pi a^2 c (mL) within the discretisation error; the RV cavity is positive."""
    from medflow.motion.template import template_vertices

    topo = Topology()
    shape = torch.tensor([25.0, 60.0, 10.0, 8.0, 900.0, 1.2, 55.0], dtype=torch.float64)
    vols = closed_volumes(template_vertices(topo, shape), topo).numpy()
    assert vols[LV_ENDO] == pytest.approx(2 / 3 * np.pi * 25.0 ** 2 * 60.0 / 1000, rel=0.02)
    assert vols[LV_EPI] == pytest.approx(2 / 3 * np.pi * 35.0 ** 2 * 68.0 / 1000, rel=0.02)
    assert vols[RV_ENDO] > 5.0


def _disc_view(radius_px: float = 6.0) -> View:
    """A 1-slice, 1-frame 'short-axis' view holding an LV disc (label 1) at the origin."""
    n = 32
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    disc = ((ii - 15.5) ** 2 + (jj - 15.5) ** 2) <= radius_px ** 2
    labels = np.where(disc, 1, 0).astype(np.uint8)[:, :, None, None]
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = [-15.5 * 1.5, -15.5 * 1.5, 0.0]
    return View("sa", labels, affine)


def test_contour_distance_is_zero_on_the_label_boundary_and_grows_off_it():
    targets, _ = build_targets([_disc_view()], dtype=torch.float64)
    verts, faces = ellipsoid(4)
    cls = torch.zeros(len(faces), dtype=torch.long)            # as LV endocardium
    losses = []
    for r in (9.5, 13.0):           # the disc's boundary: ~6.3 px * 1.5 mm ~ 9.5 mm
        v = verts * torch.tensor([r / A, r / B, 1.0], dtype=torch.float64)  # circular cut
        sec = cut(v, faces, cls, targets.origin, targets.normal)
        losses.append(float(section_losses(sec, targets, None)["distance"]))
    assert losses[0] < 1.0 < losses[1]


def test_loss_gradients_match_finite_differences():
    targets, _ = build_targets([_disc_view()], dtype=torch.float64)
    verts, faces = ellipsoid(2)
    cls = torch.zeros(len(faces), dtype=torch.long)
    base = verts * torch.tensor([10.0 / A, 8.0 / B, 1.0], dtype=torch.float64)
    base = base + torch.tensor([0.3, -0.4, 0.7], dtype=torch.float64)
    shifts = torch.tensor([[0.4, -0.2]], dtype=torch.float64, requires_grad=True)

    def loss(v, s):
        # The normalisers (total weight, boundary length) are held constant in the
        # gradient on purpose: check the terms they divide.
        sec = cut(v, faces, cls, targets.origin, targets.normal)
        terms = section_losses(sec, targets, s)
        return terms["distance_sum"], terms["mesh_area"]

    # The vertices nearest the plane (those the cut moves); steps small enough that no
    # triangle changes sides of the plane.
    near = torch.argsort(base[0, :, 2].abs())[:12]

    def loss_near(d, s):
        return loss(base.index_add(1, near, d), s)

    d = torch.zeros(1, len(near), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss_near, (d, shifts), eps=1e-6, atol=1e-5, rtol=1e-3)
