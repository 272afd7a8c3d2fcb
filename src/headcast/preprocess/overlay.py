"""A picture to check preprocessing: landmarks by region (with indices) and the face points over the image."""

from __future__ import annotations

import numpy as np

from headcast.core.camera import Intrinsics, project
from headcast.core.draw import outlined_text
from headcast.preprocess.ibug68 import REGIONS

REGION_COLORS = {  # RGB
    "jaw": (255, 255, 255), "right_brow": (255, 160, 0), "left_brow": (255, 160, 0), "nose": (0, 220, 255),
    "right_eye": (60, 255, 60), "left_eye": (60, 255, 60), "outer_lips": (255, 60, 160), "inner_lips": (255, 120, 220),
}


def _region_color(k: int) -> tuple[int, int, int]:
    return next(c for name, c in REGION_COLORS.items() if k in REGIONS[name])


def overlay_image(color: np.ndarray, landmarks2d: np.ndarray, valid: np.ndarray | None = None,
                  points: np.ndarray | None = None, K: Intrinsics | None = None, mesh: np.ndarray | None = None,
                  labels: bool = True, scale: float | None = None, text: str | None = None) -> np.ndarray:
    """(H', W', 3) uint8 picture: the image (resized by ``scale``, default to about 900 px), face points
    (N, 3) projected through K and coloured by depth (near red, far blue), MediaPipe mesh points
    (478, >=2) as grey dots, and the (68, 2) landmarks coloured by region; landmarks not lifted to 3D
    (``valid`` False) are drawn as red crosses."""
    import cv2

    H, W = color.shape[:2]
    s = float(np.clip(900 / max(H, W), 0.4, 4.0)) if scale is None else float(scale)
    img = cv2.resize(color, (round(W * s), round(H * s)), interpolation=cv2.INTER_LINEAR if s < 1 else cv2.INTER_CUBIC)
    img = np.ascontiguousarray(img)
    if points is not None and len(points) and K is not None:
        uv = project(np.asarray(points, dtype=np.float64), K) * s
        z = points[:, 2]
        lo, hi = np.percentile(z, [2, 98])
        t = np.clip((z - lo) / max(hi - lo, 1e-6), 0, 1)
        cmap = cv2.applyColorMap(((1 - t) * 255).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
        layer = img.copy()
        r = max(1, round(s / 2))
        for (u, v), c in zip(np.rint(uv).astype(int), cmap):
            cv2.circle(layer, (int(u), int(v)), r, tuple(int(x) for x in c), -1)
        img = cv2.addWeighted(layer, 0.55, img, 0.45, 0)
    if mesh is not None:
        for u, v in np.rint(np.asarray(mesh)[:, :2] * s).astype(int):
            cv2.circle(img, (int(u), int(v)), 1, (170, 170, 170), -1)
    lm = np.asarray(landmarks2d, dtype=np.float64) * s
    valid = np.ones(len(lm), bool) if valid is None else np.asarray(valid, bool)
    rad = max(2, round(2.5 * s ** 0.5))
    font = 0.3 + 0.1 * min(s, 2)
    for k, (u, v) in enumerate(lm):
        p = (int(round(u)), int(round(v)))
        if valid[k]:
            cv2.circle(img, p, rad + 1, (0, 0, 0), -1)
            cv2.circle(img, p, rad, _region_color(k), -1)
        else:
            cv2.drawMarker(img, p, (255, 0, 0), cv2.MARKER_TILTED_CROSS, 3 * rad, 2)
        if labels:
            at = (p[0] + rad + 1, p[1] - rad)
            outlined_text(img, str(k), at, font, _region_color(k))
    if text:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
        cv2.rectangle(img, (0, 0), (tw + 16, th + 16), (0, 0, 0), -1)
        cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def observation_overlay(obs, labels: bool = True, mesh: bool = False) -> np.ndarray:
    """overlay_image of an Observation (its landmarks, lifted mask and face points)."""
    c = obs.counts()
    text = (f"{obs.detection.method}: {c['landmarks_lifted']}/68 lifted, {c['face_points']} face points, "
            f"rotated {obs.frame.rotation} deg")
    return overlay_image(obs.frame.color, obs.landmarks2d, obs.valid, obs.points, obs.frame.K,
                         mesh=obs.detection.mesh if mesh else None, labels=labels, text=text)
