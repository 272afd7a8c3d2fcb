"""The driver tracker: identity calibration, then one warm-started fit per frame; frames without a
face hold the last parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.animate.fit import FrameFitter, FrameState, Observation, TrackConfig
from headcast.animate.identity import DriverIdentity, estimate_identity
from headcast.core.params import N_POSE
from headcast.core.threads import one_blas_thread
from headcast.model.head_model import HeadModel
from headcast.model.rig import PointRig, matrix_to_rotvec


@dataclass
class TrackedFrame:
    """One frame of the parameter stream: theta (N_POSE,), psi (E,), eta (3,) = (s px/m, tx px, ty px),
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


def pose_features(points: np.ndarray) -> np.ndarray:
    """Rough head-pose cues (3,) of 68 landmarks (68, 2): nose-tip offset from the eyes' midpoint across and
    along the face (yaw, pitch; in eye-corner distances) and the eye line's angle (roll, radians)."""
    eye_r, eye_l = points[36:42].mean(0), points[42:48].mean(0)
    mid, ax = (eye_r + eye_l) / 2, eye_l - eye_r
    io = np.linalg.norm(ax) + 1e-9
    ax /= io
    n = points[30] - mid
    return np.array([n @ ax / io, (n @ np.array([-ax[1], ax[0]])) / io, np.arctan2(ax[1], ax[0])])


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over the eye-corner distance of 68 landmarks (68, 2)."""
    return float(np.linalg.norm(points[66] - points[62]) / (np.linalg.norm(points[45] - points[36]) + 1e-9))


def select_calibration(observations: list[Observation | None], n: int, window: int,
                       quiet_share: float = 0.4) -> list[int]:
    """Indices of up to ``n`` frames with a face among the first ``window`` frames for the identity.

    The identity (and the landmark offsets) should describe the driver's face at rest, seen from
    several sides: of the frames with a face, those with the mouth most closed (the ``quiet_share``
    fraction) are candidates, and farthest-point sampling on rough pose cues (:func:`pose_features`),
    starting from the most frontal, picks ``n`` of them.
    """
    idx = [i for i, o in enumerate(observations[:window]) if o is not None]
    if len(idx) <= n:
        return idx
    gap = np.array([mouth_opening(observations[i].landmarks) for i in idx])
    k = max(n, int(np.ceil(quiet_share * len(idx))))
    cand = [idx[j] for j in np.argsort(gap, kind="stable")[:k]]
    if len(cand) <= n:
        return sorted(cand)
    F = np.array([pose_features(observations[i].landmarks) for i in cand])
    F -= np.median(F, axis=0)
    chosen = [int(np.argmin(np.linalg.norm(F, axis=1)))]
    d = np.linalg.norm(F - F[chosen[0]], axis=1)
    while len(chosen) < n:
        j = int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.linalg.norm(F - F[j], axis=1))
    return sorted(cand[j] for j in chosen)


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
        self._fitter: FrameFitter | None = None  # built when first needed: a calibration comes first as a rule
        self.state: FrameState | None = None
        self.last: TrackedFrame | None = None
        self._gap = True
        self._speed = 0.0

    def _build(self) -> None:
        """The rig and frame fitter of the current identity (about 25 ms for ICT-FaceKit)."""
        rig = PointRig(self.model, self.identity.beta, (), self.expr_cols, dynamic=self.cfg.dynamic_contour)
        rig.set_offsets(self.identity.offsets)
        self._fitter = FrameFitter(rig, self.cfg, self.expr_range)

    @property
    def fitter(self) -> FrameFitter:
        """The frame fitter of the current identity's rig."""
        if self._fitter is None:
            self._build()
        return self._fitter

    @property
    def rig(self) -> PointRig:
        """The landmark rig of the current identity."""
        return self.fitter.rig

    def calibrate(self, observations: list[Observation]) -> DriverIdentity:
        """Estimate the driver's identity from these frames and use it from now on."""
        with one_blas_thread():
            self.identity = estimate_identity(self.model, observations, self.expr_cols, self.cfg, self.expr_range)
        self._build()
        return self.identity

    def step(self, obs: Observation | None) -> TrackedFrame:
        """Fit the next frame; ``None`` (no face) holds the last parameters."""
        with one_blas_thread():
            return self._step(obs)

    def _step(self, obs: Observation | None) -> TrackedFrame:
        if obs is None:
            self._gap = True
            if self.last is None:  # nothing to hold yet: the neutral head, no placement
                E = self.model.n_expr
                return TrackedFrame(np.zeros(N_POSE), np.zeros(E), np.full(3, np.nan), float("nan"), 0, False, None)
            h = self.last
            return TrackedFrame(h.theta, h.psi, h.eta, float("nan"), 0, False, h.landmarks)
        c = self.cfg
        if self.state is None:
            start = self.fitter.initial_state(obs)
            res = self.fitter.fit(obs, start, None, max_iters=c.init_iters, min_iters=c.init_iters, threshold=0.0)
        elif self._gap:  # after frames without a face: no temporal prior, more iterations
            res = self.fitter.fit(obs, self.state, None, max_iters=c.init_iters, min_iters=c.min_iters)
        else:
            res = self.fitter.fit(obs, self.state, self.state, speed=self._speed)
        if self.state is not None and not self._gap:
            self._speed = float(np.linalg.norm(matrix_to_rotvec(res.state.R0 @ self.state.R0.T)))
        else:
            self._speed = 0.0
        self._gap = False
        self.state = res.state
        _, psi = self.rig.full(res.state.z)  # the driver's own beta stays with the driver
        self.last = TrackedFrame(res.state.theta(), psi, res.state.eta(), res.loss, res.iterations, True,
                                 res.landmarks)
        return self.last
