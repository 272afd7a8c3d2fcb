"""Pinhole camera intrinsics and the model-to-camera convention.

Camera frame: OpenCV (x right, y down, z forward into the scene), metres.
Model frame: FLAME (x to the subject's left, y up, z out of the face), metres.
A head facing the camera is the model frame turned 180 degrees about x:
``X_cam = s * FLIP @ X_model + t`` (the head's own rotation lives in theta's root joint).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import read_json

INTRINSICS_KEYS = ("fx", "fy", "cx", "cy", "width", "height")  # the keys of an intrinsics JSON file
FLIP = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # model frame -> camera frame axes


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def check(self, name: str = "intrinsics") -> "Intrinsics":
        """Raise HeadcastError for absurd values (non-positive focal, centre far outside the image);
        ``name`` starts the message (the file, when read from one)."""
        for key in ("fx", "fy", "cx", "cy"):
            if not np.isfinite(getattr(self, key)):
                raise HeadcastError(f"{name}: {key}={getattr(self, key)} is not a finite number")
        if self.width <= 0 or self.height <= 0:
            raise HeadcastError(f"{name}: image size {self.width}x{self.height} is not positive")
        for key in ("fx", "fy"):
            f = getattr(self, key)
            if f <= 0:
                raise HeadcastError(f"{name}: {key}={f} must be a positive number of pixels")
            if not 0.1 * max(self.width, self.height) <= f <= 20 * max(self.width, self.height):
                raise HeadcastError(f"{name}: {key}={f:g} px is absurd for a "
                                    f"{self.width}x{self.height} image (expected 0.1x..20x its size)")
        if not (-0.5 * self.width <= self.cx <= 1.5 * self.width and -0.5 * self.height <= self.cy <= 1.5 * self.height):
            raise HeadcastError(f"{name}: principal point ({self.cx:g}, {self.cy:g}) is far outside "
                                f"the {self.width}x{self.height} image")
        return self

    def scaled(self, factor: float) -> "Intrinsics":
        """Intrinsics of the image resized by ``factor``."""
        return Intrinsics(self.fx * factor, self.fy * factor, (self.cx + 0.5) * factor - 0.5,
                          (self.cy + 0.5) * factor - 0.5, round(self.width * factor), round(self.height * factor))

    def rotated(self, degrees_cw: int) -> "Intrinsics":
        """Intrinsics of the image turned clockwise by 0, 90, 180 or 270 degrees."""
        d = degrees_cw % 360
        W, H = self.width, self.height
        if d == 0:
            return self
        if d == 90:  # new (u', v') = (H - 1 - v, u)
            return Intrinsics(self.fy, self.fx, H - 1 - self.cy, self.cx, H, W)
        if d == 180:
            return Intrinsics(self.fx, self.fy, W - 1 - self.cx, H - 1 - self.cy, W, H)
        if d == 270:  # new (u', v') = (v, W - 1 - u)
            return Intrinsics(self.fy, self.fx, self.cy, W - 1 - self.cx, H, W)
        raise HeadcastError(f"rotation must be 0, 90, 180 or 270 degrees, not {degrees_cw}")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def nominal(cls, width: int, height: int) -> "Intrinsics":
        """A nominal pinhole for an image without calibration (a driving video): the focal length is its
        longer side (about 53 degrees across), the principal point its centre."""
        f = float(max(width, height))
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, int(width), int(height))

    @classmethod
    def from_json(cls, path: str | Path) -> "Intrinsics":
        """Read ``fx fy cx cy width height`` (extra keys are ignored) from a bounded JSON file
        (:func:`headcast.core.files.read_json`); absurd or non-finite values raise HeadcastError."""
        path = Path(path)
        d = read_json(path, "intrinsics file")
        name = f"intrinsics file {path}"
        if not isinstance(d, dict) or not all(k in d for k in INTRINSICS_KEYS):
            raise HeadcastError(f"{name} is not JSON with {', '.join(INTRINSICS_KEYS)}")
        v = {k: _number(d[k], f"{name}: {k}") for k in INTRINSICS_KEYS}
        if not all(np.isfinite(v[k]) and v[k] == int(v[k]) for k in ("width", "height")):
            raise HeadcastError(f"{name}: image size {v['width']}x{v['height']} is not whole pixels")
        return cls(v["fx"], v["fy"], v["cx"], v["cy"], int(v["width"]), int(v["height"])).check(name)


def _number(value, name: str) -> float:
    """A JSON number (or numeric text, as older files hold) as a float; HeadcastError otherwise."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return float(value)
    except (ValueError, OverflowError):
        raise HeadcastError(f"{name}={str(value)[:40]!r} is not a number") from None


def project(points: np.ndarray, K: Intrinsics) -> np.ndarray:
    """Camera-frame points (..., 3) in metres -> pixel coordinates (..., 2)."""
    z = points[..., 2]
    return np.stack([K.fx * points[..., 0] / z + K.cx, K.fy * points[..., 1] / z + K.cy], axis=-1)


def backproject(uv: np.ndarray, depth: np.ndarray, K: Intrinsics) -> np.ndarray:
    """Pixels (..., 2) with depths (...) in metres -> camera-frame points (..., 3)."""
    x = (uv[..., 0] - K.cx) / K.fx * depth
    y = (uv[..., 1] - K.cy) / K.fy * depth
    return np.stack([x, y, depth], axis=-1)


def depth_to_points(depth: np.ndarray, K: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels of an (H, W) depth map in metres -> points (N, 3) and their pixels (N, 2) as (u, v)."""
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    uv = np.stack([u, v], axis=-1).astype(np.float64)
    return backproject(uv, depth[v, u].astype(np.float64), K), uv


def to_camera(points: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    """Model-frame points (..., 3) -> camera frame ``scale * FLIP @ p + translation`` (metres)."""
    return scale * points @ FLIP.T.astype(points.dtype) + translation
