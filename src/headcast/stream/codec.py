"""Per-frame parameter payloads of the two profiles.

``paper``: theta (the paper's 6: root and jaw axis-angle), psi (E) and eta as raw little-endian
float32, self-contained in every frame: ``4 * (6 + E + n_eta)`` bytes (436 for FLAME's 100
expressions and the 3-number eta).

``compact``: each component ``x_j`` of ``[theta (N_POSE = 15) | psi (E) | eta']`` (eta' = eta with the scale
replaced by its logarithm) is quantised as ``q_j = round(x_j / step_j)`` with the steps carried in
the INIT. A keyframe codes the ``q_j`` themselves (signed Exp-Golomb); the frames after it code
``q_j - q_j(previous frame)`` with an arithmetic coder under Laplace scales that adapt to the residuals
coded so far (one state per component and per context: previous value zero or not). The
quantisation is done on integers, so the decoder rebuilds exactly what the encoder predicted from:
no drift. Steps: :func:`quantisation_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, pose_slice
from headcast.stream import coder as C
from headcast.stream.introduction import wire_steps
from headcast.stream.wire import COMPACT, ETA_PAPER, ETA_SIM, PAPER, InitInfo, ProtocolError

PAPER_POSE = np.r_[pose_slice("root"), pose_slice("jaw")]  # root and jaw: the paper's L = 6
Q_MAX = 1 << 24                            # |q| cap: a value beyond it is clipped (and reported)
KEY_EG_ORDER = 4


@dataclass
class ParamFrame:
    """One video frame's parameters: seq, t (seconds), theta (N_POSE,) rad, psi (E,), eta (3,) paper
    (s px/m, tx px, ty px) or (4,) similarity (scale, tx, ty, tz metres), face (False: none found)."""

    seq: int
    t: float
    theta: np.ndarray
    psi: np.ndarray
    eta: np.ndarray
    face: bool = True


# -- vector layout -----------------------------------------------------------------------------
def to_vector(theta: np.ndarray, psi: np.ndarray, eta: np.ndarray, info: InitInfo) -> np.ndarray:
    """The components (C,) a profile codes, float64."""
    theta = np.asarray(theta, dtype=np.float64).reshape(N_POSE)
    th = theta[PAPER_POSE] if info.n_pose == 6 else theta
    eta = np.asarray(eta, dtype=np.float64).reshape(-1)
    if eta.size != info.n_eta:
        raise HeadcastError(f"eta has {eta.size} values, the stream carries {info.n_eta}")
    psi = np.asarray(psi, dtype=np.float64).reshape(-1)
    if psi.size != info.n_expr:
        raise HeadcastError(f"psi has {psi.size} values, the stream carries {info.n_expr}")
    if info.profile == COMPACT:
        if eta[0] <= 0:
            raise HeadcastError(f"eta scale {eta[0]} must be positive")
        eta = np.r_[np.log(eta[0]), eta[1:]]
    return np.concatenate([th, psi, eta])


def from_vector(x: np.ndarray, info: InitInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta (N_POSE,), psi (E,), eta from a component vector."""
    x = np.asarray(x, dtype=np.float64)
    theta = np.zeros(N_POSE)
    if info.n_pose == 6:
        theta[PAPER_POSE] = x[:6]
    else:
        theta[:] = x[:N_POSE]
    psi = x[info.n_pose:info.n_pose + info.n_expr].copy()
    eta = x[info.n_pose + info.n_expr:].copy()
    if info.profile == COMPACT:
        eta[0] = np.exp(np.clip(eta[0], -50, 50))
    return theta, psi, eta


