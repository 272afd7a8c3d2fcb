"""Small triangle-mesh helpers for the renderer: normals, vertex smoothing, primitive shapes."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from headcast.core.geometry import vertex_adjacency


def smoothing_operator(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Row-stochastic (V, V) matrix averaging each vertex with its edge neighbours."""
    a = (vertex_adjacency(faces, n_vertices) + sp.identity(n_vertices, format="csr")).tocsr()
    return sp.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a


def smooth(values: np.ndarray, op: sp.csr_matrix, steps: int) -> np.ndarray:
    """Apply the smoothing operator ``steps`` times to per-vertex values (V,) or (V, C)."""
    out = np.asarray(values, dtype=np.float64)
    for _ in range(steps):
        out = op @ out
    return out


def grid_mesh(nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """A (nu x nv)-vertex grid: parameters (nu * nv, 2) in [0, 1]^2 and (F, 3) triangles."""
    u, v = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return np.stack([u.ravel(), v.ravel()], 1), faces.astype(np.int32)


def superellipsoid(radii: np.ndarray, e_vertical: float, e_horizontal: float,
                   n_lat: int = 48, n_lon: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A closed superellipsoid with semi-axes ``radii`` (x, y, z), y being the pole axis.

    Exponents below 1 make it boxy (1 = ellipsoid). Returns vertices (V, 3) and outward faces (F, 3).
    """
    def spow(x, e):
        return np.sign(x) * np.abs(x) ** e

    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat)[1:-1]
    lon = np.linspace(-np.pi, np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    x = radii[0] * spow(np.cos(la), e_vertical) * spow(np.cos(lo), e_horizontal)
    y = radii[1] * spow(np.sin(la), e_vertical)
    z = radii[2] * spow(np.cos(la), e_vertical) * spow(np.sin(lo), e_horizontal)
    ring = np.stack([x, y, z], -1).reshape(-1, 3)
    verts = np.concatenate([ring, [[0, -radii[1], 0], [0, radii[1], 0]]])
    L, N = len(lat), n_lon
    idx = np.arange(L * N).reshape(L, N)
    nxt = np.roll(idx, -1, axis=1)
    a, b, c, d = idx[:-1].ravel(), nxt[:-1].ravel(), nxt[1:].ravel(), idx[1:].ravel()
    faces = [np.stack([a, d, c], 1), np.stack([a, c, b], 1)]
    south, north = L * N, L * N + 1
    faces.append(np.stack([np.full(N, south), idx[0], nxt[0]], 1))
    faces.append(np.stack([np.full(N, north), nxt[-1], idx[-1]], 1))
    faces = np.concatenate(faces).astype(np.int32)
    # orient outward: flip if the signed volume is negative
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    if np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces
