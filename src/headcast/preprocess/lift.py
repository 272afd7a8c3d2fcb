"""3D landmarks: 2D landmarks lifted onto the depth map.

Each landmark takes the median of the valid depths in a small window around it. Landmarks on the
face outline see the background too; depths farther than ``max_offset`` from the face's own depth
(the median over the inner landmarks) are left out of the window before the median, so the
outline is lifted onto the face, not onto the wall behind it. A landmark with no usable depth is
dropped (``valid`` False, NaN coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.camera import Intrinsics, backproject
from headcast.preprocess.ibug68 import INNER


@dataclass(frozen=True)
class Landmarks3D:
    """points: (L, 3) float64 camera frame, metres (NaN where not lifted); valid: (L,) bool;
    radius: half-size of the depth window in pixels."""

    points: np.ndarray
    valid: np.ndarray
    radius: int

    @property
    def n_lifted(self) -> int:
        return int(self.valid.sum())


def window_radius(height: int, width: int) -> int:
    """Half-size of the depth window in pixels: 2 (5x5) at 240 px, growing with the image."""
    return max(2, round(min(height, width) / 120))


def _windows(depth: np.ndarray, uv: np.ndarray, r: int) -> np.ndarray:
    """(L, (2r+1)^2) depths around the rounded pixels (0 outside the image)."""
    H, W = depth.shape
    pad = np.pad(depth, r)
    iu = np.clip(np.rint(uv[:, 0]).astype(np.int64), -r, W - 1 + r) + r
    iv = np.clip(np.rint(uv[:, 1]).astype(np.int64), -r, H - 1 + r) + r
    off = np.arange(-r, r + 1)
    rows = iv[:, None, None] + off[None, :, None]
    cols = iu[:, None, None] + off[None, None, :]
    return pad[rows, cols].reshape(len(uv), -1)


def _nanmedian_rows(w: np.ndarray) -> np.ndarray:
    out = np.full(len(w), np.nan)
    has = np.isfinite(w).any(axis=1)
    if has.any():
        out[has] = np.nanmedian(w[has], axis=1)
    return out


def lift_landmarks(points2d: np.ndarray, depth: np.ndarray, K: Intrinsics, radius: int | None = None,
                   max_offset: float = 0.12, inner: np.ndarray = INNER) -> Landmarks3D:
    """Back-project (L, 2) pixel landmarks with a robust depth from an (H, W) depth map in metres.

    radius: window half-size in pixels (default from the image size). max_offset: metres a window
    depth may lie from the face's median depth. inner: indices used for the face's median depth
    (default: the 51 non-contour iBUG points).
    """
    uv = np.asarray(points2d, dtype=np.float64)
    r = window_radius(*depth.shape) if radius is None else int(radius)
    w = _windows(np.asarray(depth, dtype=np.float64), uv, r)
    w[~np.isfinite(w) | (w <= 0)] = np.nan
    first = _nanmedian_rows(w)
    ref_idx = np.asarray(inner) if len(uv) > int(np.max(inner)) else np.arange(len(uv))
    ref = first[ref_idx]
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        ref = first[np.isfinite(first)]
    if ref.size == 0:
        return Landmarks3D(np.full((len(uv), 3), np.nan), np.zeros(len(uv), bool), r)
    z0 = float(np.median(ref))
    w[np.abs(w - z0) > max_offset] = np.nan
    z = _nanmedian_rows(w)
    valid = np.isfinite(z)
    pts = np.full((len(uv), 3), np.nan)
    pts[valid] = backproject(uv[valid], z[valid], K)
    return Landmarks3D(pts, valid, r)
