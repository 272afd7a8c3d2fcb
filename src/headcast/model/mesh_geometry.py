"""Mesh geometry the model conversions use: sub-meshes, UV packing, affine weights, sphere fits,
edges and boundary loops, geodesic regions, plane slices and vertex embeddings.

Arrays in, arrays out: vertices (V, 3) float, triangles (F, 3) int; lengths in the vertices' units.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from headcast.core.errors import HeadcastError


def submesh(faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles (F, 3) whose corners are all kept (``keep``: (N,) bool), re-indexed.

    Returns remap (N,) new vertex index or -1, face_ids (F',) kept triangles, faces (F', 3).
    """
    remap = np.full(len(keep), -1, dtype=np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    face_ids = np.flatnonzero(keep[faces].all(1))
    return remap, face_ids, remap[faces[face_ids]]


def pack_uv(uv: np.ndarray, uv_faces: np.ndarray, quadrant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each triangle's texture coordinates from its unit UDIM tile into a quadrant of [0, 1]^2.

    Args:
        uv: (T, 2) upstream coordinates; uv_faces (F, 3) per corner.
        quadrant: (F, 2) int (column, row) of each triangle's quadrant.

    Returns:
        packed uv (T', 2) in [0, 1] and uv_faces (F, 3) into it (a coordinate shared by triangles
        of two quadrants is split).
    """
    corners = uv[uv_faces]  # (F, 3, 2)
    tile = np.floor(corners[..., 0].min(1) + 1e-6)  # each triangle's UDIM column
    packed = (corners - np.stack([tile, np.zeros_like(tile)], -1)[:, None] + quadrant[:, None]) / 2
    keys = np.column_stack([uv_faces.ravel(), np.repeat(quadrant, 3, axis=0)])
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return packed.reshape(-1, 2)[first], inverse.reshape(-1, 3)


def affine_weights(anchors: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Minimum-norm weights w (K,) with ``w.sum() == 1`` and ``w @ anchors == point``.

    The combination commutes with any affine map of the anchors, so a joint regressed with it
    moves with them. anchors (K, 3), K >= 4, not all on one plane.
    """
    A = np.vstack([(anchors - point).T, np.ones(len(anchors))])  # (4, K)
    return np.linalg.lstsq(A, np.array([0.0, 0.0, 0.0, 1.0]), rcond=None)[0]


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (K, 3): centre (3,) and radius."""
    A = np.hstack([2 * points, np.ones((len(points), 1))])
    x = np.linalg.lstsq(A, (points ** 2).sum(1), rcond=None)[0]
    return x[:3], float(np.sqrt(x[3] + x[:3] @ x[:3]))


def sagittal_pivot(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The point of the plane x = 0 that ``v -> R v + t`` moves least (its fixed point when the
    motion is a rotation about an axis along x)."""
    yz = np.linalg.lstsq((np.eye(3) - R)[:, 1:], t, rcond=None)[0]
    return np.array([0.0, yz[0], yz[1]])


def rotation_x(angle: float) -> np.ndarray:
    """Rotation (3, 3) about +x by ``angle`` radians (positive moves +z towards -y: opens a jaw)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (M, 2) of a triangle mesh, smaller index first."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def edge_stretch(v0: np.ndarray, v1: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Length ratio (M,) of each edge (M, 2) between rest ``v0`` and deformed ``v1`` (V, 3)."""
    d0 = np.linalg.norm(v0[edges[:, 0]] - v0[edges[:, 1]], axis=1)
    return np.linalg.norm(v1[edges[:, 0]] - v1[edges[:, 1]], axis=1) / np.maximum(d0, 1e-12)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """3x^2 - 2x^3 on x clamped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def boundary_loops(faces: np.ndarray, n: int) -> list[np.ndarray]:
    """Vertex index sets of the open boundaries of a triangle mesh with ``n`` vertices."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    b = edges[counts == 1]
    if len(b) == 0:
        return []
    A = sp.coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n, n))
    _, label = csgraph.connected_components(A, directed=False)
    verts = np.unique(b)
    return [verts[label[verts] == k] for k in np.unique(label[verts])]


def loop_order(faces: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """The vertices of one boundary loop (an index set) in walking order."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    nbr: dict[int, list[int]] = {}
    for a, c in edges[(counts == 1) & np.isin(edges[:, 0], loop)]:
        nbr.setdefault(int(a), []).append(int(c))
        nbr.setdefault(int(c), []).append(int(a))
    order, prev = [int(loop[0])], -1
    while len(order) <= len(loop):
        nxt = next(q for q in nbr[order[-1]] if q != prev)
        if nxt == order[0]:
            break
        prev = order[-1]
        order.append(nxt)
    return np.array(order)


def geodesic_nearer(v: np.ndarray, edges: np.ndarray, first: np.ndarray, second: np.ndarray,
                    limit: float) -> np.ndarray:
    """Vertices whose edge-path distance to ``first`` is below ``limit`` and below their
    distance to ``second``."""
    n = len(v)
    length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
    G = sp.coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    d1 = csgraph.dijkstra(G, directed=False, indices=first, min_only=True, limit=limit)
    d2 = csgraph.dijkstra(G, directed=False, indices=second, min_only=True, limit=2 * limit)
    return np.flatnonzero(np.isfinite(d1) & (d1 < d2))



def vertex_embedding(faces: np.ndarray, vertex_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex as a barycentric point: a triangle holding it (L,) and a one-hot bary (L, 3)."""
    tri = np.empty(len(vertex_ids), dtype=np.int64)
    bary = np.zeros((len(vertex_ids), 3))
    for i, vid in enumerate(vertex_ids):
        rows, cols = np.nonzero(faces == vid)
        if len(rows) == 0:
            raise HeadcastError(f"landmark vertex {vid} is on no kept triangle")
        tri[i] = rows[0]
        bary[i, cols[0]] = 1.0
    return tri, bary


def slice_points(v: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, height: float):
    """Where the plane y = ``height`` cuts the edges of triangles ``face_ids``.

    Returns points (K, 3), their triangles (K,) and barycentric coordinates (K, 3).
    """
    f = faces[face_ids]
    pts, tris, barys = [], [], []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ya, yb = v[f[:, a], 1], v[f[:, b], 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (height - ya) / (yb - ya)
        ok = (ya != yb) & (t >= 0) & (t <= 1)
        t = t[ok]
        pts.append((1 - t)[:, None] * v[f[ok, a]] + t[:, None] * v[f[ok, b]])
        bc = np.zeros((len(t), 3))
        bc[:, a], bc[:, b] = 1 - t, t
        tris.append(face_ids[ok])
        barys.append(bc)
    return np.concatenate(pts), np.concatenate(tris), np.concatenate(barys)

