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
        """The frame's part of the normal equations: residuals r (with the frame's priors), their Jacobian by
        the frame's unknowns Jf, and with the shared unknowns' Jacobian Js = [beta | offsets] the products
        Hfs = Jf^T Js, Hss = Js^T Js and gs = Js^T r, from Js's structure: a landmark's two rows move only
        its own offsets, the prior rows nothing shared (a dense Js^T Js was 90 % of the products' work)."""
        d = self.ff_all._data(st, obs, True)
        L = d.layout
        zc = L["z"]
        beta_cols = np.arange(zc.start, zc.start + self.n_id)
        keep = np.r_[: zc.start, zc.start + self.n_id: L["n"]]  # the other columns, in order
        Lf = self.ff._layout(L["eyes"].stop > L["eyes"].start)
        rp, Jp = self.ff._priors(st, Lf, None, obs.half_size)
        r = np.concatenate([d.r, rp])
        Jf = np.vstack([d.J[:, keep], Jp])
        B = d.J[:, beta_cols]  # (2K, n_id); the prior rows have no shared column
        Jd = Jf[: len(d.r)]
        n_id, ns = self.n_id, self.n_id + 68 * self.nd
        Hfs, Hss, gs = np.zeros((Jd.shape[1], ns)), np.zeros((ns, ns)), np.zeros(ns)
        Hfs[:, :n_id], Hss[:n_id, :n_id], gs[:n_id] = Jd.T @ B, B.T @ B, B.T @ d.r
        if self.nd:
            blocks, cols, k = _offset_blocks(self.rig, d, st, self.nd)  # (n, 2, nd) of rows k; their columns
            bt = blocks.transpose(0, 2, 1)  # (n, nd, 2)
            Jk, Bk, rk = (a.reshape(-1, 2, a.shape[-1])[k] for a in (Jd, B, d.r[:, None]))
            Hfs[:, cols] = (bt @ Jk).transpose(2, 0, 1)
            Hss[:n_id, cols] = (bt @ Bk).transpose(2, 0, 1)
            Hss[cols, :n_id] = bt @ Bk
            Hss[cols[:, :, None], cols[:, None, :]] = bt @ blocks
            gs[cols] = (bt @ rk)[..., 0]
        return r, Jf, Hfs, Hss, gs, Lf

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
        for (r, Jf, Hfs, Hss, gs, Lf), st in zip(terms, states):
            Hff, gf = Jf.T @ Jf, Jf.T @ r + pb.ff.linear_gradient(Lf)
            held = pb.ff.held(gf, st, Lf)  # at a bound and pushed outwards: fixed in this step
            Hff[held, :] = 0
            Hff[:, held] = 0
            Hff[held, held] = 1.0
            Hfs[held] = 0
            gf[held] = 0
            parts.append((Hff, Hfs, gf, Hss, gs))
        improved = False
        for _ in range(6):
            ds, dfs = _schur_step(parts, Hs0, gs0, damping)
            nb = b + ds[:n_id]
            noff = off.copy()
            if nd:
                noff[:, :nd] += ds[n_id:].reshape(68, nd)
            cand = [pb.ff._apply(st, df, t[-1]) for st, df, t in zip(states, dfs, terms)]
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
    block (Hs0 + sum Hss, gs0 + sum gs), the frames eliminated first through each damped Hff's Cholesky
    factor L (Hfs^T A^-1 Hfs = Y^T Y with Y = L^-1 Hfs). Returns (shared step, frame steps)."""
    from scipy.linalg import cholesky, solve_triangular

    Hs = Hs0 + sum(p[3] for p in parts)
    gs = gs0 + sum(p[4] for p in parts)
    Hs = Hs + np.diag(damping * np.diag(Hs) + 1e-12)
    solved = []
    for Hff, Hfs, gf, _, _ in parts:
        L = cholesky(Hff + np.diag(damping * np.diag(Hff) + 1e-12), lower=True, check_finite=False)
        Y = solve_triangular(L, np.hstack([Hfs, gf[:, None]]), lower=True, check_finite=False)  # L^-1 [Hfs | gf]
        Yh = Y[:, :-1]
        solved.append((L, Y))
        Hs -= Yh.T @ Yh
        gs -= Yh.T @ Y[:, -1]
    ds = -np.linalg.solve(Hs, gs)
    return ds, [-solve_triangular(L, Y[:, -1] + Y[:, :-1] @ ds, lower=True, trans="T", check_finite=False)
                for L, Y in solved]


def _offset_blocks(rig: PointRig, d, st: FrameState, nd: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Derivatives (n, 2, nd) of the weighted residuals of the rows that are landmarks by their landmark's
    offset (x, y[, z]), those offsets' columns (n, nd) among the shared unknowns [beta | offsets] and the
    rows' indices k (n,) among ``d.rows`` (each landmark is one row)."""
    M = rig.offset_jacobian(d.rows, st.R0, st.rotations())  # (K, 3, 3)
    lmk = rig.pts.landmark_index[d.rows]
    k = np.flatnonzero(lmk >= 0)
    dd = d.s * project(None if d.proj is None else d.proj[k], M[k, :, :nd]) * d.scale[k, None, None]
    return dd, rig.n_id + lmk[k, None] * nd + np.arange(nd), k
