"""One triangle-mesh scene for ray casting and exact closest points (Open3D, Embree, CPU)."""

from __future__ import annotations

import numpy as np


def _bary(uv: np.ndarray) -> np.ndarray:
    """Open3D's primitive (u, v) -> barycentric corner weights (..., 3) float64."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([1.0 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], axis=-1)


class MeshScene:
    """Triangle meshes (metres) to cast rays at and to query closest surface points on.

    Meshes are numbered in the order they are added (their ``mesh_id``).
    """

    def __init__(self, meshes: list[tuple[np.ndarray, np.ndarray]] = ()):
        import open3d as o3d  # heavy: loaded only when a scene is built

        self._o3d = o3d
        self._scene = o3d.t.geometry.RaycastingScene()
        self.n_meshes = 0
        for vertices, faces in meshes:
            self.add(vertices, faces)

    def add(self, vertices: np.ndarray, faces: np.ndarray) -> int:
        """Add a mesh: vertices (V, 3), faces (F, 3) counter-clockwise; returns its mesh id."""
        t = self._o3d.core.Tensor
        gid = self._scene.add_triangles(t(np.ascontiguousarray(vertices, dtype=np.float32)),
                                        t(np.ascontiguousarray(faces, dtype=np.uint32)))
        self.n_meshes += 1
        return int(gid)

    def cast(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        """Cast rays (..., 6) = origin, direction. Returns ``t`` (...) ray parameter (inf = miss),
        ``mesh_id`` (...) int64 (-1 = miss), ``tri`` (...) int64 (-1 = miss), ``bary`` (..., 3) float64 and
        ``normal`` (..., 3) float32 unit geometric normals (as wound, not turned to the ray)."""
        ans = self._scene.cast_rays(self._o3d.core.Tensor(np.ascontiguousarray(rays, dtype=np.float32)))
        t = ans["t_hit"].numpy()
        hit = np.isfinite(t)
        return {"t": t,
                "mesh_id": np.where(hit, ans["geometry_ids"].numpy().astype(np.int64), -1),
                "tri": np.where(hit, ans["primitive_ids"].numpy().astype(np.int64), -1),
                "bary": _bary(ans["primitive_uvs"].numpy()),
                "normal": ans["primitive_normals"].numpy().astype(np.float32)}

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact closest surface points of query points (N, 3): triangle (N,) int64, barycentric
        weights (N, 3), the closest points (N, 3) and their distances (N,), metres."""
        q = np.ascontiguousarray(points, dtype=np.float32)
        ans = self._scene.compute_closest_points(self._o3d.core.Tensor(q))
        tri = ans["primitive_ids"].numpy().astype(np.int64)
        near = ans["points"].numpy().astype(np.float64)
        dist = np.linalg.norm(near - np.asarray(points, dtype=np.float64), axis=1)
        return tri, _bary(ans["primitive_uvs"].numpy()), near, dist


def closest_points_on_mesh(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point (N, 3) the nearest point on one mesh (vertices (V, 3), faces (F, 3)), metres.

    Returns triangle index (N,) int64, barycentric coordinates (N, 3) of the closest point in that
    triangle, and the exact point-to-triangle distance (N,).
    """
    tri, bary, _, dist = MeshScene([(vertices, faces)]).closest(points)
    return tri, bary, dist
