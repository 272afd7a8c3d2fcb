"""Texture space: a one-image atlas of a model's UV layout, UV rasterisation and baking.

A model's UVs may span several unit tiles (ICT-FaceKit: face in u 0..1, head and neck in u 1..2)
and may overlap (ICT's eyeballs reuse the face tile). :func:`build_atlas` moves every UV chart
into one square image without overlaps: charts are grouped into *pages* (a tile, split into
layers where charts overlap) and the pages laid out on a grid, each keeping its charts' shapes.
A layout that already fits one tile without overlaps (FLAME) stays as it is, up to a thin margin.

Texel convention: an ``S x S`` image, row 0 at the top; texel (row i, column j) has its centre at
``u = (j + 0.5) / S``, ``v = 1 - (i + 0.5) / S`` (UVs in the OBJ convention, origin bottom-left).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.ndimage import distance_transform_edt
from scipy.sparse.csgraph import connected_components

from headcast.core.errors import HeadcastError

MARGIN = 0.01  # empty border of each page, as a fraction of the page (keeps filtering off its neighbours)
_OVERLAP_TOL = 0.01  # charts sharing less than this fraction of their area do not need separate pages


@dataclass
class Atlas:
    """A model's UV layout moved into one square image.

    Attributes:
        uv: (T, 2) float64 atlas coordinates in [0, 1], OBJ convention, one per model UV index.
        uv_faces: (F, 3) int32 UV index of each triangle corner (the model's ``uv_faces``).
        page: (F,) int32 page (a tile, or a layer of overlapping charts in a tile) of each triangle.
    """

    uv: np.ndarray
    uv_faces: np.ndarray
    page: np.ndarray

    @property
    def n_pages(self) -> int:
        return int(self.page.max()) + 1 if self.page.size else 0


@dataclass
class TexelMap:
    """Which triangle covers each texel of an ``S x S`` image.

    Attributes:
        tri: (S, S) int32 triangle per texel, -1 where no triangle covers the texel centre.
        bary: (S, S, 3) float32 barycentric coordinates of the texel centre in that triangle.
    """

    tri: np.ndarray
    bary: np.ndarray

    @property
    def size(self) -> int:
        return int(self.tri.shape[0])

    @property
    def covered(self) -> np.ndarray:
        """(S, S) bool texels inside a triangle."""
        return self.tri >= 0

    def texels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Covered texels as flat indices (N,), their triangles (N,) and barycentrics (N, 3)."""
        idx = np.flatnonzero(self.tri.ravel() >= 0)
        return idx, self.tri.ravel()[idx], self.bary.reshape(-1, 3)[idx]


def uv_charts(uv_faces: np.ndarray, n_uv: int) -> np.ndarray:
    """(F,) connected UV chart of each triangle (triangles sharing a UV index are one chart)."""
    f = np.asarray(uv_faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    g = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n_uv, n_uv))
    _, label = connected_components(g, directed=False)
    return label[f[:, 0]].astype(np.int32)


