"""Albedo from every frame of a sweep: each texel blended from the frames that see it.

A sweep's reconstruction folder holds the used frames (``frames/``) and their head-to-camera transforms
(``poses.json``). The head is still in a still room, so one SH light, fitted in the output frame
(:func:`headcast.texture.core.texture_frame`), shades every frame with the normals of the output frame;
each frame's texels give albedo = colour / shading with the confidence of :meth:`View.observe` (view
angle, distance from silhouettes and depth edges, agreement with the measured depth), squared so that
head-on views dominate. A gain per frame and channel (the median albedo ratio to the blend so far on the
texels both see well) compensates exposure and white balance. The blend is a confidence-weighted mean, so
it changes smoothly where one frame's confidence ramps down: no seams at the frames' borders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.geometry import vertex_normals
from headcast.core.sh import sh_shading, to_view
from headcast.io import recon
from headcast.io.validate import clean_depth, read_depth_raw, read_image
from headcast.texture.observe import View, interpolate

logger = logging.getLogger(__name__)

MIN_SHADING = 0.05     # darker than this, a texel's albedo is not trusted
SEEN = 0.5             # a texel counts as seen when a frame sees it with this confidence (as for one photo)
FULL = 0.25            # squared confidences summing to this make the blend replace the single-photo albedo
GAIN_RANGE = (0.5, 2.0)  # per-frame exposure gains are clipped to this


@dataclass
class Blend:
    """Per covered texel: blended albedo (N, 3) in 0..1, confidence (N,) in 0..1 (the sum of the frames'
    squared confidences over FULL, clipped to 1), the best single frame's confidence (N,), and per frame
    its gain (3,) and the share of texels it saw."""

    albedo: np.ndarray
    weight: np.ndarray
    best: np.ndarray
    gains: list
    frames: list


def read_frames(folder: Path, K) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The used frames of a sweep folder: (index, color (H, W, 3) uint8, depth (H, W) m, head_to_camera (4, 4))."""
    poses = recon.read_poses(folder) or []
    out = []
    for f in poses:
        if not f.get("used") or f.get("head_to_camera") is None:
            continue
        i = int(f["index"])
        cp, dp = folder / recon.FRAMES / f"{i:03d}_color.png", folder / recon.FRAMES / f"{i:03d}_depth_mm.png"
        color = read_image(cp, "sweep frame", formats=("PNG",))
        depth = clean_depth(read_depth_raw(dp, "sweep depth"), 0.001)
        if color.shape[:2] != (K.height, K.width) or depth.shape != color.shape[:2]:
            raise HeadcastError(f"{cp} does not match {recon.INTRINSICS}'s size {K.width}x{K.height}")
        out.append((i, color, depth, f["head_to_camera"]))
    return out


def blend_frames(faces: np.ndarray, vertices: np.ndarray, frames: list, K, light: np.ndarray, tri: np.ndarray,
                 bary: np.ndarray) -> Blend:
    """Blend the frames (:func:`read_frames`) onto the texels (triangles ``tri`` (N,), weights ``bary`` (N, 3))
    of the mesh ``vertices`` (V, 3) in the output frame, lit by ``light`` (9, 3) there."""
    Xn = interpolate(faces, tri, bary, np.hstack([vertices, vertex_normals(vertices, faces)]))
    X, n = Xn[:, :3], Xn[:, 3:]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    shading = np.maximum(sh_shading(to_view(n), light), 1e-6)
    dark = (shading < MIN_SHADING).any(1)
    acc, wsum, best = np.zeros((len(tri), 3)), np.zeros(len(tri)), np.zeros(len(tri))
    gains, seen = [], []
    for i, color, depth, T in frames:  # the first frame sets the reference the others' gains follow
        R, t = T[:3, :3], T[:3, 3]
        view = View.make(vertices @ R.T + t, faces, color, K, depth)
        col, w = view.observe(X @ R.T + t, n @ R.T, tri=tri)
        a = np.clip(col / shading, 0, 1.5)
        w = np.where(dark, 0.0, w)
        best = np.maximum(best, w)
        w = w ** 2
        both = (w > 0.25) & (wsum > 0.25)
        g = np.ones(3)
        if both.sum() > 200:
            ref = acc[both] / wsum[both, None]
            g = np.clip(np.median(ref, 0) / np.maximum(np.median(a[both], 0), 1e-3), *GAIN_RANGE)
        acc += w[:, None] * a * g
        wsum += w
        gains.append(g.tolist())
        seen.append({"frame": i, "seen": float((w > SEEN ** 2).mean())})
    albedo = np.clip(acc / np.maximum(wsum, 1e-9)[:, None], 0, 1)
    return Blend(albedo, np.clip(wsum / FULL, 0, 1), best, gains, seen)


def sweep_albedo(folder: Path, faces: np.ndarray, vertices: np.ndarray, K, light: np.ndarray, tri: np.ndarray,
                 bary: np.ndarray, values: np.ndarray, stats: dict) -> np.ndarray | None:
    """Per-texel albedo (N, 3) of a sweep folder: the frames' blend where they see the texel, ``values``
    (the single-photo albedo with mirror and completion) where none does; None for a one-frame folder.
    Adds the shares of texels seen, and the frames' gains, to ``stats``."""
    frames = read_frames(Path(folder), K)
    if not frames:
        return None
    b = blend_frames(faces, vertices, frames, K, light, tri, bary)
    w = b.weight[:, None]
    out = w * b.albedo + (1 - w) * values
    own = b.best > SEEN
    stats.update(sweep_frames=len(frames), texels_seen_sweep=float(own.mean()), sweep_gains=b.gains,
                 sweep_seen=b.frames)
    logger.info(f"texture: {len(frames)} sweep frames see {own.mean():.0%} of the texels")
    return out


def apply_sweep(res, folder: Path, faces: np.ndarray, vertices: np.ndarray, K) -> None:
    """Replace the albedo of a texture result (:class:`headcast.texture.core.TextureResult`) of a sweep
    folder by the frames' blend (:func:`sweep_albedo`); a one-frame folder is left as it is."""
    from headcast.texture.atlas import dilate

    idx, tri, bary = res.space.texmap.texels()
    S = res.space.texmap.size
    flat = res.albedo.reshape(-1, 3)
    out = sweep_albedo(folder, faces, vertices, K, res.light, tri, bary, flat[idx], res.stats)
    if out is None:
        return
    tex = np.zeros((S * S, 3), np.float32)
    tex[idx] = np.clip(out, 0, 1)
    res.albedo = dilate(tex.reshape(S, S, 3), res.space.texmap.covered)
