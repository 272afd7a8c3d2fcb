"""The driver's own face, estimated jointly over calibration frames so that it does not leak into
the expression.

Shared by all calibration frames: the identity beta (the leading ``identity_components``) and a
small rest-pose offset of each landmark (the detector's landmark definitions differ from the
model's embedding by a few millimetres: the brows, the nose bridge, the face oval; left alone,
that difference is read as an expression in every frame). The driver's resting expression (a low
percentile over the calibration frames) is folded into the offsets at the end, so the driver's neutral
face maps to psi = 0, the avatar's neutral (:func:`rest_offsets`). Each frame has its own pose,
expression and eta. All of it is one sparse least-squares problem (priors ``w_beta ||beta||^2``,
``w_offset ||offsets||^2``, ``w_psi ||psi||^2``), solved by Levenberg-Marquardt with the frames
eliminated by the Schur complement, so each iteration costs one Jacobian per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from headcast.animate.fit import FrameFitter, FrameState, Observation, TrackConfig, project
from headcast.model.head_model import HeadModel
from headcast.model.rig import PointRig

logger = logging.getLogger(__name__)

MOBILE = np.arange(36, 68)  # eyelid and lip landmarks
# the driver's resting expression: this percentile of each coefficient over the calibration frames (a
# shape held all along, like a mouth resting with its corners down, counts; one used while talking not)
REST_PERCENTILE = 25


@dataclass
class DriverIdentity:
    """beta (S,) and landmark offsets (68, 3) metres (model frame, rest pose) of the driver."""

    beta: np.ndarray
    offsets: np.ndarray
    report: dict = field(default_factory=dict)


class _Problem:
    """The calibration problem's pieces for one rig."""

    def __init__(self, rig: PointRig, cfg: TrackConfig, expr_range, n_id: int):
        self.rig, self.cfg, self.n_id = rig, cfg, n_id
        free = np.r_[np.zeros(n_id, bool), np.ones(rig.n_expr, bool)]
        self.ff = FrameFitter(rig, cfg, expr_range, free_z=free)  # frame parameters only
        self.ff_all = FrameFitter(rig, cfg, expr_range)  # every coefficient (for the beta columns)
        self.nd = cfg.offset_dims if cfg.w_offset > 0 else 0

    def frame_terms(self, st: FrameState, obs: Observation):
        """Residuals (with the frame's priors) and their Jacobians by frame (Jf) and shared (Js) unknowns."""
        d = self.ff_all._data(st, obs, True)
        L = d.layout
        zc = L["z"]
        beta_cols = np.arange(zc.start, zc.start + self.n_id)
        keep = np.setdiff1d(np.arange(L["n"]), beta_cols)
        Jf = d.J[:, keep]
        Js = [d.J[:, beta_cols]]
        if self.nd:
            Js.append(_offset_jacobian(self.rig, d, st, self.nd))
        Js = np.hstack(Js)
        Lf = self.ff._layout(L["eyes"].stop > L["eyes"].start)
        rp, Jp = self.ff._priors(st, Lf, None, obs.half_size)
        r = np.concatenate([d.r, rp])
        Jf = np.vstack([Jf, Jp])
        Js = np.vstack([Js, np.zeros((len(rp), Js.shape[1]))])
        return r, Jf, Js, Lf

    def frame_cost(self, st: FrameState, obs: Observation) -> float:
        return self.ff.cost(st, obs, None)[0]

    def shared_prior(self, b: np.ndarray, off: np.ndarray, nf: int):
        """Residuals and (diagonal) Jacobian of the shared priors, scaled by the frame count."""
        c = self.cfg
        r = [np.sqrt(c.w_beta * nf) * b]
        w = [np.full(self.n_id, np.sqrt(c.w_beta * nf))]
        if self.nd:
            wl = np.full(68, c.w_offset)
            wl[MOBILE] *= c.w_offset_mobile
            wo = np.repeat(np.sqrt(wl * nf), self.nd)
            r.append(wo * off[:, : self.nd].ravel())
            w.append(wo)
        return np.concatenate(r), np.concatenate(w)

    def set_shared(self, states: list[FrameState], b: np.ndarray, off: np.ndarray) -> None:
        self.rig.set_offsets(off)
        for st in states:
            st.z[: self.n_id] = b


