"""The driver's own face shape, estimated jointly over the first frames, so that it does not leak
into the expression.

One identity beta (the leading ``identity_components``) is shared by all calibration frames; each
frame has its own pose, expression and eta. The estimate alternates a Gauss-Newton step on beta
over all frames (with the prior ``w_beta ||beta||^2``) and a few LM steps per frame with beta held.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from headcast.animate.fit import FrameFitter, FrameState, Observation, TrackConfig
from headcast.animate.rig import PointRig
from headcast.model.head_model import HeadModel


def estimate_identity(model: HeadModel, observations: list[Observation], expr_cols: np.ndarray,
                      config: TrackConfig | None = None, expr_range: tuple[float, float] | None = None,
                      progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, dict]:
    """Driver identity beta (S,) from observations of several frames, and a small report.

    Returns zeros when ``identity_components`` is 0 or there are no observations.
    """
    cfg = config or TrackConfig()
    n_id = min(cfg.identity_components, model.n_shape)
    beta = np.zeros(model.n_shape)
    if n_id == 0 or not observations:
        return beta, {"frames": 0, "components": 0}
    rig = PointRig(model, None, np.arange(n_id), expr_cols, dynamic=cfg.dynamic_contour)
    free = np.r_[np.zeros(n_id, bool), np.ones(rig.n_expr, bool)]
    ff = FrameFitter(rig, cfg, expr_range, free_z=free)
    states: list[FrameState] = []
    prev = None
    for obs in observations:
        st = ff.initial_state(obs) if prev is None else prev
        prev = ff.fit(obs, st, None, max_iters=cfg.init_iters, min_iters=cfg.init_iters, threshold=0).state
        states.append(prev)
    losses0 = [ff.fit(o, s, None, max_iters=0, min_iters=0, threshold=0).loss for o, s in zip(observations, states)]
    b = np.zeros(n_id)
    for rnd in range(cfg.identity_rounds):
        H = cfg.w_beta * len(observations) * np.eye(n_id)
        g = cfg.w_beta * len(observations) * b
        for obs, st in zip(observations, states):
            st.z[:n_id] = b
            r, _, _, J, L = ff_full_jacobian(rig, cfg, expr_range, obs, st)
            Jb = J[:, L["z"]][:, :n_id]
            H += Jb.T @ Jb
            g += Jb.T @ r
        b = b - np.linalg.solve(H, g)
        for i, (obs, st) in enumerate(zip(observations, states)):
            st.z[:n_id] = b
            states[i] = ff.fit(obs, st, None, max_iters=4, min_iters=4, threshold=0).state
        if progress:
            progress(f"  driver identity: round {rnd + 1}/{cfg.identity_rounds}")
    losses = [ff.fit(o, s, None, max_iters=0, min_iters=0, threshold=0).loss for o, s in zip(observations, states)]
    beta[:n_id] = b
    report = {"frames": len(observations), "components": n_id, "beta_norm": float(np.linalg.norm(b)),
              "loss5_before": float(np.mean(losses0)), "loss5_after": float(np.mean(losses))}
    return beta, report


def ff_full_jacobian(rig: PointRig, cfg: TrackConfig, expr_range, obs: Observation, st: FrameState):
    """Data residuals and Jacobian with every rig coefficient free (identity columns included)."""
    return FrameFitter(rig, cfg, expr_range)._data(st, obs, True)