def build_atlas(uv: np.ndarray, uv_faces: np.ndarray, vertices: np.ndarray | None = None,
                faces: np.ndarray | None = None, res: int = 256) -> Atlas:
    """Lay a UV layout (T, 2), (F, 3) out in one square image without overlapping charts.

    Charts go to the unit tile holding their centre; within a tile, charts are placed largest
    first on the first layer where they overlap earlier charts by less than 1 % of their area
    (tested on a ``res`` x ``res`` raster). Each (tile, layer) is a page. With the mesh
    (``vertices`` (V, 3), ``faces`` (F, 3)) pages are sized for an even texel density over the
    surface, four times the texels per area where the surface faces forward (+z, where photos see it); without it, by UV
    area. Pages (their charts' bounding boxes) are shelf-packed into the unit square, largest
    first, with a gutter of :data:`MARGIN`. One page that fills its tile keeps its layout.
    """
    uv = np.asarray(uv, dtype=np.float64)
    uv_faces = np.asarray(uv_faces, dtype=np.int32)
    area = 0.5 * np.abs(_cross2(uv[uv_faces[:, 1]] - uv[uv_faces[:, 0]], uv[uv_faces[:, 2]] - uv[uv_faces[:, 0]]))
    if not np.isfinite(uv).all() or area.sum() < 1e-6:
        raise HeadcastError("the head model has no usable UV layout (texture coordinates are missing or flat)")
    chart = uv_charts(uv_faces, len(uv))
    n_charts = int(chart.max()) + 1
    chart_area = np.bincount(chart, weights=area, minlength=n_charts)
    centre = np.zeros((n_charts, 2))
    np.add.at(centre, chart, uv[uv_faces].mean(1) * area[:, None])
    tile = np.floor(centre / np.maximum(chart_area, 1e-30)[:, None] + 1e-9).astype(np.int64)

    pages: list[tuple[tuple[int, int], np.ndarray]] = []  # (tile, coverage raster)
    chart_page = np.zeros(n_charts, dtype=np.int64)
    for c in np.argsort(-chart_area, kind="stable"):
        t = (int(tile[c, 0]), int(tile[c, 1]))
        cover = rasterize_uv(uv - tile[c], uv_faces[chart == c], res).covered
        n = max(int(cover.sum()), 1)
        for p, (tp, mask) in enumerate(pages):
            if tp == t and (mask & cover).sum() < _OVERLAP_TOL * n:
                mask |= cover
                chart_page[c] = p
                break
        else:
            pages.append((t, cover))
            chart_page[c] = len(pages) - 1
    face_page = chart_page[chart]
    n_pages = len(pages)

    # each page's bounding box in its tile and its size in the atlas (relative)
    uv_page = np.full(len(uv), -1, dtype=np.int64)
    uv_page[uv_faces.ravel()] = np.repeat(face_page, 3)
    uv_tile = np.zeros((len(uv), 2))
    uv_tile[uv_faces.ravel()] = np.repeat(tile[chart], 3, axis=0)
    local_uv = uv - uv_tile
    lo = np.array([local_uv[uv_page == p].min(0) for p in range(n_pages)])
    hi = np.array([local_uv[uv_page == p].max(0) for p in range(n_pages)])
    uv_area = np.bincount(face_page, weights=area, minlength=n_pages)
    if vertices is not None and faces is not None:
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces)
        cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        a3 = 0.5 * np.linalg.norm(cr, axis=1)
        front = cr[:, 2] > 0.3 * np.linalg.norm(cr, axis=1)
        weight = np.bincount(face_page, weights=a3 * (1 + 3 * front), minlength=n_pages)
    else:
        weight = uv_area
    density = np.sqrt(np.maximum(weight, 1e-12) / np.maximum(uv_area, 1e-12))
    dims = (hi - lo) * density[:, None]
    if n_pages == 1:
        lo, hi, dims = np.zeros((1, 2)), np.ones((1, 2)), np.ones((1, 2))
    offset, scale = _shelf_pack(dims, MARGIN)

    out = np.zeros_like(uv)
    used = uv_page >= 0
    p = uv_page[used]
    s = scale * density[p] if n_pages > 1 else np.full(p.shape, scale)
    # rows of the image grow downwards, v grows upwards: a page at offset (x, y) from the top-left
    # spans v in [1 - y - height, 1 - y]
    out[used, 0] = offset[p, 0] + s * (local_uv[used, 0] - lo[p, 0])
    out[used, 1] = 1 - offset[p, 1] - s * (hi[p, 1] - local_uv[used, 1])
    order = np.argsort(offset[:, 1] * 10 + offset[:, 0])
    rank = np.empty_like(order)
    rank[order] = np.arange(n_pages)
    return Atlas(np.clip(out, 0, 1), uv_faces, rank[face_page].astype(np.int32))


