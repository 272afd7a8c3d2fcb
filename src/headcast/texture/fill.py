"""Albedo where the camera did not look: mirror across the face's symmetry plane, then inpaint.

The symmetry comes from the model's mean head in the model frame (x = 0 is the symmetry plane
of FLAME and ICT-FaceKit): each vertex's mirror is the vertex nearest its reflection, and a
triangle's mirror is the triangle of the mirrored corners. Facial features (near the inner 51
landmarks: brows, eyes, nose, mouth) are mirrored in full detail; elsewhere only the smooth
colour is, so asymmetric marks (a mole, a sticker, a parting) are not copied to the other side.
What neither side saw is filled by a screened smooth interpolation on the mesh (seam-free, since
it lives on vertices), which decays from the seen border towards the mean skin tone over a few
centimetres.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from headcast.core.geometry import vertex_adjacency
from headcast.core.scene import MeshScene
from headcast.texture.atlas import Atlas, TexelMap, uv_to_texel

SYM_TOL = 0.003  # metres: a reflected vertex farther than this from any vertex has no mirror
FEATURE_RADIUS = (0.010, 0.018)  # metres from the inner landmarks' outlines: full-detail mirroring 1 .. 0
# iBUG-68 outlines of the inner features: brows, nose bridge, nostrils, eyes and lips (closed loops)
FEATURE_OUTLINES = ([*range(17, 22)], [*range(22, 27)], [*range(27, 31)], [*range(31, 36)],
                    [*range(36, 42), 36], [*range(42, 48), 42], [*range(48, 60), 48], [*range(60, 68), 60])


def vertex_symmetry(template: np.ndarray, tol: float = SYM_TOL) -> np.ndarray:
    """(V,) index of each vertex's mirror image across x = 0 (model frame), -1 where none is within ``tol``."""
    v = np.asarray(template, dtype=np.float64)
    d, j = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    return np.where(d <= tol, j, -1).astype(np.int64)


