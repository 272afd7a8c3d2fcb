"""Per-frame fitting of pose, expression and the orthographic placement eta to 2D landmarks (Loss5).

The paper's Loss5 (equation 7) is the L2 of equation (1) between the detected 2D landmarks and the
model's landmarks under the orthographic projection eta:

    uv = s * (x, -y) + (tx, ty)          (model-frame x, y in metres; s in pixels per metre)
    Loss5 = sqrt(mean_i |uv_i - uv*_i|^2) / h

over the 68 iBUG points, where ``h`` is half the side of the square bounding the detected 68 points
(so coordinates are the [-1, 1] face-crop coordinates FLAME fitters work in; for a frontal face h
is close to the outer-eye-corner distance). The optimiser minimises a weighted version of the
same squared error (eyelid and inner-lip points count more, the contour less, the pupils drive the
eye joints) plus priors: expression magnitude (squared, and linear for coefficients bounded below by 0), a
pull towards the previous frame's parameters (temporal regularisation, so a still face stays still) and, when
estimating a driver's identity, the identity prior. Levenberg-Marquardt on the analytic Jacobian of :class:`PointRig`, warm-started
from the previous frame; bounds (expression range, jaw and eye angles) by an active set.

With ``TrackConfig.focal_px`` (the video's focal length in pixels) the projection is a pinhole instead:
``uv = s k (x, -y) + (tx, ty)`` with ``k = 1 / (1 - s z / f)`` (model z towards the camera, the head's origin
f / s metres away), so a head turning close to the camera is not read as an expression (eta keeps its meaning
at the origin's depth).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.params import N_POSE, pose_slice
from headcast.model.head_model import N_CONTOUR
from headcast.model.rig import PointRig, matrix_to_rotvec, mirror_pairs, rotvec_to_matrix, yaw_degrees

P2 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # model x, y -> image u, v (the camera FLIP)
EYE_POINTS = np.arange(36, 48)
INNER_LIPS = np.arange(60, 68)


@dataclass
class TrackConfig:
    """Settings of the tracker. Weights multiply squared normalised errors (Loss5 units squared);
    angles in radians."""

    threshold: float = 0.04        # the paper's Loss5 stop threshold
    max_iters: int = 6             # per frame (warm start)
    min_iters: int = 1             # always move at least once: a blink changes Loss5 by ~0.01 only
    init_iters: int = 30           # first frame, or a face after frames without one
    w_contour: float = 0.5         # face-oval points (their definition differs most between detector and model)
    w_eyes: float = 3.0            # eyelid points: blinks
    w_inner_lips: float = 2.0      # mouth opening
    w_pupil: float = 1.0           # iris centres -> eye joints
    w_psi: float = 1e-4            # ||psi||^2
    # coefficients that rest at the lower end 0 of their range (ICT's, in [0, 1]) also cost w_psi_linear * psi:
    # an exponential prior, so landmark noise of a resting face (a few tenths of a millimetre, which a bound at 0
    # turns into small positive coefficients that never average out) moves no shape, while a real expression
    # loses only a constant. Not the eyelid shapes (it took a sixth off the blinks' range) nor the jaw's sideways ones
    # (with it, a one-frame fit of a turned head explained a one-sided smile's leftovers with jawLeft 0.24 + jawRight 0.06)
    w_psi_linear: float = 1e-4
    linear_exempt_expressions: tuple[str, ...] = ("eye", "jawLeft", "jawRight")
    # expressions whose defining motion no landmark sees (gaze is on the pupils and the eye joints;
    # the cheeks have no landmarks): their prior is w_psi times w_unseen
    unseen_expressions: tuple[str, ...] = ("eyeLook", "cheekPuff", "cheekSquint")
    w_unseen: float = 30.0
    # a mouth is symmetric unless the driver's landmarks say otherwise: (psi_L - psi_R)^2 of its left/right
    # pairs weighs w_asym, and the sideways shapes (lips or jaw pulled to one side) have w_psi times w_sideways
    w_asym: float = 1e-4
    sideways_expressions: tuple[str, ...] = ("mouthLeft", "mouthRight", "jawLeft", "jawRight")
    w_sideways: float = 5.0
    # lip shapes that open the mouth without the jaw: a jaw-only opening is explained by them too (the lips
    # part either way in 2D), so they get w_psi times w_jaw_like and the jaw takes the opening
    jaw_like_expressions: tuple[str, ...] = ("mouthFunnel", "mouthLowerDown_L", "mouthLowerDown_R")
    w_jaw_like: float = 10.0
    w_eye_prior: float = 2e-5      # eye joint angles^2
    w_beta: float = 2e-5           # driver identity ||beta||^2 (beta ~ N(0, 1))
    w_smooth_psi: float = 5e-4     # (psi - psi_prev)^2
    w_smooth_pose: float = 5e-2    # root rotation change^2 on a still head; divided by 1 + (speed / pose_speed)^2
    pose_speed: float = 0.01       # rad per frame: above it the head is turning and the pose prior fades
    w_smooth_jaw: float = 2e-3     # jaw angle change^2
    w_smooth_eyes: float = 2e-3    # eye angle change^2
    w_smooth_eta: float = 1e-3     # (log s change)^2 + (translation change / h)^2
    jaw_range: tuple[float, float] = (-0.05, 0.6)
    eye_max: float = 0.6
    # the video's focal length (pixels) for a perspective projection; None: orthographic (the video pipeline, the bench
    # and the live source set the video's nominal one: for_video)
    focal_px: float | None = None
    dynamic_contour: bool = False  # MediaPipe's contour points are fixed face points, not the silhouette
    identity_frames: int = 30      # frames with a face used to estimate the driver's shape
    identity_window_s: float = 10.0  # ... chosen among the first seconds of the video
    identity_quiet_share: float = 1.0  # ... among this share of them with the mouth most closed
    identity_components: int = 30  # leading identity components estimated
    identity_iters: int = 15       # Levenberg-Marquardt iterations of the joint calibration
    offset_dims: int = 3           # 3: offsets in x, y and depth; 2: in the model's x-y plane only
    w_offset: float = 0.05         # driver landmark offsets ||offset||^2 (metres^2); 0 turns them off
    # ... times this on the eyelid and lip points, where expressions live; not much more: the detector's lips sit a
    # millimetre or two off the model's at rest, and a calibration that may not move them there reads the difference
    # as expressions that change with the head's pose (a neutral mouth frowning head-on, stretched when turned);
    # much less (3-5) lets a resting frown into the offsets too (test_look's resting driver, lips over 1 mm)
    w_offset_mobile: float = 10.0
    w_psi_identity: float = 1e-4   # expression prior while estimating the identity

    def for_video(self, width: int, height: int) -> "TrackConfig":
        """These settings for a video of ``width`` x ``height`` pixels: without a focal length of their own, the
        nominal one of a driving video (:meth:`Intrinsics.nominal`), so a head turning close to the camera is seen
        in perspective."""
        if self.focal_px is not None or not width or not height:
            return self
        return replace(self, focal_px=Intrinsics.nominal(width, height).fx)


@dataclass
class Observation:
    """Detected points of one frame in pixels: landmarks (68, 2), pupils (2, 2) (left eye, right eye)
    or None."""

    landmarks: np.ndarray
    pupils: np.ndarray | None = None

    @property
    def half_size(self) -> float:
        """h: half the side of the square bounding the 68 landmarks, pixels (Loss5's unit)."""
        lo, hi = self.landmarks.min(0), self.landmarks.max(0)
        return float(max(hi - lo) / 2)


@dataclass
class FrameState:
    """Tracked parameters: root rotation R0 (3, 3), jaw angle (rad, about the model x axis), eye
    rotations (2, 3, 3) (left, right), coefficients z (the rig's layout), log s (s in px/m), t (2,) px."""

    R0: np.ndarray
    jaw: float
    eyes: np.ndarray
    z: np.ndarray
    log_s: float
    t: np.ndarray

    def copy(self) -> "FrameState":
        return FrameState(self.R0.copy(), self.jaw, self.eyes.copy(), self.z.copy(), self.log_s, self.t.copy())

    def rotations(self) -> np.ndarray:
        """(3, 3, 3) local rotations of jaw, left eye, right eye."""
        return np.stack([rotvec_to_matrix([self.jaw, 0.0, 0.0]), self.eyes[0], self.eyes[1]])

    def theta(self) -> np.ndarray:
        """FLAME pose (N_POSE,): root | neck (0) | jaw | left eye | right eye, axis-angle."""
        th = np.zeros(N_POSE)
        th[pose_slice("root")] = matrix_to_rotvec(self.R0)
        th[pose_slice("jaw")] = [self.jaw, 0.0, 0.0]
        th[pose_slice("left_eye")] = matrix_to_rotvec(self.eyes[0])
        th[pose_slice("right_eye")] = matrix_to_rotvec(self.eyes[1])
        return th

    def eta(self) -> np.ndarray:
        """The paper's eta (s px/m, tx px, ty px)."""
        return np.array([np.exp(self.log_s), self.t[0], self.t[1]])


@dataclass
class Residuals:
    """r (2K,) weighted normalised residuals, Loss5, uv (K, 2) model points in pixels, the point rows,
    the per-point residual scale (K,), s, the projection's derivative (K, 2, 3) by model-frame point (None:
    orthographic, P2); with a Jacobian: J (2K, n) and its column layout."""

    r: np.ndarray
    loss5: float
    uv: np.ndarray
    rows: np.ndarray
    scale: np.ndarray
    s: float
    proj: np.ndarray | None = None
    J: np.ndarray | None = None
    layout: dict | None = None


def project(proj: np.ndarray | None, d: np.ndarray) -> np.ndarray:
    """Image derivatives (K, 2, n) of model-frame point derivatives ``d`` (K, 3, n) under the projection's
    per-point derivative ``proj`` (K, 2, 3) (None: the orthographic P2), before the scale s."""
    return np.einsum("ab,kbc->kac", P2, d) if proj is None else np.einsum("kab,kbc->kac", proj, d)


@dataclass
class FitResult:
    state: FrameState
    loss: float          # Loss5 after the fit
    iterations: int
    landmarks: np.ndarray  # (68, 2) the model's projected landmarks, pixels


class FrameFitter:
    """LM fitting of :class:`FrameState` to observations for one :class:`PointRig`.

    ``free_z`` selects which coefficients move (all by default). The rig's identity columns have the
    prior ``w_beta``; its expression columns ``w_psi`` (times ``w_unseen`` for the unseen ones) and the
    bounds ``expr_range``.
    """

    def __init__(self, rig: PointRig, config: TrackConfig | None = None,
                 expr_range: tuple[float, float] | None = None, free_z: np.ndarray | None = None):
        self.rig = rig
        self.cfg = config or TrackConfig()
        Z = rig.Z
        self.free_z = np.ones(Z, bool) if free_z is None else np.asarray(free_z, bool)
        self.lo = np.full(Z, -np.inf)
        self.hi = np.full(Z, np.inf)
        if expr_range is not None:
            self.lo[rig.n_id:] = expr_range[0] - rig.psi0[rig.expr_cols]
            self.hi[rig.n_id:] = expr_range[1] - rig.psi0[rig.expr_cols]
        names = list(rig.model.meta.get("expression_names") or [])
        unseen = np.array([bool(names) and names[i].startswith(self.cfg.unseen_expressions) for i in rig.expr_cols])
        sideways = np.array([bool(names) and names[i] in self.cfg.sideways_expressions for i in rig.expr_cols])
        jaw_like = np.array([bool(names) and names[i] in self.cfg.jaw_like_expressions for i in rig.expr_cols])
        scale = np.where(unseen, self.cfg.w_unseen, np.where(sideways, self.cfg.w_sideways, 1.0))
        self.prior = np.r_[np.full(rig.n_id, self.cfg.w_beta),
                           np.where(jaw_like, self.cfg.w_jaw_like, scale) * self.cfg.w_psi]
        self.pairs = mirror_pairs(names, rig.expr_cols, rig.n_id)
        self.linear = np.zeros(Z)  # d cost / d z of the exponential prior (only where the range starts at 0)
        if expr_range is not None and expr_range[0] == 0:
            exempt = np.array([bool(names) and names[i].startswith(self.cfg.linear_exempt_expressions)
                               for i in rig.expr_cols], dtype=bool)
            self.linear[rig.n_id:] = np.where(exempt, 0.0, self.cfg.w_psi_linear)
        w = np.ones(68)
        w[:N_CONTOUR] = self.cfg.w_contour
        w[EYE_POINTS] = self.cfg.w_eyes
        w[INNER_LIPS] = self.cfg.w_inner_lips
        self.w68 = w
        self.has_pupils = rig.pts.has_pupils

    # -- parameter layout: [root 3 | jaw 1 | left eye 2 | right eye 2 | z free | log s | t 2] ----
    def _layout(self, pupils: bool) -> dict[str, slice]:
        nz = int(self.free_z.sum())
        ne = 2 if pupils else 0
        o = {"root": slice(0, 3), "jaw": slice(3, 4), "eyes": slice(4, 4 + 2 * ne)}
        k = 4 + 2 * ne
        o["z"] = slice(k, k + nz)
        o["log_s"] = slice(k + nz, k + nz + 1)
        o["t"] = slice(k + nz + 1, k + nz + 3)
        o["n"] = k + nz + 3
        return o

    def initial_state(self, obs: Observation, z: np.ndarray | None = None) -> FrameState:
        """A frontal head placed by a 2D similarity of the inner landmarks (scale, in-plane angle, shift)."""
        z = np.zeros(self.rig.Z) if z is None else z.copy()
        st = FrameState(np.eye(3), 0.0, np.stack([np.eye(3)] * 2), z, 0.0, np.zeros(2))
        rows = self.rig.pts.rows_for(0.0, pupils=False)
        x = self.rig.points(rows, st.R0, st.rotations(), z, jacobian=False)
        src = (x @ P2.T)[N_CONTOUR:]
        dst = obs.landmarks[N_CONTOUR:]
        a, b = src - src.mean(0), dst - dst.mean(0)
        s = np.sqrt((b ** 2).sum() / (a ** 2).sum())
        # in-plane angle: image v points down, so an image rotation by phi is a model rotation by -phi about z
        phi = np.arctan2((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum(), (a * b).sum())
        st.R0 = rotvec_to_matrix([0.0, 0.0, -phi])
        x = self.rig.points(rows, st.R0, st.rotations(), z, jacobian=False)
        st.log_s = float(np.log(s))
        st.t = dst.mean(0) - s * (x @ P2.T)[N_CONTOUR:].mean(0)
        return st

    # -- residuals -----------------------------------------------------------------------------
    def _data(self, st: FrameState, obs: Observation, jac: bool) -> "Residuals":
        """Weighted, normalised landmark residuals at ``st`` (and their Jacobian when ``jac``)."""
        use_pupils = self.has_pupils and obs.pupils is not None
        rows = self.rig.pts.rows_for(yaw_degrees(st.R0), pupils=use_pupils)
        out = self.rig.points(rows, st.R0, st.rotations(), st.z, jacobian=jac)
        x = out[0] if jac else out
        s = np.exp(st.log_s)
        xy = x @ P2.T
        f = self.cfg.focal_px
        if f:
            # a pinhole f px from the image of the head's origin, f / s metres away: model z points at the camera
            k = 1.0 / (1.0 - np.minimum(s * x[:, 2] / f, 0.5))
            proj = k[:, None, None] * P2 + (s * k ** 2 / f)[:, None, None] * xy[:, :, None] * np.array([0.0, 0.0, 1.0])
            dlog_s = s * (k + s * k ** 2 * x[:, 2] / f)[:, None] * xy
            uv = s * k[:, None] * xy + st.t
        else:
            proj, dlog_s = None, s * xy
            uv = dlog_s + st.t
        target = obs.landmarks if not use_pupils else np.vstack([obs.landmarks, obs.pupils])
        w = self.w68 if not use_pupils else np.r_[self.w68, self.cfg.w_pupil, self.cfg.w_pupil]
        h = obs.half_size
        scale = np.sqrt(w / w[:68].sum()) / h  # sum of squares = weighted mean, in Loss5 units
        r = ((uv - target) * scale[:, None]).ravel()
        loss5 = float(np.sqrt(((uv[:68] - obs.landmarks) ** 2).sum(1).mean()) / h)
        res = Residuals(r, loss5, uv, rows, scale, s, proj)
        if not jac:
            return res
        _, d_root, d_g, d_z = out
        L = self._layout(use_pupils)
        K = len(rows)
        Jm = np.zeros((K, 2, L["n"]))
        Jm[:, :, L["root"]] = s * project(proj, d_root)
        Jm[:, :, L["jaw"]] = s * project(proj, d_g[0][:, :, :1])
        if use_pupils:
            Jm[:, :, L["eyes"]] = s * project(proj, np.concatenate([d_g[1][:, :, :2], d_g[2][:, :, :2]], 2))
        Jm[:, :, L["z"]] = s * project(proj, d_z[:, :, self.free_z])
        Jm[:, :, L["log_s"]] = dlog_s[:, :, None]
        Jm[:, 0, L["t"].start] = 1.0
        Jm[:, 1, L["t"].start + 1] = 1.0
        Jm *= scale[:, None, None]
        res.J = Jm.reshape(2 * K, -1)
        res.layout = L
        return res

    def _priors(self, st: FrameState, L: dict, prev: FrameState | None, h: float, speed: float = 0.0,
                jacobian: bool = True):
        """Prior residual rows (r, J) at ``st`` (J None without ``jacobian``: a cost needs only r);
        ``speed``: the head's last rotation per frame (rad)."""
        c = self.cfg
        rows_r, rows_J = [], []

        def add(res, cols, weight, jac=None):
            res = np.atleast_1d(res)
            rows_r.append(np.sqrt(weight) * res)
            if jacobian:
                J = np.zeros((len(res), L["n"]))
                J[:, cols] = np.eye(len(res)) if jac is None else jac
                rows_J.append(np.sqrt(weight) * J)

        fz = self.free_z
        add(st.z[fz] * np.sqrt(self.prior[fz] / self.prior[fz].max()), L["z"], self.prior[fz].max(),
            np.diag(np.sqrt(self.prior[fz] / self.prior[fz].max())))
        pairs = self.pairs[fz[self.pairs].all(1)] if len(self.pairs) and c.w_asym > 0 else ()
        if len(pairs):
            pos = np.cumsum(fz) - 1  # z index -> column among the free ones
            D = np.zeros((len(pairs), int(fz.sum())))
            D[np.arange(len(pairs)), pos[pairs[:, 0]]] = 1.0
            D[np.arange(len(pairs)), pos[pairs[:, 1]]] = -1.0
            add(st.z[pairs[:, 0]] - st.z[pairs[:, 1]], L["z"], c.w_asym, D)
        use_eyes = L["eyes"].stop > L["eyes"].start
        if use_eyes:
            e = np.concatenate([matrix_to_rotvec(st.eyes[0])[:2], matrix_to_rotvec(st.eyes[1])[:2]])
            add(e, L["eyes"], c.w_eye_prior)
        if prev is not None:
            add(st.z[fz] - prev.z[fz], L["z"], c.w_smooth_psi)
            # yaw is barely seen near a frontal view: a fixed prior would hold a turning head back
            add(matrix_to_rotvec(st.R0 @ prev.R0.T), L["root"], c.w_smooth_pose / (1 + (speed / c.pose_speed) ** 2))
            add(st.jaw - prev.jaw, L["jaw"], c.w_smooth_jaw)
            if use_eyes:
                e = np.concatenate([matrix_to_rotvec(st.eyes[0] @ prev.eyes[0].T)[:2],
                                    matrix_to_rotvec(st.eyes[1] @ prev.eyes[1].T)[:2]])
                add(e, L["eyes"], c.w_smooth_eyes)
            add(st.log_s - prev.log_s, L["log_s"], c.w_smooth_eta)
            add((st.t - prev.t) / h, L["t"], c.w_smooth_eta, np.eye(2) / h)
        return np.concatenate(rows_r), np.vstack(rows_J) if jacobian else None

    def linear_cost(self, st: FrameState) -> float:
        """The exponential prior's cost ``w_psi_linear * (z - lo)`` over the free coefficients it covers."""
        on = self.free_z & (self.linear > 0)
        return float(self.linear[on] @ (st.z[on] - self.lo[on]))

    def linear_gradient(self, L: dict) -> np.ndarray:
        """(n,) half the exponential prior's gradient in layout ``L`` (the Gauss-Newton system's g is J^T r)."""
        g = np.zeros(L["n"])
        g[L["z"]] = self.linear[self.free_z] / 2
        return g

    def cost(self, st: FrameState, obs: Observation, prev: FrameState | None, speed: float = 0.0
             ) -> tuple[float, float]:
        d = self._data(st, obs, False)
        L = self._layout(self.has_pupils and obs.pupils is not None)
        rp, _ = self._priors(st, L, prev, obs.half_size, speed, jacobian=False)
        return float(d.r @ d.r + rp @ rp) + self.linear_cost(st), d.loss5

    # -- update --------------------------------------------------------------------------------
    def _apply(self, st: FrameState, d: np.ndarray, L: dict) -> FrameState:
        c = self.cfg
        n = st.copy()
        n.R0 = rotvec_to_matrix(d[L["root"]]) @ st.R0
        n.jaw = float(np.clip(st.jaw + d[L["jaw"]][0], *c.jaw_range))
        if L["eyes"].stop > L["eyes"].start:
            de = d[L["eyes"]].reshape(2, 2)
            for i in range(2):
                R = rotvec_to_matrix([de[i, 0], de[i, 1], 0.0]) @ st.eyes[i]
                rv = matrix_to_rotvec(R)
                a = np.linalg.norm(rv)
                n.eyes[i] = rotvec_to_matrix(rv * min(1.0, c.eye_max / a)) if a > c.eye_max else R
        z = n.z.copy()
        z[self.free_z] = np.clip(st.z[self.free_z] + d[L["z"]], self.lo[self.free_z], self.hi[self.free_z])
        n.z = z
        n.log_s = st.log_s + float(d[L["log_s"]][0])
        n.t = st.t + d[L["t"]]
        return n

    def _bounds(self, st: FrameState, L: dict):
        """Current values, lower and upper bounds (n,) of the bounded unknowns in layout ``L``."""
        n = L["n"]
        lo = np.full(n, -np.inf)
        hi = np.full(n, np.inf)
        cur = np.zeros(n)
        lo[L["z"]], hi[L["z"]] = self.lo[self.free_z], self.hi[self.free_z]
        cur[L["z"]] = st.z[self.free_z]
        lo[L["jaw"]], hi[L["jaw"]] = self.cfg.jaw_range
        cur[L["jaw"]] = st.jaw
        return cur, lo, hi

    def held(self, g: np.ndarray, st: FrameState, L: dict, eps: float = 1e-9) -> np.ndarray:
        """(n,) unknowns at a bound that the gradient ``g`` pushes outwards."""
        cur, lo, hi = self._bounds(st, L)
        return ((cur <= lo + eps) & (g > 0)) | ((cur >= hi - eps) & (g < 0))

    def _bounded_solve(self, H: np.ndarray, g: np.ndarray, st: FrameState, L: dict) -> np.ndarray:
        """Newton step with variables at a bound that the gradient pushes outward held fixed."""
        cur, lo, hi = self._bounds(st, L)
        eps = 1e-9
        held = self.held(g, st, L, eps)
        d = np.zeros(L["n"])
        for _ in range(3):
            f = ~held
            d[:] = 0
            d[f] = np.linalg.solve(H[np.ix_(f, f)], -g[f])
            new = cur + d
            out = ((new < lo - eps) & (d < 0)) | ((new > hi + eps) & (d > 0))
            if not out.any():
                break
            # hold the worst offenders at their bound and re-solve
            held |= out & (np.abs(d) > 0.5 * np.abs(d[out]).max())
        return d

    def fit(self, obs: Observation, start: FrameState, prev: FrameState | None = None,
            max_iters: int | None = None, min_iters: int | None = None,
            threshold: float | None = None, speed: float = 0.0) -> FitResult:
        """Fit one frame from ``start``; ``prev`` (the previous frame's result) anchors the temporal prior,
        ``speed`` (the head's rotation between the two frames before, rad) loosens its pose part.

        Stops once Loss5 < threshold after at least ``min_iters`` updates, when an update no longer
        lowers the cost, or after ``max_iters`` updates.
        """
        c = self.cfg
        max_iters = c.max_iters if max_iters is None else max_iters
        min_iters = c.min_iters if min_iters is None else min_iters
        threshold = c.threshold if threshold is None else threshold
        h = obs.half_size
        st = start.copy()
        damping = 1e-4
        it = 0
        d = self._data(st, obs, True)
        L = d.layout
        rp, Jp = self._priors(st, L, prev, h, speed)
        cost = float(d.r @ d.r + rp @ rp) + self.linear_cost(st)
        loss5 = d.loss5
        while it < max_iters and not (it >= min_iters and loss5 < threshold):
            Ja = np.vstack([d.J, Jp])
            ra = np.concatenate([d.r, rp])
            H = Ja.T @ Ja
            g = Ja.T @ ra + self.linear_gradient(L)
            dg = np.diag(H).copy()
            accepted = False
            for _ in range(6):
                step = self._bounded_solve(H + np.diag(damping * dg + 1e-12), g, st, L)
                cand = self._apply(st, step, L)
                new_cost, new_loss = self.cost(cand, obs, prev, speed)
                if new_cost < cost:
                    damping = max(damping / 4, 1e-7)
                    accepted = True
                    break
                damping *= 8
            it += 1
            if not accepted:
                break
            gain = cost - new_cost
            st, cost, loss5 = cand, new_cost, new_loss
            if gain < 1e-6 * cost or (it >= min_iters and loss5 < threshold) or it >= max_iters:
                break
            d = self._data(st, obs, True)
            L = d.layout
            rp, Jp = self._priors(st, L, prev, h, speed)
        d = self._data(st, obs, False)
        return FitResult(st, d.loss5, it, d.uv[:68])
