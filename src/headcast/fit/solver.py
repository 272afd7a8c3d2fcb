"""Levenberg-Marquardt steps on a residual vector and its Jacobian."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# evaluate(x, with_jacobian) -> residuals (M,) or (residuals (M,), Jacobian (M, P))
Evaluate = Callable[[np.ndarray, bool], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


@dataclass
class LMState:
    """Damping carried between calls (one call per correspondence update); its start is the caller's
    (:attr:`headcast.fit.config.FitConfig.lm_damping`)."""

    damping: float


def lm_step_jac(evaluate: Evaluate, x: np.ndarray, state: LMState, lower: np.ndarray | None = None,
                upper: np.ndarray | None = None, max_tries: int = 8) -> tuple[np.ndarray, float, float]:
    """One Levenberg-Marquardt update of ``x`` (P,) given residuals and their Jacobian.

    Bounds are applied by clipping the proposed step. Returns the new x and the cost (sum of
    squared residuals) before and after; x is unchanged when no step lowers the cost.
    """
    r, J = evaluate(x, True)
    cost = float(r @ r)
    H = J.T @ J
    g = J.T @ r
    diag = np.maximum(np.diagonal(H), 1e-12)
    for _ in range(max_tries):
        xn = x + np.linalg.solve(H + state.damping * np.diag(diag), -g)
        if lower is not None:
            xn = np.maximum(xn, lower)
        if upper is not None:
            xn = np.minimum(xn, upper)
        rn = evaluate(xn, False)
        new = float(rn @ rn)
        if new < cost:
            state.damping = max(state.damping / 3.0, 1e-9)
            return xn, cost, new
        state.damping *= 4.0
    return x, cost, cost
