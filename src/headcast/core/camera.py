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
from typing import TYPE_CHECKING

import numpy as np

from headcast.core.errors import HeadcastError

if TYPE_CHECKING:
    import torch

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

    def check(self) -> "Intrinsics":
        """Raise HeadcastError for absurd values (non-positive focal, centre far outside the image)."""
        if self.width <= 0 or self.height <= 0:
            raise HeadcastError(f"intrinsics: image size {self.width}x{self.height} is not positive")
        for name in ("fx", "fy"):
            f = getattr(self, name)
            if not np.isfinite(f) or f <= 0:
                raise HeadcastError(f"intrinsics: {name}={f} must be a positive number of pixels")
            if not 0.1 * max(self.width, self.height) <= f <= 20 * max(self.width, self.height):
                raise HeadcastError(f"intrinsics: {name}={f:g} px is absurd for a "
                                    f"{self.width}x{self.height} image (expected 0.1x..20x its size)")
        if not (-0.5 * self.width <= self.cx <= 1.5 * self.width and -0.5 * self.height <= self.cy <= 1.5 * self.height):
            raise HeadcastError(f"intrinsics: principal point ({self.cx:g}, {self.cy:g}) is far outside "
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
    def from_json(cls, path: str | Path) -> "Intrinsics":
        """Read ``fx fy cx cy width height`` (extra keys are ignored)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                       int(d["width"]), int(d["height"])).check()
        except FileNotFoundError:
            raise HeadcastError(f"intrinsics file {path} does not exist") from None
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise HeadcastError(f"intrinsics file {path} is not JSON with fx, fy, cx, cy, width, height ({e})") from None


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


def to_camera_torch(points: "torch.Tensor", scale: "torch.Tensor | float", translation: "torch.Tensor"
                    ) -> "torch.Tensor":
    """Torch twin of :func:`to_camera`: points (..., 3), scale () or (B, 1, 1), translation (3,) or (B, 1, 3)."""
    import torch  # numpy callers need not pay for it

    flip = torch.as_tensor(np.diag(FLIP), dtype=points.dtype, device=points.device)
    return scale * points * flip + translation
