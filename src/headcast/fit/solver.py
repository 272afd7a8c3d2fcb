"""Levenberg-Marquardt on a residual vector with forward-mode Jacobians (torch.func)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jacfwd

Residual = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LMState:
    """Damping carried between calls (one call per correspondence update)."""

    damping: float = 1e-3


def lm_step(fn: Residual, x: torch.Tensor, state: LMState, lower: torch.Tensor | None = None,
            upper: torch.Tensor | None = None, max_tries: int = 8) -> tuple[torch.Tensor, float, float]:
    """One Levenberg-Marquardt update of ``x`` (P,) for the residuals ``fn(x)`` (M,).

    Bounds are applied by clipping the proposed step. Returns the new x, the cost
    (sum of squared residuals) before and after; x is unchanged when no step lowers the cost.
    """
    r = fn(x)
    cost = float(r @ r)
    J = jacfwd(fn)(x)  # (M, P)
    H = J.T @ J
    g = J.T @ r
    diag = torch.diagonal(H).clamp_min(1e-12)
    for _ in range(max_tries):
        A = H + state.damping * torch.diag(diag)
        step = torch.linalg.solve(A, -g)
        xn = x + step
        if lower is not None:
            xn = torch.maximum(xn, lower)
        if upper is not None:
            xn = torch.minimum(xn, upper)
        rn = fn(xn)
        new = float(rn @ rn)
        if new < cost:
            state.damping = max(state.damping / 3.0, 1e-9)
            return xn, cost, new
        state.damping *= 4.0
    return x, cost, cost
