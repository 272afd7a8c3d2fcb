"""Levenberg-Marquardt steps on a residual vector and its Jacobian."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# evaluate(x, with_jacobian) -> residuals (M,) or (residuals (M,), Jacobian (M, P))
Evaluate = Callable[[torch.Tensor, bool], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class LMState:
    """Damping carried between calls (one call per correspondence update)."""

    damping: float = 1e-3


def lm_step_jac(evaluate: Evaluate, x: torch.Tensor, state: LMState, lower: torch.Tensor | None = None,
                upper: torch.Tensor | None = None, max_tries: int = 8) -> tuple[torch.Tensor, float, float]:
    """One Levenberg-Marquardt update of ``x`` (P,) given residuals and their Jacobian.

    Bounds are applied by clipping the proposed step. Returns the new x and the cost (sum of
    squared residuals) before and after; x is unchanged when no step lowers the cost.
    """
    r, J = evaluate(x, True)
    cost = float(r @ r)
    H = J.T @ J
    g = J.T @ r
    diag = torch.diagonal(H).clamp_min(1e-12)
    for _ in range(max_tries):
        step = torch.linalg.solve(H + state.damping * torch.diag(diag), -g)
        xn = x + step
        if lower is not None:
            xn = torch.maximum(xn, lower)
        if upper is not None:
            xn = torch.minimum(xn, upper)
        rn = evaluate(xn, False)
        new = float(rn @ rn)
        if new < cost:
            state.damping = max(state.damping / 3.0, 1e-9)
            return xn, cost, new
        state.damping *= 4.0
    return x, cost, cost