def estimate_identity(model: HeadModel, observations: list[Observation], expr_cols: np.ndarray,
                      config: TrackConfig | None = None, expr_range: tuple[float, float] | None = None
                      ) -> DriverIdentity:
    """The driver's identity from observations of several frames (zeros without observations)."""
    cfg = config or TrackConfig()
    n_id = min(cfg.identity_components, model.n_shape)
    ident = DriverIdentity(np.zeros(model.n_shape), np.zeros((68, 3)), {"frames": len(observations)})
    if not observations or (n_id == 0 and cfg.w_offset <= 0):
        return ident
    cfg = replace(cfg, w_psi=cfg.w_psi_identity)
    rig = PointRig(model, None, np.arange(n_id), expr_cols, dynamic=cfg.dynamic_contour)
    pb = _Problem(rig, cfg, expr_range, n_id)

    # start: each frame fitted alone with the mean shape (warm-started along the frames)
    states: list[FrameState] = []
    prev = None
    for obs in observations:
        st = pb.ff.initial_state(obs) if prev is None else prev
        iters = cfg.init_iters if prev is None else 8
        prev = pb.ff.fit(obs, st, None, max_iters=iters, min_iters=iters, threshold=0).state
        states.append(prev)
    loss_before = float(np.mean([pb.ff._data(s, o, False).loss5 for o, s in zip(observations, states)]))

    nf = len(observations)
    b = np.zeros(n_id)
    off = np.zeros((68, 3))
    nd = pb.nd
    rs, ws = pb.shared_prior(b, off, nf)
    cost = sum(pb.frame_cost(s, o) for s, o in zip(states, observations)) + float(rs @ rs)
    damping = 1e-3
    it = 0
    for it in range(cfg.identity_iters):
        terms = [pb.frame_terms(s, o) for s, o in zip(states, observations)]
        rs, ws = pb.shared_prior(b, off, nf)
        Hs0 = np.diag(ws ** 2)
        gs0 = ws * rs
        parts = []
        for (r, Jf, Js, Lf), st in zip(terms, states):
            Hff, Hfs, gf = Jf.T @ Jf, Jf.T @ Js, Jf.T @ r + pb.ff.linear_gradient(Lf)
            held = pb.ff.held(gf, st, Lf)  # at a bound and pushed outwards: fixed in this step
            Hff[held, :] = 0
            Hff[:, held] = 0
            Hff[held, held] = 1.0
            Hfs[held] = 0
            gf[held] = 0
            parts.append((Hff, Hfs, gf, Js.T @ Js, Js.T @ r))
        improved = False
        for _ in range(6):
            ds, dfs = _schur_step(parts, Hs0, gs0, damping)
            nb = b + ds[:n_id]
            noff = off.copy()
            if nd:
                noff[:, :nd] += ds[n_id:].reshape(68, nd)
            cand = [pb.ff._apply(st, df, t[3]) for st, df, t in zip(states, dfs, terms)]
            pb.set_shared(cand, nb, noff)
            rs_new, _ = pb.shared_prior(nb, noff, nf)
            new_cost = sum(pb.frame_cost(s, o) for s, o in zip(cand, observations)) + float(rs_new @ rs_new)
            if new_cost < cost:
                gain = cost - new_cost
                states, b, off, cost = cand, nb, noff, new_cost
                damping = max(damping / 4, 1e-7)
                improved = True
                break
            pb.set_shared(states, b, off)
            damping *= 8
        logger.debug(f"driver identity: iteration {it + 1}, cost {cost:.3e}")
        if not improved or gain < 1e-5 * cost:
            break
    loss_after = [pb.ff._data(s, o, False).loss5 for o, s in zip(observations, states)]
    rest = np.percentile([s.z[n_id:] for s in states], REST_PERCENTILE, axis=0)
    off = off + rest_offsets(rig, np.r_[b, np.zeros(rig.n_expr)], rest)
    ident.beta[:n_id] = b
    ident.offsets = off
    ident.report = {"frames": nf, "components": n_id, "iterations": it + 1, "beta_norm": float(np.linalg.norm(b)),
                    "offset_rms_mm": float(np.sqrt((off ** 2).sum(1).mean()) * 1000),
                    "loss5_before": loss_before, "loss5_after": float(np.mean(loss_after)),
                    "rest_expression_norm": float(np.linalg.norm(rest))}
    return ident


def rest_offsets(rig: PointRig, z: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(68, 3) rest-pose landmark offsets (metres) that the expression ``rest`` (the rig's expression
    columns) makes at coefficients ``z``: folded into the driver's offsets, the driver's resting face
    (a mouth that rests with its corners down, lips set to one side) becomes psi = 0, so it maps to the
    avatar's neutral instead of leaking into every frame's expression."""
    rows = rig.pts.rows_for(0.0, pupils=False)
    eye = np.stack([np.eye(3)] * 3)
    z_rest = z.copy()
    z_rest[rig.n_id:] += rest
    d = rig.points(rows, np.eye(3), eye, z_rest, jacobian=False) - rig.points(rows, np.eye(3), eye, z, jacobian=False)
    out = np.zeros((68, 3))
    lmk = rig.pts.landmark_index[rows]
    ok = lmk >= 0
    out[lmk[ok]] = d[ok]
    return out


def _schur_step(parts, Hs0: np.ndarray, gs0: np.ndarray, damping: float):
    """Damped Gauss-Newton step of the block-arrow system: frame blocks (Hff, Hfs, gf) and the shared
    block (Hs0 + sum Hss, gs0 + sum gs), the frames eliminated first. Returns (shared step, frame steps)."""
    Hs = Hs0 + sum(p[3] for p in parts)
    gs = gs0 + sum(p[4] for p in parts)
    Hs = Hs + np.diag(damping * np.diag(Hs) + 1e-12)
    solved = []
    for Hff, Hfs, gf, _, _ in parts:
        A = Hff + np.diag(damping * np.diag(Hff) + 1e-12)
        X = np.linalg.solve(A, np.hstack([Hfs, gf[:, None]]))  # A^-1 [Hfs | gf]
        solved.append(X)
        Hs -= Hfs.T @ X[:, :-1]
        gs -= Hfs.T @ X[:, -1]
    ds = -np.linalg.solve(Hs, gs)
    return ds, [-(X[:, -1] + X[:, :-1] @ ds) for X in solved]


def _offset_jacobian(rig: PointRig, d, st: FrameState, nd: int) -> np.ndarray:
    """(2K, 68 nd) derivatives of the weighted residuals by the landmarks' offsets (x, y[, z])."""
    M = rig.offset_jacobian(d.rows, st.R0, st.rotations())  # (K, 3, 3)
    lmk = rig.pts.landmark_index[d.rows]
    K = len(d.rows)
    J = np.zeros((K, 2, 68, nd))
    ok = lmk >= 0
    dd = d.s * project(d.proj, M[:, :, :nd]) * d.scale[:, None, None]  # (K, 2, nd)
    J[np.flatnonzero(ok), :, lmk[ok], :] = dd[ok]
    return J.reshape(2 * K, 68 * nd)