def face_symmetry(faces: np.ndarray, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror triangle (F,) of each triangle (-1 none) and the corner permutation (F, 3): corner k
    of triangle f reflects onto corner ``perm[f, k]`` of its mirror."""
    f = np.asarray(faces, dtype=np.int64)
    V = int(max(f.max() + 1, len(sym)))
    key = lambda t: (np.sort(t, 1) * np.array([V * V, V, 1])).sum(1)  # noqa: E731
    keys = key(f)
    order = np.argsort(keys)
    mf = sym[f]
    valid = (mf >= 0).all(1)
    q = key(np.where(valid[:, None], mf, 0))
    pos = np.clip(np.searchsorted(keys[order], q), 0, len(f) - 1)
    g = order[pos]
    g = np.where(valid & (keys[g] == q), g, -1)
    perm = np.argmax(f[np.maximum(g, 0)][:, None, :] == mf[:, :, None], axis=2)
    return g, perm


def mirror_texels(texmap: TexelMap, atlas: Atlas, faces: np.ndarray, template: np.ndarray,
                  sym: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every covered texel (in :meth:`TexelMap.texels` order): the continuous texel position
    (N, 2) (column, row) of its mirror image, and (N,) bool where it has one.

    Triangles with a mirror triangle map exactly (same barycentrics, permuted corners); the rest
    use the closest point of the mean head to the reflected point, within :data:`SYM_TOL`.
    """
    template = np.asarray(template, dtype=np.float64)
    sym = vertex_symmetry(template) if sym is None else sym
    g, perm = face_symmetry(faces, sym)
    _, tri, b = texmap.texels()
    N = len(tri)
    uvc = atlas.uv[atlas.uv_faces]  # (F, 3, 2)
    out = np.zeros((N, 2))
    ok = np.zeros(N, bool)
    has = g[tri] >= 0
    t, gg = tri[has], g[tri[has]]
    # corner k of t goes to corner perm[t, k] of gg, carrying weight b[:, k]
    uv = np.einsum("nk,nkc->nc", b[has], uvc[gg[:, None], perm[t]])
    out[has], ok[has] = uv, True
    rest = np.flatnonzero(~has)
    if rest.size:
        f = np.asarray(faces)
        p = np.einsum("nk,nkc->nc", b[rest], template[f[tri[rest]]]) * np.array([-1.0, 1.0, 1.0])
        tri2, b2, _, dist = MeshScene([(template, f)]).closest(p)
        close = dist <= SYM_TOL
        out[rest] = np.einsum("nk,nkc->nc", b2, uvc[tri2])
        ok[rest] = close
    return uv_to_texel(out, texmap.size), ok


def feature_weight(points: np.ndarray, landmarks: np.ndarray, radius: tuple[float, float] = FEATURE_RADIUS
                   ) -> np.ndarray:
    """(N,) 1 for model-frame ``points`` (N, 3) within ``radius[0]`` of the inner-feature outlines of
    the 68 ``landmarks`` (68, 3), falling to 0 at ``radius[1]``."""
    p = np.asarray(points, dtype=np.float64)
    best = np.full(len(p), np.inf)
    for line in FEATURE_OUTLINES:
        q = np.asarray(landmarks, dtype=np.float64)[line]
        for a, b in zip(q[:-1], q[1:]):
            ab = b - a
            t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
            best = np.minimum(best, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return np.clip((radius[1] - best) / (radius[1] - radius[0]), 0, 1)


def smooth_weighted(values: np.ndarray, weight: np.ndarray, faces: np.ndarray, iterations: int = 16
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised smoothing on the mesh: each vertex averages its neighbours' ``values`` (V, C)
    by ``weight`` (V,) ``iterations`` times (about ``sqrt(iterations)`` edges wide). Returns the
    smooth values (V, C) and the smoothed weight (V,)."""
    V = len(values)
    L = mesh_laplacian(faces, V)
    deg = L.diagonal()
    avg = sp.diags(1.0 / (deg + 1)) @ (sp.diags(deg) - L + sp.identity(V))
    num = np.asarray(values, dtype=np.float64) * np.asarray(weight, dtype=np.float64)[:, None]
    den = np.asarray(weight, dtype=np.float64).copy()
    for _ in range(iterations):
        num, den = avg @ num, avg @ den
    return num / np.maximum(den, 1e-9)[:, None], den


def mesh_laplacian(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Graph Laplacian (V, V) of the mesh's edges (unit weights): sum over edges of (x_i - x_j)^2 = x' L x."""
    a = vertex_adjacency(faces, n_vertices)
    return (sp.diags(np.asarray(a.sum(1)).ravel()) - a).tocsr()


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) a third of the area (m^2) of the triangles around each vertex."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    a = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    out = np.zeros(len(v))
    for k in range(3):
        np.add.at(out, f[:, k], a / 3)
    return out


def inpaint_vertices(values: np.ndarray, weight: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                     prior: np.ndarray, decay: float | np.ndarray = 0.03, fidelity: float = 0.001) -> np.ndarray:
    """Smoothly complete per-vertex ``values`` (V, C) known with confidence ``weight`` (V,) in [0, 1].

    Minimises the mesh's Dirichlet energy plus, per vertex area, ``weight / fidelity^2`` times the
    squared distance to the data and ``1 / decay^2`` times the squared distance to ``prior`` (C,)
    or (V, C):
    seen vertices keep (a smoothed copy of) their values, and the completion fades from the seen
    border to ``prior`` over about ``decay`` metres (a number or one per vertex (V,)). Returns (V, C).
    """
    vals = np.asarray(values, dtype=np.float64)
    V = len(vals)
    A = vertex_areas(vertices, faces)
    A = np.maximum(A, 1e-3 * max(A.mean(), 1e-12))  # isolated or degenerate vertices still get a prior
    d = A * np.asarray(weight, dtype=np.float64) / fidelity ** 2
    s = A / np.asarray(decay, dtype=np.float64) ** 2
    M = (mesh_laplacian(faces, V) + sp.diags(d + s)).tocsc()
    rhs = d[:, None] * vals + s[:, None] * np.broadcast_to(np.asarray(prior, dtype=np.float64), vals.shape)
    return splu(M).solve(rhs)