# -- quantisation steps ------------------------------------------------------------------------
def component_sensitivity(model, beta: np.ndarray, n_pose: int, eta_kind: int, eta_ref: np.ndarray) -> np.ndarray:
    """RMS over the model's vertices of the displacement (metres) per unit of each component (C,).

    Pose: finite differences of :class:`HeadLayer` at the rest pose (rotations of a joint move the
    vertices it carries); expression: the basis itself; placement: the image-plane displacement
    divided by the scale (metres at the head): log-scale moves a vertex by its distance from the
    model origin, a pixel of translation by ``1 / s`` metres.
    """
    import torch

    from headcast.model.layer import HeadLayer

    layer = HeadLayer(model, dtype=torch.float64)
    E = layer.n_expr
    beta_t = torch.as_tensor(np.asarray(beta, dtype=np.float64)[None, :layer.n_shape])
    pose_ids = PAPER_POSE if n_pose == 6 else np.arange(N_POSE)
    h = 1e-4
    th = torch.zeros(1 + len(pose_ids), N_POSE, dtype=torch.float64)
    for k, j in enumerate(pose_ids):
        th[1 + k, j] = h
    with torch.no_grad():
        v = layer.vertices(beta_t.expand(len(th), -1), torch.zeros(len(th), E, dtype=torch.float64), th).numpy()
    s_pose = np.sqrt((((v[1:] - v[:1]) / h) ** 2).sum(-1).mean(-1))
    ed = np.asarray(model.exprdirs[:, :, :E], dtype=np.float64)
    s_expr = np.sqrt((ed ** 2).sum(1).mean(0))
    v0 = v[0]
    if eta_kind == ETA_PAPER:
        s_ref = float(eta_ref[0])
        s_eta = np.array([np.sqrt((v0[:, :2] ** 2).sum(1).mean()), 1.0 / s_ref, 1.0 / s_ref])
    else:
        s_eta = np.array([np.sqrt((v0 ** 2).sum(1).mean()), 1.0, 1.0, 1.0])
    return np.concatenate([s_pose, s_expr, s_eta])


def expression_peaks(model, n_expr: int) -> np.ndarray:
    """The largest displacement of any vertex (metres) per unit of each of the first ``n_expr`` expression
    coefficients (n_expr,)."""
    ed = np.asarray(model.exprdirs[:, :, :n_expr], dtype=np.float64)
    return np.sqrt((ed ** 2).sum(1)).max(0)


def quantisation_steps(sensitivity: np.ndarray, target_mm: float = 0.1, n_pose: int = N_POSE, n_eta: int = 3,
                       max_rot: float = 0.005, expr_peak: np.ndarray | None = None,
                       peak_mm: float = 0.2) -> np.ndarray:
    """Steps (C,) giving every component the same RMS vertex error ``target_mm / sqrt(C)`` (so the
    total RMS is about ``target_mm`` when every component varies): ``step_j = sqrt(12) * e / S_j``
    (uniform quantisation error has RMS step / sqrt(12)). Rotations are capped at ``max_rot`` rad, and
    an expression whose largest vertex displacement per unit is ``expr_peak`` (E,) metres at
    ``2 * peak_mm / expr_peak``, so rounding moves no vertex by more than ``peak_mm`` (small parts, the
    eyelids, keep a fine step). Rounded as the INIT carries them, one-byte powers of 2^(1/8):
    :func:`introduction.wire_steps`."""
    S = np.maximum(np.asarray(sensitivity, dtype=np.float64), 1e-9)
    e = target_mm * 1e-3 / np.sqrt(S.size)
    steps = np.sqrt(12) * e / S
    steps[:n_pose] = np.minimum(steps[:n_pose], max_rot)
    if expr_peak is not None:
        peak = np.maximum(np.asarray(expr_peak, dtype=np.float64), 1e-9)
        steps[n_pose:S.size - n_eta] = np.minimum(steps[n_pose:S.size - n_eta], 2 * peak_mm * 1e-3 / peak)
    return wire_steps(steps)


def steps_for(model, beta, n_pose: int, eta_kind: int, eta_ref, target_mm: float = 0.1) -> np.ndarray:
    """Steps for a model and identity: :func:`component_sensitivity` then :func:`quantisation_steps`."""
    S = component_sensitivity(model, beta, n_pose, eta_kind, eta_ref)
    n_eta = 3 if eta_kind == ETA_PAPER else 4
    peaks = expression_peaks(model, S.size - n_pose - n_eta)
    return quantisation_steps(S, target_mm, n_pose, n_eta, expr_peak=peaks)


# -- paper profile -----------------------------------------------------------------------------
def paper_encode(x: np.ndarray) -> bytes:
    return np.asarray(x, dtype="<f4").tobytes()


def paper_decode(payload: bytes, info: InitInfo) -> np.ndarray:
    n = info.n_components
    if len(payload) != 4 * n:
        raise ProtocolError(f"paper frame payload is {len(payload)} bytes, expected {4 * n}")
    x = np.frombuffer(payload, dtype="<f4").astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ProtocolError("paper frame has non-finite values")
    return x


