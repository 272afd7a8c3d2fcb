"""Per-frame expressions of a sweep (``--expression per-frame``): the subject's face may move between frames.

After the shared fit (one identity, one expression, the placement in the output frame), block-coordinate
alternation, ``rounds`` times:
1. every fitted frame's expression psi_f alone on that frame's own 3D landmarks and head points (in the
   output frame, through its registered pose), identity and placement held, with a prior pulling psi_f
   towards the shared psi: weight ``tie`` x the fit's expression prior weight for that frame's point count
   (:func:`headcast.fit.priors.prior_weights`, the noise the shared fit measured);
2. identity, jaw and placement on every fitted frame's landmarks and points, each frame's mesh posed with
   its own psi_f (held), with the fit's identity prior for all the points together.
The frames fitted are the ones the shared fit used, plus the output frame (its expression is the one
``params.npz`` keeps). The detail layer then sees every frame's points moved into the output frame's
expression (:func:`points_in_output_expression`), so that it does not take up the face's movements.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from headcast.core.params import HeadParams
from headcast.core.scene import closest_points_on_mesh
from headcast.fit.priors import PriorWeights, prior_weights
from headcast.fit.register import transform
from headcast.fit.rgbd_fit import RGBDFitter
from headcast.fit.terms import INNER, landmark_term, point_term, prior_rows

logger = logging.getLogger(__name__)

IDENTITY = ("beta", "root", "jaw", "log_s", "t")  # what step 2 moves (the expressions are held)
MIN_LANDMARKS = 6  # a frame's landmarks count when at least this many inner ones have depth


@dataclass
class FrameData:
    """One frame's targets in the output frame: head points (n, 3) metres, and its inner landmarks
    (k, 3) with their indices (k,) (None: no face found in the frame, or too few landmarks with depth)."""

    points: np.ndarray
    landmarks: np.ndarray | None
    idx: np.ndarray | None


def frame_data(sw, i: int, n_points: int, seed: int) -> FrameData:
    """Frame ``i`` of the registered sweep ``sw`` as :class:`FrameData`, at most ``n_points`` points (seeded)."""
    pts = transform(sw.poses[i], sw.registered[i].cloud)
    if len(pts) > n_points:
        pts = pts[np.sort(np.random.default_rng(seed).choice(len(pts), n_points, replace=False))]
    o = sw.obs[i]
    if o is None:
        return FrameData(pts, None, None)
    lm = transform(sw.poses[i], o.landmarks3d)
    idx = np.array([k for k in INNER if np.isfinite(lm[k]).all()])
    return FrameData(pts, lm[idx], idx) if len(idx) >= MIN_LANDMARKS else FrameData(pts, None, None)


def _replaced(x, sl: slice, psi):
    """A copy of the packed vector x with its expression slice ``sl`` set to ``psi``."""
    xs = x + 0
    xs[sl] = psi
    return xs


def _with_psi(f, psi, sl: slice):
    """The term ``f`` evaluated with the packed expression replaced by ``psi`` (held)."""
    return lambda xx, with_jac: f(_replaced(xx, sl, psi), with_jac)


def _frame_terms(fitter: RGBDFitter, d: FrameData, x, weight: float) -> list:
    """(weight, term) pairs of one frame at x: its landmarks (the fit's landmark weight) and its points."""
    trim = fitter.cfg.trim_mm / 1000.0
    out = [(weight, point_term(fitter, x, d.points, trim))]
    if d.landmarks is not None:
        tgt = d.landmarks
        out.append((weight * fitter.cfg.w_landmarks_block2, landmark_term(fitter, tgt, d.idx)))
    return out


def _tie_term(fitter: RGBDFitter, centre):
    """Residuals psi - centre over the packed vector (the pull towards the shared expression)."""
    mask = fitter.pk.mask("psi")

    def evaluate(xx, with_jac: bool):
        rs, js = prior_rows(fitter.pk, xx - centre, mask, {"psi": 1.0})
        return (rs[0], js[0]) if with_jac else rs[0]
    return evaluate


def fit_frame_expression(fitter: RGBDFitter, x, shared, d: FrameData, prior: PriorWeights, tie: float,
                         iters: int):
    """Step 1 for one frame: psi alone from x (packed, the frame's current psi in it); the shared fit's
    ``prior`` (its noise) sets the pull towards ``shared`` (packed) for this frame's points. Returns x."""
    pw = prior_weights(fitter.cfg, len(d.points), prior.sigma, prior.correlation)
    fitter.prior = replace(pw, w_psi=0.0)  # the pull is towards the shared psi, not towards zero
    tied = (tie * pw.w_psi, _tie_term(fitter, shared))
    x, _, _ = fitter.run_block("frame expression", x, ("psi",), iters,
                               lambda xx: _frame_terms(fitter, d, xx, 1.0) + [tied])
    return x


def refit_identity(fitter: RGBDFitter, x, psis: list, data: list[FrameData], prior: PriorWeights, iters: int):
    """Step 2: identity, jaw and placement from x (packed) on every frame of ``data``, frame k's mesh with
    its expression ``psis[k]`` (packed psi slices, held); each frame weighted by its share of the points."""
    sl = fitter.pk.sl["psi"]
    n = sum(len(d.points) for d in data)
    fitter.prior = prior_weights(fitter.cfg, n, prior.sigma, prior.correlation)

    def terms(xx):
        out = []
        for psi, d in zip(psis, data):
            terms_at = _frame_terms(fitter, d, _replaced(xx, sl, psi), len(d.points) / n)
            out += [(w, _with_psi(f, psi, sl)) for w, f in terms_at]
        return out
    x, _, _ = fitter.run_block("identity (per-frame expressions)", x, IDENTITY, iters, terms)
    return x


def fit_expressions(fitter: RGBDFitter, sw, params: HeadParams, prior: PriorWeights, *, tie: float = 1.0,
                    rounds: int = 1, iters: int = 6, iters_identity: int = 8, n_points: int = 12000,
                    seed: int = 0) -> tuple[HeadParams, dict[int, np.ndarray], dict]:
    """The alternation of the module docstring on the registered sweep ``sw`` from the shared fit's
    ``params`` (its ``prior``: the weights and noise it measured); ``n_points`` head points over all frames.
    Returns the parameters (psi: the output frame's), each fitted frame's psi (E,) by frame index, and the
    report (the expressions' spread on the model's own scale)."""
    t0 = time.perf_counter()
    frames = sorted(set(sw.used) | {sw.first})
    data = [frame_data(sw, i, max(n_points // len(frames), 200), seed + i) for i in frames]
    x = fitter.pk.pack(params)
    sl = fitter.pk.sl["psi"]
    shared = x + 0
    psis = [x[sl] + 0 for _ in frames]
    for r in range(rounds):
        logger.info(f"per-frame expressions, round {r + 1}/{rounds}: {len(frames)} frames")
        for k, d in enumerate(data):
            psis[k] = fit_frame_expression(fitter, _replaced(x, sl, psis[k]), shared, d, prior, tie, iters)[sl] + 0
        x = refit_identity(fitter, x, psis, data, prior, iters_identity)
    fitter.prior = prior
    x[sl] = psis[frames.index(sw.first)]
    out = fitter.pk.unpack(x, fitter.model_name)
    exprs = {i: fitter.pk.unpack(_replaced(x, sl, psis[k]), fitter.model_name).psi for k, i in enumerate(frames)}
    return out, exprs, {**spread_report(exprs, params.psi, rounds, tie), "seconds": time.perf_counter() - t0}


def spread_report(exprs: dict[int, np.ndarray], shared: np.ndarray, rounds: int, tie: float) -> dict:
    """fit_report.json's ``expression``: how far the frames' expressions (E,) spread, on the model's scale:
    RMS over the components of each frame's difference to the shared fit's psi and to the frames' mean."""
    P = np.stack(list(exprs.values()))
    mean = P.mean(0)
    rms = lambda a: float(np.sqrt(np.mean(a ** 2)))  # noqa: E731
    return {"mode": "per-frame", "frames": len(exprs), "rounds": rounds, "tie": tie,
            "rms_from_shared": {int(i): rms(p - shared) for i, p in exprs.items()},
            "spread_rms": rms(P - mean), "spread_max": float(np.abs(P - mean).max())}


def points_in_output_expression(sw, params: HeadParams, exprs: dict[int, np.ndarray],
                                vertices: Callable[[HeadParams], np.ndarray], faces: np.ndarray, n: int,
                                seed: int) -> np.ndarray:
    """Every registered frame's head points (M, 3) in the output frame (at most ``n``, seeded), each moved by
    the difference, at its closest point, between the mesh of ``params`` (the output frame's expression) and
    the mesh in that frame's own expression (``exprs``: psi (E,) by frame index; a frame not fitted takes
    the nearest fitted frame's, by index): the points as if the face had held still, for the detail layer.
    ``vertices(p)``: the mesh (V, 3) of parameters p in the output frame."""
    idx = [i for i, A in enumerate(sw.poses) if A is not None]
    clouds = [transform(sw.poses[i], sw.registered[i].cloud) for i in idx]
    pts, frame = np.concatenate(clouds), np.concatenate([np.full(len(c), i) for i, c in zip(idx, clouds)])
    if len(pts) > n:
        keep = np.random.default_rng(seed).choice(len(pts), n, replace=False)
        pts, frame = pts[keep], frame[keep]
    fitted = np.array(sorted(exprs))
    nearest = fitted[np.argmin(np.abs(fitted[:, None] - frame[None]), axis=0)]
    v_out = vertices(params)
    out = pts.copy()
    for k in fitted:
        sel = nearest == k
        if not sel.any():
            continue
        v = vertices(replace(params, psi=exprs[k]))
        tri, bary, _ = closest_points_on_mesh(v, faces, pts[sel])
        out[sel] += np.einsum("nk,nkc->nc", bary, (v_out - v)[faces[tri]])
    return out
