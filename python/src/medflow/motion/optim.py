"""The two optimisers of the fit (:mod:`medflow.motion.fit`): L-BFGS with restarts for
the many B-spline coefficients, Adam with bounded steps for the few global parameters."""

from __future__ import annotations

import torch


def lbfgs(params: list[torch.Tensor], objective, evaluations: int) -> None:
    """Minimise ``objective()`` over ``params`` with L-BFGS (strong Wolfe line search),
    ``evaluations`` objective evaluations in all.

    Note:
        Where the set of cut triangles changes the loss has kinks; a line search that
        cannot satisfy the Wolfe conditions across one ends L-BFGS early, so it is
        restarted (fresh curvature history) while evaluations remain and it still
        improves.
    """
    count = [0]

    def closure():
        optim.zero_grad()
        loss = objective()
        loss.backward()
        count[0] += 1
        return loss

    best = None
    while count[0] < evaluations:
        optim = torch.optim.LBFGS(params, lr=1.0, max_iter=evaluations - count[0],
                                  max_eval=evaluations - count[0], history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-7,
                                  line_search_fn="strong_wolfe")
        before = count[0]
        loss = float(optim.step(closure).detach())
        if best is not None and loss > best - 1e-6 * abs(best) or count[0] - before < 3:
            break
        best = loss if best is None else min(best, loss)


def adam(params: torch.Tensor, step: torch.Tensor, objective, steps: int) -> None:
    """Minimise ``objective()`` over one parameter vector with Adam, ``step`` (same
    shape) the largest change per step of each entry, decaying to a tenth (cosine).
    ``params`` ends at the best point evaluated (its start included), never worse.

    Note:
        The template's few parameters move the whole mesh: a plane's cross-section can
        appear or vanish along the way, and a first-order method with bounded steps
        walks through such kinks where L-BFGS's line search stops. Adam's first steps
        are normalised (about ``step`` per entry whatever the gradient's size): started
        at or near an optimum, they walk away on gradient noise, and a few steps do not
        come back. Keeping the best iterate makes the result monotone: a start that is
        already best (a frame identical to the previous one) is kept exactly.
    """
    z = torch.zeros_like(params, requires_grad=True)
    start = params.detach().clone()
    best, best_loss = start.clone(), float("inf")
    optim = torch.optim.Adam([z], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(steps, 1), eta_min=0.1)
    for i in range(steps + 1):
        optim.zero_grad()
        with torch.no_grad():
            params.copy_(start + z * step)
        params.grad = None
        loss = objective()
        if float(loss.detach()) < best_loss:       # strict: earlier points win ties
            best, best_loss = params.detach().clone(), float(loss.detach())
        if i == steps:                             # the last step's result: scored only
            break
        loss.backward()
        z.grad = params.grad * step
        optim.step()
        sched.step()
    with torch.no_grad():
        params.copy_(best)
