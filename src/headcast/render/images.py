"""Pictures to look at: shaded mesh overlays, depth residual heat maps, image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from headcast.core.camera import Intrinsics
from headcast.render.raycast import RayHits, raycast


def encode_png(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 RGB (or (H, W) gray / uint16) image as PNG bytes (what :func:`save_png` writes).

    Pillow's encoder directly (the bytes imageio's writer gave: it calls the same one), at compression
    level 1: a quarter of the default level's time, ~15 % larger. Going through imageio loaded every
    Pillow format plugin to look up ".png" (20 ms of CPU)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB (or (H, W) gray / uint16) image as PNG."""
    path = Path(path)
    path.write_bytes(encode_png(image))
    return path


def depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """An (H, W) depth map in metres as uint16 millimetres (0 = no depth, NaN and inf too)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d * 1000), 0, 65535).astype(np.uint16)


def save_depth_mm(path: str | Path, depth_m: np.ndarray) -> Path:
    """Write an (H, W) depth map in metres as a uint16 PNG in millimetres (0 = no depth)."""
    return save_png(path, depth_mm(depth_m))


def render_shaded(vertices: np.ndarray, faces: np.ndarray, K: Intrinsics,
                  color: tuple[float, float, float] = (0.85, 0.8, 0.75)) -> tuple[RayHits, np.ndarray]:
    """Ray-cast a camera-frame mesh and shade it with a head-on light: hits and an (H, W, 3) uint8 image."""
    hits = raycast([(vertices, faces)], K)
    light = np.array([0.3, -0.4, -1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(hits.normal @ light, 0, 1)[..., None]
    img = (np.asarray(color) * (0.25 + 0.75 * lambert) * 255).clip(0, 255).astype(np.uint8)
    img[~hits.hit] = 0
    return hits, img


def blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """``top`` over ``base`` with opacity ``alpha`` where ``mask`` (H, W) is set."""
    out = base.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * top[mask].astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def depth_residual_image(color: np.ndarray, observed_m: np.ndarray, rendered_m: np.ndarray, region: np.ndarray,
                         limit_mm: float = 5.0) -> np.ndarray:
    """Heat map of rendered minus observed depth (mm) where both exist inside ``region``, over a gray photo.

    Blue: the model is in front of the data; red: behind; white: agreement; clipped at +-limit_mm.
    A colour bar with its scale is drawn at the bottom.
    """
    gray = cv2.cvtColor(color, cv2.COLOR_RGB2GRAY)
    out = np.repeat(gray[..., None] // 2, 3, axis=-1).astype(np.uint8)
    ok = region & (observed_m > 0) & (rendered_m > 0)
    r = (rendered_m - observed_m) * 1000
    t = np.clip(r / limit_mm, -1, 1)
    out[ok] = _diverging(t[ok])
    H, W = out.shape[:2]
    scale = max(1, round(480 / max(H, W)))
    out = cv2.resize(out, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
    bar_h = 28
    bar = np.zeros((bar_h, out.shape[1], 3), np.uint8)
    ramp = np.linspace(-1, 1, out.shape[1] - 20)
    bar[4:14, 10:-10] = _diverging(ramp)[None]
    for label, x in ((f"-{limit_mm:g} mm (model in front)", 10), ("0", out.shape[1] // 2 - 4),
                     (f"+{limit_mm:g} mm", out.shape[1] - 70)):
        cv2.putText(bar, label, (x, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    med = float(np.median(np.abs(r[ok]))) if ok.any() else float("nan")
    cv2.putText(out, f"median |residual| {med:.2f} mm", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([out, bar])


def _diverging(t: np.ndarray) -> np.ndarray:
    """t in [-1, 1] -> RGB uint8: blue - white - red."""
    t = np.asarray(t, dtype=np.float32)[..., None]
    blue, white, red = np.array([40, 80, 255.0]), np.array([255, 255, 255.0]), np.array([255, 40, 40.0])
    c = np.where(t < 0, white + (blue - white) * (-t), white + (red - white) * t)
    return c.clip(0, 255).astype(np.uint8)


def draw_points(image: np.ndarray, uv: np.ndarray, color: tuple[int, int, int], radius: int = 2) -> np.ndarray:
    """Draw (N, 2) pixel points as small rings on a copy of ``image``."""
    out = np.ascontiguousarray(image.copy())
    for u, v in np.rint(uv).astype(int):
        cv2.circle(out, (int(u), int(v)), radius, color, 1, cv2.LINE_AA)
    return out


def side_by_side(pictures: list[np.ndarray], height: int) -> np.ndarray:
    """Resize RGB pictures to one ``height`` and put them in a row."""
    row = [cv2.resize(p[..., :3], (round(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA)
           for p in pictures]
    return np.hstack(row)
