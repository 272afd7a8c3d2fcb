"""Exact CPU rendering of triangle meshes through a pinhole camera by ray casting (Open3D).

Gives per-pixel depth, triangle id, barycentric coordinates and normals: enough for
depth maps, visibility, shading and overlays without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.camera import Intrinsics, project
from headcast.core.scene import MeshScene


@dataclass
class RayHits:
    """Per-pixel results for an (H, W) image.

    depth: (H, W) float32 z in metres (0 where no hit); tri: (H, W) int64 triangle (-1 none);
    bary: (H, W, 3) float32 corner weights; normal: (H, W, 3) float32 unit geometric normals
    (camera frame, facing the camera); mesh_id: (H, W) int64 index of the mesh hit (-1 none).
    """

    depth: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    normal: np.ndarray
    mesh_id: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.tri >= 0


def camera_rays(K: Intrinsics) -> np.ndarray:
    """(H, W, 6) rays from the camera centre through each pixel centre, direction with z = 1."""
    u, v = np.meshgrid(np.arange(K.width, dtype=np.float32), np.arange(K.height, dtype=np.float32))
    d = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    return np.concatenate([np.zeros_like(d), d], axis=-1)


def raycast(meshes: list[tuple[np.ndarray, np.ndarray]], K: Intrinsics) -> RayHits:
    """Render one or more meshes, each (vertices (V, 3) camera frame metres, faces (F, 3)).

    ``tri`` indexes the faces of the mesh named by ``mesh_id``. Only the pixels within the meshes' projected
    bounding box (2 pixels wider) are cast when every vertex is in front of the camera: no ray outside it
    can hit, and each ray's answer is its own, so the result is the same as casting every pixel.
    """
    rows, cols = _image_box(meshes, K)
    H, W = K.height, K.width
    depth, tri, mesh_id = np.zeros((H, W), np.float32), np.full((H, W), -1, np.int64), np.full((H, W), -1, np.int64)
    bary, n = np.zeros((H, W, 3), np.float32), np.zeros((H, W, 3), np.float32)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return RayHits(depth, tri, bary, n, mesh_id)
    rays = camera_rays(K)[rows, cols]
    ans = MeshScene(meshes).cast(rays)
    t, hit_mesh, hit_tri, normal = ans["t"], ans["mesh_id"], ans["tri"], ans["normal"]
    hit = hit_tri >= 0
    b = ans["bary"].astype(np.float32)
    normal = np.where((np.sum(normal * rays[..., 3:], axis=-1, keepdims=True) > 0), -normal, normal)  # to the camera
    b[~hit] = 0
    normal[~hit] = 0
    depth[rows, cols] = np.where(hit, t, 0)  # rays have z = 1, so t is z
    tri[rows, cols], mesh_id[rows, cols], bary[rows, cols], n[rows, cols] = hit_tri, hit_mesh, b, normal
    return RayHits(depth, tri, bary, n, mesh_id)


def _image_box(meshes: list[tuple[np.ndarray, np.ndarray]], K: Intrinsics, margin: int = 2) -> tuple[slice, slice]:
    """Pixel rows and columns whose rays can hit the meshes: their vertices' projected bounding box grown by
    ``margin`` pixels (the rays' float32 rounding), clipped to the image; the whole image when a vertex is not
    in front of the camera (its projection is not bounded by the vertices')."""
    pts = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1, 3) for v, _ in meshes])
    if len(pts) == 0 or not np.all(np.isfinite(pts)) or pts[:, 2].min() <= 1e-6:
        return slice(0, K.height), slice(0, K.width)
    uv = project(pts, K)
    lo, hi = np.floor(uv.min(0)) - margin, np.ceil(uv.max(0)) + margin
    u0, v0 = (int(np.clip(x, 0, n)) for x, n in zip(lo, (K.width, K.height)))
    u1, v1 = (int(np.clip(x + 1, 0, n)) for x, n in zip(hi, (K.width, K.height)))
    return slice(v0, v1), slice(u0, u1)