# -- compact profile ---------------------------------------------------------------------------
def initial_state(n: int) -> np.ndarray:
    """The adaptive coder's state after a keyframe (2, n) int64: row 0 for components whose previous value
    was non-zero, row 1 for exactly zero ones (the tracker's expression prior leaves many at 0), each
    ADAPT_ONE x the running mean |residual| (:func:`coder.adapt`), starting at one step."""
    return np.full((2, n), C.ADAPT_ONE, dtype=np.int64)


def code_delta(q: np.ndarray, q_prev: np.ndarray, state: np.ndarray, enc: C.Encoder | None = None,
               dec: C.Decoder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Code (``enc``) or decode (``dec``; q is then ignored) the residuals q - q_prev (C,) under the adaptive
    state (2, C); returns (q, the next state). One pass over the C components: bounded."""
    q_out = np.empty_like(q_prev)
    nxt = state.copy()
    for j in range(q_prev.size):
        c = 1 if q_prev[j] == 0 else 0
        m = int(state[c, j])
        s = C.scale_index(m)
        if enc is not None:
            r = int(q[j] - q_prev[j])
            enc.put_residual(r, s)
        else:
            r = dec.get_residual(s)
        nxt[c, j] = C.adapt(m, r)
        q_out[j] = q_prev[j] + r
    if np.any(np.abs(q_out) > Q_MAX):
        raise ProtocolError("compact frame: value out of range")
    return q_out, nxt


class CompactEncoder:
    """Quantise, predict from the previous frame and arithmetic-code; a keyframe every ``key_interval``
    frames. The Laplace scale of each residual adapts as the frames go
    (:func:`code_delta`), restarting from :func:`initial_state` at every keyframe (so a keyframe is
    decodable on its own)."""

    def __init__(self, info: InitInfo):
        self.info = info
        self.steps = np.asarray(info.steps, dtype=np.float64)
        self.q_prev: np.ndarray | None = None
        self.state = initial_state(info.n_components)
        self.clipped = 0
        self.last_key = None

    def quantise(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(np.asarray(x, dtype=np.float64) / self.steps)
        self.clipped += int((np.abs(q) > Q_MAX).sum())
        return np.clip(q, -Q_MAX, Q_MAX).astype(np.int64)

    def encode(self, x: np.ndarray, seq: int) -> tuple[bytes, bool]:
        """(payload, is_keyframe) for the component vector x (C,) of frame ``seq``."""
        q = self.quantise(x)
        # every key_interval-th seq, and never more than key_interval frames apart (no-face frames
        # can swallow a scheduled keyframe)
        ki = self.info.key_interval
        key = self.q_prev is None or seq % ki == 0 or seq - self.last_key >= ki
        enc = C.Encoder()
        if key:
            self.last_key = seq
            self.state = initial_state(q.size)
            for v in q:
                enc.put_eg(C.zigzag(int(v)), KEY_EG_ORDER)
        else:
            q, self.state = code_delta(q, self.q_prev, self.state, enc=enc)
        self.q_prev = q
        return enc.finish(), key


def compact_decode_key(payload: bytes, info: InitInfo) -> tuple[np.ndarray, np.ndarray]:
    """(q (C,), the adaptive state (2, C)) of a keyframe payload."""
    n = info.n_components
    d = C.Decoder(payload)
    q = np.array([C.unzigzag(d.get_eg(KEY_EG_ORDER)) for _ in range(n)], dtype=np.int64)
    if np.any(np.abs(q) > Q_MAX):
        raise ProtocolError("compact keyframe: value out of range")
    return q, initial_state(n)


def compact_decode_delta(payload: bytes, q_prev: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q (C,), the next adaptive state (2, C)) of a delta frame after q_prev under ``state``."""
    return code_delta(q_prev, q_prev, state, dec=C.Decoder(payload))


def dequantise(q: np.ndarray, info: InitInfo) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * np.asarray(info.steps, dtype=np.float64)


__all__ = ["ParamFrame", "to_vector", "from_vector", "component_sensitivity", "quantisation_steps", "expression_peaks",
           "steps_for",
           "paper_encode", "paper_decode", "CompactEncoder", "initial_state", "code_delta", "compact_decode_key",
           "compact_decode_delta", "dequantise", "PAPER", "COMPACT", "ETA_PAPER", "ETA_SIM"]
