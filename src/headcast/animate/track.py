"""The driver tracker: identity calibration, then one warm-started fit per frame; frames without a
face hold the last parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from headcast.animate.blas import one_blas_thread
from headcast.animate.fit import FrameFitter, FrameState, Observation, TrackConfig
from headcast.animate.identity import DriverIdentity, estimate_identity
from headcast.animate.rig import PointRig
from headcast.model.head_model import HeadModel


@dataclass
class TrackedFrame:
    """One frame of the parameter stream: theta (15,), psi (E,), eta (3,) = (s px/m, tx px, ty px),
    Loss5 (nan without a face), LM iterations, whether a face was found, and the model's landmarks
    (68, 2) pixels (None before the first face)."""

    theta: np.ndarray
    psi: np.ndarray
    eta: np.ndarray
    loss: float
    iterations: int
    face_found: bool
    landmarks: np.ndarray | None


def jaw_expressions(model: HeadModel) -> list[int]:
    """Expression components the jaw joint replaces: ICT's ``jawOpen`` (its rig's jaw rotation is
    fitted to reproduce that shape, so fitting both would leave the opening ambiguous)."""
    names = list(model.meta.get("expression_names") or [])
    rig = model.meta.get("rig") or {}
    return [names.index("jawOpen")] if "jawOpen" in names and "jaw_open_angle_rad" in rig else []


def default_expr_cols(model: HeadModel) -> np.ndarray:
    skip = set(jaw_expressions(model))
    return np.array([i for i in range(model.n_expr) if i not in skip], dtype=np.int64)


def select_calibration(observations: list[Observation | None], n: int, window: int) -> list[int]:
    """Indices of up to ``n`` frames with a face among the first ``window`` frames, picked by farthest-
    point sampling on the normalised landmark configuration so that head turns and expressions are
    all represented (the first frame with a face starts the set)."""
    idx = [i for i, o in enumerate(observations[:window]) if o is not None]
    if len(idx) <= n:
        return idx
    feats = []
    for i in idx:
        p = observations[i].landmarks
        feats.append(((p - p.mean(0)) / observations[i].half_size).ravel())
    F = np.array(feats)
    chosen = [0]
    d = np.linalg.norm(F - F[0], axis=1)
    while len(chosen) < n:
        k = int(np.argmax(d))
        chosen.append(k)
        d = np.minimum(d, np.linalg.norm(F - F[k], axis=1))
    return sorted(idx[k] for k in chosen)


class Tracker:
    """Tracks one driver: :meth:`calibrate` once, then :meth:`step` for every frame in order.

    Args:
        model: the head model the driver is fitted with (the same as the animated subject's).
        config: tracking settings.
        expr_cols: expression components fitted (default: all but those the jaw joint replaces).
    """

    def __init__(self, model: HeadModel, config: TrackConfig | None = None, expr_cols: np.ndarray | None = None):
        self.model = model
        self.cfg = config or TrackConfig()
        self.expr_cols = default_expr_cols(model) if expr_cols is None else np.asarray(expr_cols, dtype=np.int64)
        rng = model.meta.get("expr_range")
        self.expr_range = tuple(rng) if rng else None
        self.identity = DriverIdentity(np.zeros(model.n_shape), np.zeros((68, 3)))
        self._build()
        self.state: FrameState | None = None
        self.last: TrackedFrame | None = None
        self._gap = True

    def _build(self) -> None:
        self.rig = PointRig(self.model, self.identity.beta, (), self.expr_cols, dynamic=self.cfg.dynamic_contour)
        self.rig.set_offsets(self.identity.offsets)
        self.fitter = FrameFitter(self.rig, self.cfg, self.expr_range)

    def calibrate(self, observations: list[Observation], progress: Callable[[str], None] | None = None) -> DriverIdentity:
        """Estimate the driver's identity from these frames and use it from now on."""
        with one_blas_thread():
            self.identity = estimate_identity(self.model, observations, self.expr_cols, self.cfg, self.expr_range,
                                              progress)
        self._build()
        return self.identity

    def reset(self) -> None:
        """Forget the previous frame (the next face starts from scratch)."""
        self.state, self.last, self._gap = None, None, True

    def step(self, obs: Observation | None) -> TrackedFrame:
        """Fit the next frame; ``None`` (no face) holds the last parameters."""
        with one_blas_thread():
            return self._step(obs)

    def _step(self, obs: Observation | None) -> TrackedFrame:
        if obs is None:
            self._gap = True
            if self.last is None:
                E = self.model.n_expr
                return TrackedFrame(np.zeros(15), np.zeros(E), np.zeros(3), float("nan"), 0, False, None)
            h = self.last
            return TrackedFrame(h.theta, h.psi, h.eta, float("nan"), 0, False, h.landmarks)
        c = self.cfg
        if self.state is None:
            start = self.fitter.initial_state(obs)
            res = self.fitter.fit(obs, start, None, max_iters=c.init_iters, min_iters=c.init_iters, threshold=0.0)
        elif self._gap:  # after frames without a face: no temporal prior, more iterations
            res = self.fitter.fit(obs, self.state, None, max_iters=c.init_iters, min_iters=c.min_iters)
        else:
            res = self.fitter.fit(obs, self.state, self.state)
        self._gap = False
        self.state = res.state
        _, psi = self.rig.full(res.state.z)  # the driver's own beta stays with the driver
        self.last = TrackedFrame(res.state.theta(), psi, res.state.eta(), res.loss, res.iterations, True,
                                 res.landmarks)
        return self.last
