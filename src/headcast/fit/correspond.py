"""Exact closest points from a point cloud to a triangle mesh (Open3D, CPU)."""

from __future__ import annotations

import numpy as np
import open3d as o3d


def closest_points_on_mesh(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point the nearest point on the mesh surface (exact point-to-triangle distance).

    Args:
        vertices: (V, 3) mesh vertices, metres.
        faces: (F, 3) triangles.
        points: (N, 3) query points, metres.

    Returns:
        triangle index (N,) int64, barycentric coordinates (N, 3) of the closest point in that
        triangle (weights of its three corners), and the distance (N,) in metres.
    """
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))
    q = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))
    ans = scene.compute_closest_points(q)
    tri = ans["primitive_ids"].numpy().astype(np.int64)
    uv = ans["primitive_uvs"].numpy().astype(np.float64)
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
    dist = np.linalg.norm(ans["points"].numpy().astype(np.float64) - points, axis=1)
    return tri, bary, dist
