"""AHA segments of a known geometry and strain of known deformations
(medflow.cardiac.aha / medflow.cardiac.strain)."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.cardiac.aha import aha_axes, aha_segments, long_axis_segments, short_axis_angle
from medflow.cardiac.strain import label_wall, peak_strain, strain_curves


def test_aha_segments_of_known_angles_and_depths():
    # RV insertions at 60 (anterior) and 120 degrees: the septum lies between them.
    angles = np.array([75.0, 105.0, 150.0, 210.0, 270.0, 0.0])
    expected_basal = [2, 3, 4, 5, 6, 1]
    assert aha_segments(np.full(6, 0.1), angles, 60.0, 120.0).tolist() == expected_basal
    assert aha_segments(np.full(6, 0.5), angles, 60.0, 120.0).tolist() == [
        s + 6 for s in expected_basal]
    # Apical ring: four 90-degree sectors centred on the septum (90 degrees).
    apical = aha_segments(np.full(4, 0.8), np.array([90.0, 180.0, 270.0, 0.0]), 60.0, 120.0)
    assert apical.tolist() == [14, 15, 16, 13]
    assert aha_segments(np.array([1.2]), np.array([0.0]), 60.0, 120.0).tolist() == [17]
    with pytest.raises(ValueError):
        aha_segments(np.zeros(1), np.zeros(1), 120.0, 60.0)


def test_long_axis_segments_septal_and_lateral_bands():
    depth = np.array([0.1, 0.5, 0.9, 0.9, 0.5, 0.1, 0.5])
    angle = np.array([90.0, 90.0, 90.0, 270.0, 270.0, 270.0, 0.0])
    assert long_axis_segments(depth, angle, 60.0, 120.0).tolist() == [1, 2, 3, 4, 5, 6, 0]


def test_short_axis_angle_convention():
    axes = aha_axes(np.array([0.0, 0.0, 2.0]), np.array([1.0, 0.0, 0.3]))
    pts = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    ang = short_axis_angle(pts, np.zeros(3), axes)
    assert ang[0] == pytest.approx(90.0)            # towards the septum
    assert ang[2] == pytest.approx(-90.0)           # the lateral wall
    assert abs(ang[1]) == pytest.approx(0.0) or abs(ang[1]) == pytest.approx(180.0)


def _cylinder_wall(frames: int = 4, radius_scale=None, height_scale=None):
    """A thick-walled cylinder wall grid (T, L, A, 3): axis +z, base z=0, apex z=-60."""
    L, A = 12, 24
    z = -np.linspace(0.0, 55.0, L)
    phi = np.arange(A) / A * 2 * np.pi
    endo, epi = [], []
    for t in range(frames):
        s = 1.0 if radius_scale is None else radius_scale[t]
        h = 1.0 if height_scale is None else height_scale[t]
        for r, out in ((20.0, endo), (30.0, epi)):
            x = r * s * np.cos(phi)[None].repeat(L, 0)
            y = r * s * np.sin(phi)[None].repeat(L, 0)
            out.append(np.stack([x, y, (h * z)[:, None].repeat(A, 1)], -1))
    return np.asarray(endo), np.asarray(epi)


def _label(endo, epi):
    return label_wall(endo, epi, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]),
                      np.zeros(3), np.array([0.0, 0.0, -60.0]), (60.0, 120.0))


def test_zero_motion_gives_zero_strain():
    wall = _label(*_cylinder_wall())
    peaks = peak_strain(strain_curves(wall))
    assert len(peaks) == 3 * 1 + 16 + 16 + 6
    assert all(abs(v) < 1e-9 for v in peaks.values() if np.isfinite(v))
    assert np.isfinite(peaks["ecc_global_pct"]) and np.isfinite(peaks["ell_global_pct"])


def test_uniform_contraction_gives_the_analytic_strains():
    """Radii scaled by s (the wall thins in proportion) and length by h: Ecc = Err =
    100 (s - 1), Ell = 100 (h - 1), in every segment."""
    s, h = np.array([1.0, 0.9, 0.8, 0.95]), np.array([1.0, 0.95, 0.85, 0.9])
    peaks = peak_strain(strain_curves(_label(*_cylinder_wall(4, s, h))))
    assert peaks["ecc_global_pct"] == pytest.approx(-20.0, abs=1e-6)
    assert peaks["ell_global_pct"] == pytest.approx(-15.0, abs=1e-6)
    assert peaks["ecc_aha07_pct"] == pytest.approx(-20.0, abs=1e-6)
    assert peaks["ell_la2_pct"] == pytest.approx(-15.0, abs=1e-6)
    # Err's peak is the largest value: 0 at ED (the wall only thins here).
    assert peaks["err_global_pct"] == pytest.approx(0.0, abs=1e-6)
