"""Levenberg-Marquardt over a subset of the packed parameters with the fit's priors: one optimisation block."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from headcast.core import threads
from headcast.fit.config import FitConfig
from headcast.fit.head import PackedHead
from headcast.fit.priors import PriorWeights
from headcast.fit.solver import Evaluate, LMState, lm_step_jac
from headcast.fit.terms import prior_rows
from headcast.model.head_model import HeadModel

logger = logging.getLogger(__name__)

Terms = Callable[[np.ndarray], list[tuple[float, Evaluate]]]  # x -> (weight, term) pairs at x


class BlockRunner(PackedHead):
    """Runs blocks on the head model: bounds, settings and the prior weights in force.

    ``expr_range`` (low, high) bounds every expression coefficient (None: unbounded). ``dense`` (a point
    cloud constrains the shape) and ``prior`` (the weights beside it) choose the shape and expression priors.
    """

    def __init__(self, model: HeadModel, model_name: str, expr_range: tuple[float, float] | None,
                 config: FitConfig | None = None):
        super().__init__(model, model_name)
        threads.apply()
        self.cfg = config or FitConfig()
        lo = np.full(self.pk.size, -np.inf)
        hi = np.full(self.pk.size, np.inf)
        if expr_range is not None:
            lo[self.pk.sl["psi"]] = expr_range[0]
            hi[self.pk.sl["psi"]] = expr_range[1]
        self.lower, self.upper = lo, hi
        self.dense = True
        self.prior: PriorWeights | None = None  # beside the point cloud, set by fit()

    def run_block(self, name: str, x: np.ndarray, active_names: tuple[str, ...], iters: int,
                  make_terms: Terms, damping: float | None = None) -> tuple[np.ndarray, float, int]:
        """At most ``iters`` LM steps over the active parameters, stopping early once a step lowers the
        loss by less than ``rel_tol``; ``make_terms(x)`` is called before every step so correspondences
        follow the mesh. ``damping``: the first step's (default ``lm_damping``). Returns x, the loss and the
        number of steps run."""
        active = self.pk.mask(*active_names)
        state = LMState(self.cfg.lm_damping if damping is None else damping)
        cost, steps = float("nan"), 0
        for it in range(iters):
            xa, before, after = lm_step_jac(self._evaluator(x, active, make_terms(x)), x[active], state,
                                            self.lower[active], self.upper[active])
            x = x.copy()
            x[active] = xa
            cost, steps = after, it + 1
            logger.info(f"  {name}: iteration {it + 1}/{iters}  loss {after:.3e}")
            if before - after < self.cfg.rel_tol * before:
                break
        return x, cost, steps

    def _evaluator(self, x: np.ndarray, active: np.ndarray, terms: list[tuple[float, Evaluate]]) -> Evaluate:
        """The weighted terms and the priors as one function of the active parameters (x elsewhere)."""
        full = x.copy()

        def evaluate(xa: np.ndarray, with_jac: bool):
            xx = full.copy()
            xx[active] = xa
            out = [f(xx, with_jac) for _, f in terms]
            pr, pj = prior_rows(self.pk, xx, active, self._prior_weights())
            r = np.concatenate([np.sqrt(w) * (o[0] if with_jac else o) for (w, _), o in zip(terms, out)] + pr)
            if not with_jac:
                return r
            return r, _stack_rows([(np.sqrt(w), o[1]) for (w, _), o in zip(terms, out)] + [(None, j) for j in pj],
                                  active)

        return evaluate

    def _prior_weights(self) -> dict[str, float]:
        """Prior weight of each packed part: shape and expression as the method and the noise call for."""
        c = self.cfg
        if not self.dense:
            wb, wp = c.w_beta_sparse, c.w_psi_sparse
        elif self.prior is not None:
            wb, wp = self.prior.w_beta, self.prior.w_psi
        else:  # block 1: shape and expression are not active yet
            wb = wp = 0.0
        return {"beta": wb, "psi": wp, "jaw": c.w_jaw, "log_s": c.w_log_scale}


def _stack_rows(blocks: list[tuple[float | None, np.ndarray]], active: np.ndarray) -> np.ndarray:
    """The Jacobian blocks (m_i, P), each times its factor (None: as is), stacked and cut to the active
    columns in one pass into one array (M, A) (a term's Jacobian of 7000 rows is 9 MB: no extra copies).
    Column-major, the layout column selection gives: the solver's products then sum in the same order."""
    every = bool(active.all())
    J = np.empty((sum(len(b) for _, b in blocks), int(active.sum())), order="F")
    row = 0
    for factor, b in blocks:
        part = b if every else b[:, active]
        dest = J[row: row + len(b)]
        if factor is None:
            dest[...] = part
        else:
            np.multiply(part, factor, out=dest)
        row += len(b)
    return J
