"""The driver's own face, estimated jointly over calibration frames so that it does not leak into
the expression.

Shared by all calibration frames: the identity beta (the leading ``identity_components``) and a
small rest-pose offset of each landmark in the model's x-y plane (the detector's landmark
definitions differ from the model's embedding: the brows, the nose bridge and the face oval by a
few millimetres; left alone, that difference is read as an expression in every frame). Each frame
has its own pose, expression and eta. The estimate alternates one Gauss-Newton step on the shared
unknowns over all frames (priors ``w_beta ||beta||^2`` and ``w_offset ||offsets||^2``) and a few LM
steps per frame with them held.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from headcast.animate.fit import P2, FrameFitter, FrameState, Observation, TrackConfig
from headcast.animate.rig import PointRig
from headcast.model.head_model import HeadModel


@dataclass
class DriverIdentity:
    """beta (S,) and landmark offsets (68, 3) metres (model frame, rest pose) of the driver."""

    beta: np.ndarray
    offsets: np.ndarray
    report: dict = field(default_factory=dict)


def estimate_identity(model: HeadModel, observations: list[Observation], expr_cols: np.ndarray,
                      config: TrackConfig | None = None, expr_range: tuple[float, float] | None = None,
                      progress: Callable[[str], None] | None = None) -> DriverIdentity:
    """The driver's identity from observations of several frames (zeros without observations)."""
    cfg = config or TrackConfig()
    n_id = min(cfg.identity_components, model.n_shape)
    ident = DriverIdentity(np.zeros(model.n_shape), np.zeros((68, 3)), {"frames": len(observations)})
    if not observations or (n_id == 0 and cfg.w_offset <= 0):
        return ident
    rig = PointRig(model, None, np.arange(n_id), expr_cols, dynamic=cfg.dynamic_contour)
    cfg = replace(cfg, w_psi=cfg.w_psi_identity)
    free = np.r_[np.zeros(n_id, bool), np.ones(rig.n_expr, bool)]
    ff = FrameFitter(rig, cfg, expr_range, free_z=free)
    ff_all = FrameFitter(rig, cfg, expr_range)
    states: list[FrameState] = []
    prev = None
    for obs in observations:
        st = ff.initial_state(obs) if prev is None else prev
        prev = ff.fit(obs, st, None, max_iters=cfg.init_iters, min_iters=cfg.init_iters, threshold=0).state
        states.append(prev)
    loss_before = float(np.mean([ff._data(s, o, False).loss5 for o, s in zip(observations, states)]))

    use_off = cfg.w_offset > 0
    nd = cfg.offset_dims
    n_sh = n_id + (68 * nd if use_off else 0)
    b = np.zeros(n_id)
    off = np.zeros((68, 3))
    nf = len(observations)
    for rnd in range(cfg.identity_rounds):
        H = np.zeros((n_sh, n_sh))
        g = np.zeros(n_sh)
        H[:n_id, :n_id] += cfg.w_beta * nf * np.eye(n_id)
        g[:n_id] += cfg.w_beta * nf * b
        if use_off:
            H[n_id:, n_id:] += cfg.w_offset * nf * np.eye(68 * nd)
            g[n_id:] += cfg.w_offset * nf * off[:, :nd].ravel()
        for obs, st in zip(observations, states):
            st.z[:n_id] = b
            d = ff_all._data(st, obs, True)
            Js = [d.J[:, d.layout["z"]][:, :n_id]]
            if use_off:
                Js.append(_offset_jacobian(rig, d, st, nd))
            Jsh = np.hstack(Js)
            H += Jsh.T @ Jsh
            g += Jsh.T @ d.r
        step = -np.linalg.solve(H, g)
        b = b + step[:n_id]
        if use_off:
            off[:, :nd] += step[n_id:].reshape(68, nd)
            rig.set_offsets(off)
        for i, (obs, st) in enumerate(zip(observations, states)):
            st.z[:n_id] = b
            states[i] = ff.fit(obs, st, None, max_iters=4, min_iters=4, threshold=0).state
        if progress:
            progress(f"driver identity: round {rnd + 1}/{cfg.identity_rounds}")
    loss_after = [ff._data(s, o, False).loss5 for o, s in zip(observations, states)]
    ident.beta[:n_id] = b
    ident.offsets = off
    ident.report = {"frames": nf, "components": n_id, "beta_norm": float(np.linalg.norm(b)),
                    "offset_rms_mm": float(np.sqrt((off ** 2).sum(1).mean()) * 1000),
                    "loss5_before": loss_before, "loss5_after": float(np.mean(loss_after))}
    return ident


def _offset_jacobian(rig: PointRig, d, st: FrameState, nd: int) -> np.ndarray:
    """(2K, 68 nd) derivatives of the weighted residuals by the landmarks' offsets (x, y[, z])."""
    M = rig.offset_jacobian(d.rows, st.R0, st.rotations())  # (K, 3, 3)
    lmk = rig.pts.landmark_index[d.rows]
    K = len(d.rows)
    J = np.zeros((K, 2, 68, nd))
    ok = lmk >= 0
    dd = d.s * np.einsum("ab,kbc->kac", P2, M[:, :, :nd]) * d.scale[:, None, None]  # (K, 2, nd)
    J[np.flatnonzero(ok), :, lmk[ok], :] = dd[ok]
    return J.reshape(2 * K, 68 * nd)
