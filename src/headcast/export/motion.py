"""Head motion for the glTF export: per-frame pose, expression and placement (:class:`Motion`), from an
animation folder or a few keyframes, and the axis-angle to quaternion tracks glTF animates joints with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import JOINT_NAMES, N_POSE, pose_slice
from headcast.io.anim import Animation


@dataclass
class Motion:
    """Per-frame head parameters for a glTF animation: times (N,) seconds (increasing), theta (N, N_POSE)
    axis-angle radians, psi (N, E), and the head's motion relative to the reconstruction's placement:
    scale (N,) multiplies its scale and translation (N, 3) metres (OpenCV camera frame) is added to its
    translation."""

    times: np.ndarray
    theta: np.ndarray
    psi: np.ndarray
    scale: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).ravel()
        N = len(self.times)
        self.theta = np.asarray(self.theta, dtype=np.float64).reshape(N, -1)
        self.psi = np.asarray(self.psi, dtype=np.float64).reshape(N, -1)
        self.scale = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (N,)).copy()
        self.translation = np.broadcast_to(np.asarray(self.translation, dtype=np.float64), (N, 3)).copy()
        if N < 2:
            raise HeadcastError(f"an animation needs at least 2 frames, got {N}")
        if self.theta.shape[1] != N_POSE:
            raise HeadcastError(f"animation theta must be (N, {N_POSE}), got {self.theta.shape}")
        if not np.all(np.diff(self.times) > 0) or not np.all(np.isfinite(self.times)):
            raise HeadcastError("animation times must be finite and strictly increasing")
        if not (np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.psi)) and np.all(self.scale > 0)):
            raise HeadcastError("animation parameters must be finite with a positive scale")


def keyframe_animation(n_expr: int, expression_names: list[str] | None = None, seconds: float = 4.0,
                       fps: float = 25.0, seed: int = 0) -> Motion:
    """A short demo animation from a few keyframes: head turn and nod, jaw open/close, eye glances, and
    expressions (smile and blink when the names are known, otherwise random components), smoothly
    interpolated; translation zero and scale 1 (so the reconstruction's placement stays)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fps)) + 1) / fps
    u = t / seconds
    root, neck, jaw, left_eye, right_eye = (pose_slice(j).start for j in JOINT_NAMES)
    theta = np.zeros((len(t), N_POSE))
    theta[:, root + 1] = 0.45 * np.sin(2 * np.pi * u)                 # root yaw (about y), radians
    theta[:, neck] = 0.15 * np.sin(4 * np.pi * u)                     # neck pitch
    theta[:, jaw] = 0.25 * np.clip(np.sin(3 * np.pi * u), 0, None)    # jaw opens (about x)
    glance = 0.3 * np.sin(2 * np.pi * 2 * u + 1.0)
    theta[:, left_eye + 1] = theta[:, right_eye + 1] = glance          # both eyes about y
    psi = np.zeros((len(t), n_expr))
    names = [n.lower() for n in (expression_names or [])]
    pick = lambda key: [i for i, n in enumerate(names) if key in n]  # noqa: E731
    smile, blink = pick("smile"), pick("blink")
    if smile or blink:
        psi[:, smile] = np.clip(np.sin(2 * np.pi * u - 0.5), 0, None)[:, None]
        psi[:, blink] = np.exp(-((u[:, None] - np.array([0.3, 0.8])) / 0.03) ** 2).sum(1, keepdims=True)
    else:
        comps = rng.choice(n_expr, size=min(3, n_expr), replace=False)
        for k, c in enumerate(comps):
            psi[:, c] = 1.5 * np.sin(2 * np.pi * (k + 1) * u + rng.uniform(0, 2 * np.pi))
    return Motion(t, theta, psi, np.ones(len(t)), np.zeros((len(t), 3)))


def motion_from(anim: Animation) -> Motion:
    """An animation folder's frames as motion relative to its first frame: scale s / s0, and translation
    t - t0 metres (similarity) or (t - t0) / s0 for an eta (image u, v along camera x, y), which the
    export applies on top of the reconstruction's placement."""
    if anim.n_frames < 2:
        raise HeadcastError(f"{anim.source}: a glTF animation needs at least 2 frames, this has {anim.n_frames}")
    pl = anim.placement
    t = np.zeros((anim.n_frames, 3))
    if anim.placement_kind == "similarity":
        t = pl[:, 1:] - pl[0, 1:]
    else:
        t[:, :2] = (pl[:, 1:] - pl[0, 1:]) / pl[0, 0]
    return Motion(anim.times, anim.theta, anim.psi, pl[:, 0] / pl[0, 0], t)


def axis_angle_to_quat(r: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) radians -> unit quaternions (..., 4) in glTF order (x, y, z, w)."""
    r = np.asarray(r, dtype=np.float64)
    a = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * a
    k = np.where(a > 1e-12, np.sin(half) / np.maximum(a, 1e-300), 0.5 - a * a / 48)  # sin(a/2)/a near 0
    return np.concatenate([r * k, np.cos(half)], axis=-1)


def continuous_quats(q: np.ndarray) -> np.ndarray:
    """Flip signs along a (N, 4) track so neighbours lie in the same hemisphere (shortest interpolation)."""
    q = np.array(q, dtype=np.float64)
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q