def _shelf_pack(dims: np.ndarray, gutter: float) -> tuple[np.ndarray, float]:
    """Top-left offsets (P, 2) and the common scale that fit rectangles ``dims`` (P, 2) (width,
    height) into the unit square on shelves, tallest first, ``gutter`` around each."""
    order = np.argsort(-dims[:, 1], kind="stable")

    def place(s: float):
        off = np.zeros_like(dims)
        x = y = gutter
        shelf_h = 0.0
        for i in order:
            w, h = dims[i] * s
            if x + w + gutter > 1 and x > gutter:
                y, x = y + shelf_h + gutter, gutter
                shelf_h = 0.0
            off[i] = (x, y)
            x += w + gutter
            shelf_h = max(shelf_h, h)
        fits = x <= 1 + 1e-12 and y + shelf_h + gutter <= 1 + 1e-12
        return off, fits and all(dims[i, 0] * s + 2 * gutter <= 1 + 1e-12 for i in order)

    lo_s, hi_s = 0.0, (1 - 2 * gutter) / max(dims.max(), 1e-12)
    for _ in range(40):
        mid = 0.5 * (lo_s + hi_s)
        lo_s, hi_s = (mid, hi_s) if place(mid)[1] else (lo_s, mid)
    return place(lo_s)[0], lo_s


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def rasterize_uv(uv: np.ndarray, uv_faces: np.ndarray, size: int, chunk: int = 2_000_000) -> TexelMap:
    """Rasterise triangles given in UV space into an ``size x size`` texel map.

    A texel belongs to the triangle containing its centre (see the module docstring); where
    triangles overlap the one listed last wins. ``tri`` indexes the rows of ``uv_faces``.
    """
    S = int(size)
    uv = np.asarray(uv, dtype=np.float64)
    corners = uv[np.asarray(uv_faces)]  # (F, 3, 2)
    x = corners[..., 0] * S - 0.5
    y = (1 - corners[..., 1]) * S - 0.5
    x0 = np.clip(np.ceil(x.min(1) - 1e-9), 0, S).astype(np.int64)
    x1 = np.clip(np.floor(x.max(1) + 1e-9), -1, S - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(1) - 1e-9), 0, S).astype(np.int64)
    y1 = np.clip(np.floor(y.max(1) + 1e-9), -1, S - 1).astype(np.int64)
    w = np.maximum(x1 - x0 + 1, 0)
    h = np.maximum(y1 - y0 + 1, 0)
    det = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    n = np.where(np.abs(det) > 1e-12, w * h, 0)

    tri = np.full(S * S, -1, dtype=np.int32)
    bary = np.zeros((S * S, 3), dtype=np.float32)
    ends = np.cumsum(n)
    start = 0
    while start < len(n):
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + chunk, side="right"))
        stop = max(stop, start + 1)
        f = np.repeat(np.arange(start, stop), n[start:stop])
        if f.size:
            k = np.arange(f.size) - np.repeat(np.cumsum(n[start:stop]) - n[start:stop], n[start:stop])
            px = x0[f] + k % w[f]
            py = y0[f] + k // w[f]
            dx, dy = px - x[f, 0], py - y[f, 0]
            b1 = (dx * (y[f, 2] - y[f, 0]) - dy * (x[f, 2] - x[f, 0])) / det[f]
            b2 = (dy * (x[f, 1] - x[f, 0]) - dx * (y[f, 1] - y[f, 0])) / det[f]
            b0 = 1 - b1 - b2
            inside = (b0 >= -1e-9) & (b1 >= -1e-9) & (b2 >= -1e-9)
            idx = py[inside] * S + px[inside]
            tri[idx] = f[inside]
            bary[idx] = np.stack([b0[inside], b1[inside], b2[inside]], 1)
        start = stop
    return TexelMap(tri.reshape(S, S), np.clip(bary, 0, 1).reshape(S, S, 3))


def bake(texmap: TexelMap, faces: np.ndarray, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Per-vertex values (V, C) interpolated into texture space: (S, S, C) float32 (``fill`` outside)."""
    values = np.asarray(values, dtype=np.float64)
    vals = values.reshape(len(values), -1)
    idx, tri, b = texmap.texels()
    S = texmap.size
    out = np.full((S * S, vals.shape[1]), fill, dtype=np.float32)
    out[idx] = np.einsum("nk,nkc->nc", b, vals[np.asarray(faces)[tri]])
    return out.reshape(S, S, *values.shape[1:])


def dilate(texture: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Copy each unknown texel from its nearest known texel, so filtering at chart borders never
    reads the empty background. ``texture`` (S, S, C), ``known`` (S, S) bool."""
    if known.all() or not known.any():
        return texture
    _, (ii, jj) = distance_transform_edt(~known, return_indices=True)
    return texture[ii, jj]


def uv_to_texel(uv: np.ndarray, size: int) -> np.ndarray:
    """UVs (..., 2) -> continuous texel coordinates (..., 2) as (column, row), centres at integers."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[..., 0] * size - 0.5, (1 - uv[..., 1]) * size - 0.5], axis=-1)


def sample(texture: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (S, S, C) or (H, W, C) image at (N, 2) float (column, row) positions -> (N, C)."""
    img = np.ascontiguousarray(texture, dtype=np.float32)
    C = img.shape[2] if img.ndim == 3 else 1
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 1, 2)
    out = np.empty((xy.shape[0], C), np.float32)
    # cv2.remap takes at most 4 channels and 32767 rows: go in pieces
    for c0 in range(0, C, 4):
        part = img[..., c0:c0 + 4] if img.ndim == 3 else img
        for r0 in range(0, len(xy), 32000):
            m = xy[r0:r0 + 32000]
            s = cv2.remap(part, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            s = s.reshape(len(m), -1)
            out[r0:r0 + len(m), c0:c0 + s.shape[1]] = s
    return out
