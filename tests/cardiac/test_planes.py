"""The long-axis rule shared by super-resolve and estimate-motion-mesh."""

from __future__ import annotations

import numpy as np

from medflow.cardiac.planes import long_axis_problem
from medflow.io import make_affine

SA = make_affine((2.0, 2.0, 10.0), None, (0.0, 0.0, 0.0))      # slices along world z
SA_SHAPE = (20, 20, 8)
#: an x-z plane (normal along world y) through the middle of the stack
LA = make_affine((2.0, 2.0, 2.0), np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
                 (0.0, 20.0, 70.0))


def _plane(value=1, frames=None):
    data = np.zeros((20, 40, 1) + ((frames,) if frames else ()), np.uint8)
    data[5:15, 5:30, 0] = value
    return data


def test_a_perpendicular_plane_through_the_stack_is_fine():
    assert long_axis_problem(_plane(), LA, SA_SHAPE, SA) is None
    assert long_axis_problem(_plane(frames=3), LA, SA_SHAPE, SA) is None


def test_a_plane_parallel_to_the_slices_is_refused_even_inside_the_stack():
    inside = make_affine((2.0, 2.0, 10.0), None, (0.0, 0.0, 30.0))
    assert "parallel" in long_axis_problem(_plane(), inside, SA_SHAPE, SA)
    tilted = make_affine((2.0, 2.0, 10.0), _rotation_x(np.radians(20)), (0.0, 0.0, 30.0))
    assert "parallel" in long_axis_problem(_plane(), tilted, SA_SHAPE, SA)
    steep = make_affine((2.0, 2.0, 10.0), _rotation_x(np.radians(60)), (0.0, 0.0, 30.0))
    assert long_axis_problem(_plane(), steep, SA_SHAPE, SA) is None


def test_a_plane_outside_the_field_of_view_or_without_heart_is_refused():
    far = LA.copy()
    far[:3, 3] += (0.0, 500.0, 0.0)
    assert "does not cross" in long_axis_problem(_plane(), far, SA_SHAPE, SA)
    assert "no heart labels" in long_axis_problem(_plane(value=0), LA, SA_SHAPE, SA)
    # atria (4, 5) alone do not place the plane in the stack
    assert "no heart labels" in long_axis_problem(_plane(value=5), LA, SA_SHAPE, SA)


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
