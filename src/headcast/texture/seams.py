"""UV seams: mesh edges whose two triangles sit in different places of the atlas.

Along a seam the albedo is stored twice, once on each side; where the two copies differ, a line shows on
the head. :func:`seam_samples` gives matching texel positions on both sides of every seam edge, and
:func:`seam_jumps` the colour difference between them (the continuity check of the tests and benches).
"""

from __future__ import annotations

import numpy as np

from headcast.texture.atlas import sample, uv_to_texel

INSET = 1.0  # texels: samples sit this far inside their own triangle, off the chart's border


def seam_edges(faces: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """(E, 2, 3) per seam edge, for each of its two triangles: (triangle, corner of the edge's first
    vertex, corner of its second vertex); the first vertex is the smaller vertex index."""
    f = np.asarray(faces, dtype=np.int64)
    uf = np.asarray(uv_faces, dtype=np.int64)
    tri = np.repeat(np.arange(len(f)), 3)
    ka = np.tile(np.arange(3), len(f))
    kb = (ka + 1) % 3
    a, b = f[tri, ka], f[tri, kb]
    swap = a > b
    ka, kb = np.where(swap, kb, ka), np.where(swap, ka, kb)
    key = np.minimum(a, b) * (f.max() + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    key, tri, ka, kb = key[order], tri[order], ka[order], kb[order]
    pair = np.flatnonzero(key[1:] == key[:-1])  # edges shared by two triangles (first two of each key)
    i, j = pair, pair + 1
    differ = (uf[tri[i], ka[i]] != uf[tri[j], ka[j]]) | (uf[tri[i], kb[i]] != uf[tri[j], kb[j]])
    i, j = i[differ], j[differ]
    return np.stack([np.stack([tri[i], ka[i], kb[i]], 1), np.stack([tri[j], ka[j], kb[j]], 1)], 1)


def seam_samples(uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Texel positions (N, 2) and (N, 2) (column, row) of the same surface points seen from the two sides
    of every seam edge (about one sample per texel of edge length, :data:`INSET` texels inside each
    triangle) of a ``size`` x ``size`` texture with UVs ``uv`` (T, 2) / ``uv_faces`` (F, 3)."""
    e = seam_edges(faces, uv_faces)
    if not len(e):
        return np.zeros((0, 2)), np.zeros((0, 2))
    uvt = uv_to_texel(np.asarray(uv, dtype=np.float64), size)
    uf = np.asarray(uv_faces, dtype=np.int64)
    sides = []
    for s in range(2):
        t, ka, kb = e[:, s, 0], e[:, s, 1], e[:, s, 2]
        p, q = uvt[uf[t, ka]], uvt[uf[t, kb]]
        r = uvt[uf[t, 3 - ka - kb]]
        sides.append((p, q, r))
    length = np.maximum(np.linalg.norm(sides[0][1] - sides[0][0], axis=1),
                       np.linalg.norm(sides[1][1] - sides[1][0], axis=1))
    n = np.maximum(1, np.ceil(length).astype(int))
    edge = np.repeat(np.arange(len(e)), n)
    t = (np.concatenate([np.arange(k) for k in n]) + 0.5) / n[edge]
    out = []
    for p, q, r in sides:
        x = p[edge] + t[:, None] * (q[edge] - p[edge])
        inward = r[edge] - x
        out.append(x + INSET * inward / np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-9))
    return out[0], out[1]


def seam_jumps(texture: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) mean absolute RGB difference (texture units) between the texture at positions ``a`` and ``b``."""
    return np.abs(sample(texture, a) - sample(texture, b)).mean(1)
