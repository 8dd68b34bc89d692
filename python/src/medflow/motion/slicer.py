"""Differentiable mesh-to-image slicing: cut the meshes of every frame by every acquired
plane and compare each cross-section with that plane's segmentation.

For a plane with unit normal n through o, a triangle whose vertices lie on both sides is
cut along a segment whose ends interpolate its two crossing edges,
``p = v_a + h_a / (h_a - h_b) (v_b - v_a)`` with ``h = (v - o) . n``: differentiable in
the vertex positions (which triangles cross is a discrete choice made per evaluation, as a
rasteriser's coverage is). Each segment is compared with the plane's label map through
the signed distance to the label boundary (a soft, sub-pixel contour distance), sampled at
the segment's ends and middle (Simpson's rule along the segment), and the cross-section's
enclosed area (the shoelace sum over oriented segments) with the label area. The seeds'
rasteriser compares rendered and segmented masks; distances give the same gradients
without rendering (Meng et al., MICCAI 2022 and MulViMotion, IEEE TMI 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PlaneTargets:
    """Planes and their label-derived targets, as tensors (float32 or float64).

    Attributes:
        origin, normal, u, v: (P, 3) plane origin (pixel (0, 0) centre), unit normal and
            unit in-plane axes, world mm.
        pixel: (P, 2) pixel spacing along u and v, mm.
        crop: (P, 2) pixel offset of the distance maps' first row/column.
        size: (P, 2) rows and columns of each plane's maps (the rest is padding).
        sdf: (T, P, C, H, W) signed distance (mm, negative inside) to each class's
            boundary, on the cropped grid; rows along u, columns along v.
        present: (T, P, C) bool: the class is in the plane's label map at that frame.
        area: (T, P, C) label area, mm^2.
        perimeter: (T, P, C) label boundary length estimate, mm (>= a floor).
        weight: (P,) relative weight of each plane.
        shift_index: (P,) index into the per-slice shift parameters, -1 for none.
    """

    origin: torch.Tensor
    normal: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    pixel: torch.Tensor
    crop: torch.Tensor
    size: torch.Tensor
    sdf: torch.Tensor
    present: torch.Tensor
    area: torch.Tensor
    perimeter: torch.Tensor
    weight: torch.Tensor
    shift_index: torch.Tensor

    @property
    def n_planes(self) -> int:
        return int(self.origin.shape[0])

    def frames(self, index) -> "PlaneTargets":
        """The targets of some frames only (``index``: a slice or index tensor)."""
        return PlaneTargets(self.origin, self.normal, self.u, self.v, self.pixel, self.crop,
                            self.size, self.sdf[index], self.present[index], self.area[index],
                            self.perimeter[index], self.weight, self.shift_index)


@dataclass
class Sections:
    """Cross-section segments of meshes (T frames) by planes: one row per cut triangle."""

    frame: torch.Tensor      # (S,) frame index
    plane: torch.Tensor      # (S,) plane index
    cls: torch.Tensor        # (S,) surface class of the triangle
    p1: torch.Tensor         # (S, 3) segment start, world mm (oriented: area > 0 inside)
    p2: torch.Tensor         # (S, 3) segment end


def cut(vertices: torch.Tensor, faces: torch.Tensor, face_cls: torch.Tensor,
        origin: torch.Tensor, normal: torch.Tensor) -> Sections:
    """Cut meshes by planes.

    Args:
        vertices: (T, V, 3) world mm.
        faces: (F, 3) long, outward-oriented triangles; face_cls: (F,) their surface class.
        origin, normal: (P, 3) planes.

    Returns:
        :class:`Sections`; each segment is oriented counter-clockwise about the plane
        normal around the enclosed region, so the shoelace sum gives a positive area.
    """
    h = torch.einsum("tvk,pk->tpv", vertices, normal) - (origin * normal).sum(-1)[None, :, None]
    hf = h[:, :, faces]                                              # (T, P, F, 3)
    pos = hf >= 0
    npos = pos.sum(-1)
    t_i, p_i, f_i = torch.nonzero((npos == 1) | (npos == 2), as_tuple=True)
    corner_pos = pos[t_i, p_i, f_i]                                  # (S, 3)
    lone_is_pos = npos[t_i, p_i, f_i] == 1
    lone = torch.where(lone_is_pos[:, None], corner_pos, ~corner_pos).int().argmax(-1)
    nxt, prv = (lone + 1) % 3, (lone + 2) % 3
    fv = faces[f_i]                                                  # (S, 3)
    hs = hf[t_i, p_i, f_i]
    vid = lambda k: fv.gather(1, k[:, None])[:, 0]                   # noqa: E731
    hk = lambda k: hs.gather(1, k[:, None])[:, 0]                    # noqa: E731
    va, vn, vp = (vertices[t_i, vid(k)] for k in (lone, nxt, prv))
    ha, hn, hp = hk(lone), hk(nxt), hk(prv)
    q1 = va + (ha / (ha - hn))[:, None] * (vn - va)
    q2 = va + (ha / (ha - hp))[:, None] * (vp - va)
    # The triangle (lone, next, prev) runs counter-clockwise seen from outside. With the
    # lone corner above the plane, walking q1 -> q2 keeps the inside on the left (about
    # +n); below, the walk reverses.
    p1 = torch.where(lone_is_pos[:, None], q1, q2)
    p2 = torch.where(lone_is_pos[:, None], q2, q1)
    return Sections(t_i, p_i, face_cls[f_i], p1, p2)


def bilinear(maps: torch.Tensor, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample maps (M, H, W) at map ``index`` and fractional pixel (x row, y column), each
    point within its own map's ``size`` (S, 2); points off it are clamped to its border.

    Returns:
        (values, distance in pixels from each point to the border it was clamped to).
    """
    _, H, W = maps.shape
    xmax, ymax = (size[:, 0] - 1).to(x.dtype), (size[:, 1] - 1).to(y.dtype)
    xc, yc = torch.minimum(x.clamp(min=0), xmax), torch.minimum(y.clamp(min=0), ymax)
    x0 = torch.minimum(xc.detach().floor(), (xmax - 1).clamp(min=0)).long()
    y0 = torch.minimum(yc.detach().floor(), (ymax - 1).clamp(min=0)).long()
    fx, fy = xc - x0, yc - y0
    flat = maps.reshape(-1)
    base = index * (H * W)
    g = lambda i, j: flat[base + i * W + j]                          # noqa: E731
    val = ((1 - fx) * (1 - fy) * g(x0, y0) + fx * (1 - fy) * g(x0 + 1, y0)
           + (1 - fx) * fy * g(x0, y0 + 1) + fx * fy * g(x0 + 1, y0 + 1))
    return val, torch.sqrt((x - xc) ** 2 + (y - yc) ** 2 + 1e-12) - 1e-6


