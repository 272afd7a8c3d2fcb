"""CPU rendering of a textured, SH-lit mesh by ray casting, and the picture beside the photo."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from headcast.core.camera import FLIP, Intrinsics
from headcast.core.draw import outlined_text
from headcast.core.geometry import vertex_normals
from headcast.core.sh import sh_rotate, sh_shading, to_view
from headcast.render.raycast import RayHits, raycast
from headcast.texture.atlas import sample, uv_to_texel
from headcast.texture.observe import interpolate


def render_textured(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray,
                    texture: np.ndarray, light: np.ndarray | None, K: Intrinsics,
                    hits: RayHits | None = None) -> tuple[np.ndarray, RayHits]:
    """Render a camera-frame mesh with a texture (S, S, 3) in 0..1 on UVs (T, 2) / (F, 3).

    Colour = texture x SH shading of the smooth normals (``light`` (9, 3); None: unlit albedo).
    Returns the (H, W, 3) float image in 0..1 (0 where no surface) and the ray hits.
    """
    v = np.asarray(vertices, dtype=np.float64)
    hits = raycast([(v, faces)], K) if hits is None else hits
    hit = hits.hit
    out = np.zeros(hit.shape + (3,), np.float32)
    if not hit.any():
        return out, hits
    tri, bary = hits.tri[hit], hits.bary[hit].astype(np.float64)
    uvp = np.einsum("nk,nkc->nc", bary, np.asarray(uv, dtype=np.float64)[np.asarray(uv_faces)[tri]])
    col = sample(texture, uv_to_texel(uvp, texture.shape[0])).astype(np.float64)
    if light is not None:
        n = interpolate(faces, tri, bary, vertex_normals(v, faces))
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        col = col * sh_shading(to_view(n), light)
    out[hit] = np.clip(col, 0, 1)
    return out, hits


def seen_from(vertices: np.ndarray, light: np.ndarray | None, T: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A head (``vertices`` (V, 3) in its output frame, lit by ``light`` (9, 3) there; None: unlit) as another
    camera of the same still room sees it, whose head-to-camera transform is ``T`` (4, 4): the vertices
    moved into that camera's frame and the light turned with them (the room's light is fixed to the room,
    as the head is; :func:`headcast.core.sh.sh_rotate`). Lighting the moved head with ``light`` as it is
    would carry the light round with the camera: shadows and the albedo's delit folds then show as bands
    (the sweep's front frame: a pale line under the lower lip, bench/RESULTS.md "look")."""
    T = np.asarray(T, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]
    f = FLIP.astype(np.float64)
    return v, None if light is None else sh_rotate(light, f @ T[:3, :3] @ f)


def turned(vertices: np.ndarray, degrees: float) -> np.ndarray:
    """The mesh turned by ``degrees`` about the vertical axis through its centre (camera frame):
    positive turns the subject's face towards their left (we see their right cheek)."""
    v = np.asarray(vertices, dtype=np.float64)
    c = 0.5 * (v.min(0) + v.max(0))
    R = Rotation.from_euler("y", -degrees, degrees=True).as_matrix()
    return (v - c) @ R.T + c


def comparison_picture(panels: list[np.ndarray], labels: list[str], min_height: int = 400) -> np.ndarray:
    """Images (H, W, 3) in 0..1 or uint8 side by side, enlarged to at least ``min_height`` rows,
    each with its label at the top-left. Returns uint8 RGB."""
    H = panels[0].shape[0]
    s = max(1, int(np.ceil(min_height / H)))
    out = []
    for img, label in zip(panels, labels):
        a = np.asarray(img)
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.dtype != np.uint8 else a
        a = cv2.resize(a, (a.shape[1] * s, a.shape[0] * s), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
        a = np.ascontiguousarray(a)
        outlined_text(a, label, (6, 18), 0.5)
        out.append(a)
        out.append(np.full((a.shape[0], 4, 3), 255, np.uint8))
    return np.concatenate(out[:-1], axis=1)
