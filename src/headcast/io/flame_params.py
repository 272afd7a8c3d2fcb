"""FLAME parameter files as the FLAME avatar trainers use them (``flame_param.npz``; docs/interop.md).

Keys (T frames, float32): ``shape`` (S,) identity; ``expr`` (T, E); ``rotation``, ``neck_pose``,
``jaw_pose`` (T, 3) and ``eyes_pose`` (T, 6) (left eye then right eye), axis-angle radians in FLAME's
model frame (x to the subject's left, y up, z out of the face); ``translation`` (T, 3) metres added to
the posed FLAME vertices; ``static_offset`` (1, V, 3) metres added to the template (zeros: headcast
has none). Camera: ``focal_length`` (2,) and ``principal_point`` (2,) pixels, ``image_size`` (2,)
(width, height), OpenCV camera frame, ``world_to_camera`` (4, 4) = diag(1, -1, -1, 1) (the camera at
the origin looking along the model's -z, at the face). headcast adds ``scale`` (T,), ``fps`` and
``times`` (T,) seconds: ``X_cam = scale * FLIP @ (X + translation)``; a reader ignoring ``scale``
sees the same image (a pinhole projection does not change under a uniform scale about the camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.io.arrays import need, read_npz
from headcast.io.validate import finite_array

MAX_BYTES = 256 << 20
POSE_KEYS = {"rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
WORLD_TO_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class FlameParams:
    """T frames of FLAME parameters (see the module docstring): shape (S,), expr (T, E), rotation,
    neck_pose, jaw_pose (T, 3), eyes_pose (T, 6), translation (T, 3), scale (T,), times (T,) s, fps,
    camera (Intrinsics or None), static_offset (1, V, 3) or None."""

    shape: np.ndarray
    expr: np.ndarray
    rotation: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eyes_pose: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    times: np.ndarray
    fps: float
    camera: Intrinsics | None = None
    static_offset: np.ndarray | None = None

    @property
    def theta(self) -> np.ndarray:
        """headcast's pose (T, 15): root | neck | jaw | left eye | right eye."""
        return np.concatenate([self.rotation, self.neck_pose, self.jaw_pose, self.eyes_pose], axis=1)


def flame_param_arrays(p: FlameParams, n_vertices: int) -> dict[str, np.ndarray]:
    """The arrays of ``flame_param.npz`` (float32, the trainers' dtype)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    out = {"shape": f32(p.shape), "expr": f32(p.expr), "rotation": f32(p.rotation), "neck_pose": f32(p.neck_pose),
           "jaw_pose": f32(p.jaw_pose), "eyes_pose": f32(p.eyes_pose), "translation": f32(p.translation),
           "static_offset": np.zeros((1, n_vertices, 3), np.float32) if p.static_offset is None else f32(p.static_offset),
           "scale": f32(p.scale), "times": np.asarray(p.times, np.float64), "fps": np.float64(p.fps),
           "world_to_camera": f32(WORLD_TO_CAMERA)}
    if p.camera is not None:
        K = p.camera
        out.update(focal_length=f32([K.fx, K.fy]), principal_point=f32([K.cx, K.cy]),
                   image_size=np.array([K.width, K.height], np.int32))
    return out


def read_flame_params(path: str | Path, default_fps: float = 25.0) -> FlameParams:
    """A ``flame_param.npz``, checked (every pose key (T, 3) or (T, 6), expr (T, E), translation (T, 3), finite);
    ``default_fps`` when it has neither ``fps`` nor ``times``. HeadcastError naming the file and key."""
    path = Path(path)
    z = read_npz(path, "FLAME parameter file", max_bytes=MAX_BYTES, kind="FLAME parameter file (.npz)")

    def arr(key: str, shape: tuple) -> np.ndarray:
        return finite_array(need(z, key, path), f"{path}: {key}", shape, dtype=np.float64)

    expr = arr("expr", (None, None))
    T = len(expr)
    if T == 0:
        raise HeadcastError(f"{path}: expr has no frames")
    poses = {k: arr(k, (T, n)) for k, n in POSE_KEYS.items()}
    translation = arr("translation", (T, 3))
    shape = arr("shape", (None,)) if np.ndim(need(z, "shape", path)) == 1 else arr("shape", (1, None))[0]
    scale = arr("scale", (T,)) if "scale" in z else np.ones(T)
    if not np.all(scale > 0):
        raise HeadcastError(f"{path}: scale must be positive")
    fps = float(arr("fps", ())) if "fps" in z else default_fps
    if not 0 < fps <= 1000:
        raise HeadcastError(f"{path}: fps must be a positive number of frames per second (at most 1000), not {fps:g}")
    times = arr("times", (T,)) if "times" in z else np.arange(T) / fps
    if T > 1 and not np.all(np.diff(times) > 0):
        raise HeadcastError(f"{path}: times must increase from frame to frame")
    camera = None
    if {"focal_length", "principal_point", "image_size"} <= set(z):
        f, c = arr("focal_length", (2,)), arr("principal_point", (2,))
        w, h = (int(x) for x in arr("image_size", (2,)))
        camera = Intrinsics(float(f[0]), float(f[1]), float(c[0]), float(c[1]), w, h).check(f"{path}: camera")
    return FlameParams(shape, expr, **poses, translation=translation, scale=scale, times=times, fps=fps,
                       camera=camera)