def robust(d2: torch.Tensor, scale: float) -> torch.Tensor:
    """Geman-McClure-like bounded penalty of squared distances (mm^2): ~d^2 near 0,
    saturating at ``scale^2`` so a few wrong labels cannot drag the mesh far."""
    s2 = scale * scale
    return d2 * s2 / (d2 + s2)


def section_losses(sec: Sections, targets: PlaneTargets, shifts: torch.Tensor | None,
                   n_classes: int = 3, robust_mm: float = 6.0, absent_weight: float = 0.1
                   ) -> dict[str, torch.Tensor]:
    """Contour-distance and area terms of cross-sections against the label maps.

    Args:
        sec: from :func:`cut` (its frame indices index ``targets``' frames).
        targets: the planes' targets.
        shifts: (S_sa, 2) in-plane shift (mm, along u and v) of each short-axis slice's
            content (breath-hold misregistration), or None.
        n_classes: surface classes.
        robust_mm: scale of the bounded distance penalty.
        absent_weight: weight of the area term where a class is absent from the plane.

    Returns:
        ``distance`` (mean penalised squared distance, mm^2, length-weighted over the
        sections of classes the label maps hold; absent classes are the area term's),
        ``area`` (mean squared area error over perimeter, mm^2), and per plane-and-class
        ``rms_mm`` (T, P, C) for QC (NaN where nothing was cut), ``mesh_area`` (T, P, C)
        and ``distance_sum`` (the length-weighted penalty before its normalisation, whose
        weight sum is held constant in the gradient, as the label area's boundary length).
    """
    T, P, C = targets.present.shape
    o, u, v = targets.origin[sec.plane], targets.u[sec.plane], targets.v[sec.plane]
    pix, crop = targets.pixel[sec.plane], targets.crop[sec.plane]
    off = torch.zeros_like(pix)
    if shifts is not None:
        si = targets.shift_index[sec.plane]
        has = si >= 0
        off = torch.where(has[:, None], shifts[si.clamp(min=0)], off)
    # Oriented area: ((p1 - o) x (p2 - o)) . n / 2.
    n = targets.normal[sec.plane]
    a1, a2 = sec.p1 - o, sec.p2 - o
    tri = 0.5 * (torch.cross(a1, a2, dim=-1) * n).sum(-1)
    key = (sec.frame * P + sec.plane) * C + sec.cls
    mesh_area = torch.zeros(T * P * C, dtype=tri.dtype).index_add(0, key, tri).reshape(T, P, C)
    # Contour distance at ends and middle (Simpson weights 1, 4, 1), times segment length.
    length = torch.linalg.norm(sec.p2 - sec.p1, dim=-1)
    present = targets.present.reshape(-1)[key]
    maps = targets.sdf.reshape(-1, *targets.sdf.shape[-2:])
    total_w = torch.zeros((), dtype=tri.dtype)
    total = torch.zeros((), dtype=tri.dtype)
    sq_sum = torch.zeros(T * P * C, dtype=tri.dtype)
    len_sum = torch.zeros(T * P * C, dtype=tri.dtype)
    for frac, wgt in ((0.0, 1.0), (0.5, 4.0), (1.0, 1.0)):
        p = sec.p1 + frac * (sec.p2 - sec.p1) - o
        x = ((p * u).sum(-1) + off[:, 0]) / pix[:, 0] - crop[:, 0]
        y = ((p * v).sum(-1) + off[:, 1]) / pix[:, 1] - crop[:, 1]
        val, beyond = bilinear(maps, key, x, y, targets.size[sec.plane])
        d = val + beyond * torch.where(val >= 0, 1.0, -1.0) * pix[:, 0]
        w = wgt / 6.0 * length * present * targets.weight[sec.plane]
        total = total + (w * robust(d * d, robust_mm)).sum()
        total_w = total_w + w.sum()
        sq_sum = sq_sum.index_add(0, key, (w * d * d).detach())
        len_sum = len_sum.index_add(0, key, w.detach())
    distance = total / total_w.detach().clamp(min=1e-6)
    # Area error over the boundary length (~ the mean normal offset, mm): the label's, or
    # the cross-section's where it is longer (a section where the label is absent).
    section_length = torch.zeros(T * P * C, dtype=tri.dtype).index_add(
        0, key, length.detach()).reshape(T, P, C)
    err = (mesh_area - targets.area) / torch.maximum(targets.perimeter, section_length)
    # Where the label map lacks the class, shrinking the section in-plane (the area's
    # gradient) is the wrong cure (the mesh should leave the plane, e.g. a base above the
    # valve plane, which the long-axis views see): such planes only weigh ABSENT_WEIGHT.
    wp = targets.weight[None, :, None] * torch.where(targets.present, 1.0, absent_weight)
    area = (wp * err ** 2).sum() / wp.sum()
    rms = torch.sqrt(sq_sum / len_sum).reshape(T, P, C)
    rms = torch.where(len_sum.reshape(T, P, C) > 0, rms, torch.full_like(rms, float("nan")))
    return {"distance": distance, "area": area, "rms_mm": rms, "mesh_area": mesh_area,
            "distance_sum": total}
