"""Exact CPU rendering of triangle meshes through a pinhole camera by ray casting (Open3D).

Gives per-pixel depth, triangle id, barycentric coordinates and normals: enough for
depth maps, visibility, shading and overlays without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.camera import Intrinsics
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

    ``tri`` indexes the faces of the mesh named by ``mesh_id``.
    """
    rays = camera_rays(K)
    ans = MeshScene(meshes).cast(rays)
    t, mesh_id, tri, n = ans["t"], ans["mesh_id"], ans["tri"], ans["normal"]
    hit = tri >= 0
    bary = ans["bary"].astype(np.float32)
    rays_d = rays[..., 3:]
    n = np.where((np.sum(n * rays_d, axis=-1, keepdims=True) > 0), -n, n)  # face the camera
    depth = np.where(hit, t, 0).astype(np.float32)  # rays have z = 1, so t is z
    bary[~hit] = 0
    n[~hit] = 0
    return RayHits(depth, tri, bary, n, mesh_id)
