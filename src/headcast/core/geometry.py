"""Small mesh geometry shared by the stages."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float64 of a mesh with counter-clockwise (outward) triangles.

    A vertex that no triangle uses gets a zero normal.
    """
    v = np.asarray(vertices, dtype=np.float64)
    return VertexNormals(faces, len(v))(v)


class VertexNormals:
    """:func:`vertex_normals` for one topology, many vertex positions: the (V, F) vertex-triangle incidence
    is built once, so each call is a cross product and a sparse product (a few ms for 30k triangles).
    Computes in the vertices' float dtype (float32 in, float32 out)."""

    def __init__(self, faces: np.ndarray, n_vertices: int):
        f = np.asarray(faces, dtype=np.int64)
        self.corners = [np.ascontiguousarray(f[:, k]) for k in range(3)]  # np.take with these: fastest gather
        cols = np.repeat(np.arange(len(f)), 3)
        self.incidence = sp.csr_matrix((np.ones(f.size), (f.ravel(), cols)), shape=(n_vertices, len(f)))
        self._by_dtype: dict = {}

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices)
        if v.dtype not in (np.float32, np.float64):
            v = v.astype(np.float64)
        a = self._by_dtype.get(v.dtype)
        if a is None:
            a = self._by_dtype[v.dtype] = self.incidence.astype(v.dtype)
        v0, v1, v2 = (np.take(v, c, axis=0) for c in self.corners)
        fn = np.cross(v1 - v0, v2 - v0)  # length = 2 * area
        n = a @ fn
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return n / np.where(norm > 0, norm, 1).astype(v.dtype)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (F, 3) float64 of triangles faces (F, 3) (counter-clockwise = outward); zero for degenerate ones."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    norm = np.linalg.norm(fn, axis=1, keepdims=True)
    return fn / np.where(norm > 0, norm, 1.0)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (n, 3) drawn uniformly by area on the triangles faces (F, 3) of vertices (V, 3), with
    their triangles' unit normals (n, 3); float64, the vertices' units. ``rng`` makes the draw repeatable."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    area = np.linalg.norm(fn, axis=1)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random((2, n))
    s = np.sqrt(r1)  # (1 - s, s (1 - r2), s r2): uniform barycentric weights on a triangle
    a, b, c = (v[f[tri, k]] for k in range(3))
    pts = (1 - s)[:, None] * a + (s * (1 - r2))[:, None] * b + (s * r2)[:, None] * c
    return pts, fn[tri] / area[tri, None]


def points_in_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of points (K, 2) against a closed polygon (P, 2); returns (K,) bool."""
    x, y = xy[:, 0:1], xy[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < x_at)).sum(1) % 2 == 1


def vertex_adjacency(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency (V, V) of the vertices joined by a triangle edge (zero diagonal)."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    a = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))
    a.data[:] = 1.0  # an edge shared by two triangles counts once
    return a
