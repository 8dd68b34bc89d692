"""The fit's optimisers (:mod:`medflow.motion.optim`)."""

import torch

from medflow.motion.optim import adam


def _quadratic(params, centre):
    return lambda: ((params - centre) ** 2).sum()


def test_adam_started_at_an_optimum_stays_there():
    """Adam's normalised first steps move every entry by about ``step`` whatever the
    gradient's size: from a start within gradient noise of the optimum (a frame identical
    to the previous one) the result must not be worse than the start (it was: the static
    cine's LVEF of 2 % and collapsed wall cell)."""
    centre = torch.tensor([1e-4, -2e-4, 5e-5])
    params = torch.zeros(3, requires_grad=True)
    objective = _quadratic(params, centre)
    start_loss = float(objective().detach())
    adam(params, torch.full((3,), 0.5), objective, 8)
    assert float(objective().detach()) <= start_loss
    assert float(params.detach().abs().max()) < 1e-3


def test_adam_still_descends_from_far_away():
    centre = torch.tensor([3.0, -2.0])
    params = torch.zeros(2, requires_grad=True)
    objective = _quadratic(params, centre)
    start_loss = float(objective().detach())
    adam(params, torch.full((2,), 0.5), objective, 40)
    assert float(objective().detach()) < 0.01 * start_loss
