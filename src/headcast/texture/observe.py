"""What the camera sees of a posed mesh: per-pixel surface data and per-point visibility.

Visibility is decided by ray casting (:func:`headcast.render.raycast.raycast`): a surface point
is seen when the ray through its pixel hits its own triangle, one sharing a corner with it, or
the same connected part of the mesh within a few millimetres of it (so an eyeball behind the
eyelid's skin stays hidden). Each seen point gets a confidence in [0, 1] that falls to 0 at
grazing view angles and next to the silhouette and other depth edges (where photo pixels mix
surfaces, and a small misfit shows the wrong one). With the measured depth map, a pixel whose
depth disagrees with the fitted surface, or that has no depth (beyond tiny holes), is taken to
show something else (background, clothes, a misfit ear): confidence 0 there and near it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import binary_closing, distance_transform_edt
from scipy.sparse.csgraph import connected_components

from headcast.core.camera import Intrinsics, project
from headcast.core.geometry import vertex_normals
from headcast.render.raycast import RayHits, raycast
from headcast.texture.atlas import sample

DEPTH_TOL = 0.003  # metres: a surface this close to the first hit along the ray counts as seen
COS_RAMP = (0.2, 0.7)  # cosine of the view angle: confidence 0 below the first, 1 above the second
EDGE_RAMP = (1.0, 3.0)  # pixels from the silhouette, a depth edge or the image border: confidence 0 .. 1
DEPTH_EDGE = 0.01  # metres between neighbouring pixels: an occlusion edge
DEPTH_BEHIND = 0.04  # metres: measured this far behind the fitted surface, the pixel shows the background
DEPTH_FRONT = 0.025  # metres: measured this far in front of it, something covers the surface (clothes, hands)


def mesh_parts(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V,) connected part of each vertex (vertices joined by triangle edges)."""
    f = np.asarray(faces, dtype=np.int64)
    g = sp.coo_matrix((np.ones(f.size), (f.ravel(), np.roll(f, 1, axis=1).ravel())), shape=(n_vertices,) * 2)
    return connected_components(g, directed=False)[1]


def head_texels(faces: np.ndarray, n_vertices: int, tri: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: texels on triangles ``tri`` (N,) of the mesh's largest part, the head's surface (not the
    eyeballs or other small parts, which no camera outside the head sees whole), without the triangles whose
    corners are all in ``inside`` (vertex ids: give the model's ``eyes`` mask, whose eye sockets behind the
    lids belong to the head's part but face the eyeball, so that no camera sees them)."""
    f = np.asarray(faces)
    part = mesh_parts(f, n_vertices)[f[:, 0]]
    out = part[tri] == np.argmax(np.bincount(part))
    if inside is not None and len(inside):
        hidden = np.zeros(n_vertices, bool)
        hidden[np.asarray(inside)] = True
        out &= ~hidden[f[tri]].all(1)
    return out


def interpolate(faces: np.ndarray, tri: np.ndarray, bary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex ``values`` (V, C) at points on triangles ``tri`` (N,)
    with weights ``bary`` (N, 3) -> (N, C) float64."""
    vals = np.asarray(values, dtype=np.float64)
    corners = np.asarray(faces)[tri]
    b = np.asarray(bary, dtype=np.float64)
    out = b[:, 0:1] * vals[corners[:, 0]]
    out += b[:, 1:2] * vals[corners[:, 1]]
    out += b[:, 2:3] * vals[corners[:, 2]]
    return out


@dataclass
class View:
    """A posed mesh (camera frame, metres) seen through ``K``, with the photo it was fitted to.

    Attributes:
        vertices: (V, 3) camera-frame vertices.
        faces: (F, 3) triangles.
        normals: (V, 3) unit vertex normals (camera frame).
        image: (H, W, 3) float32 photo in 0..1.
        K: intrinsics of the photo.
        hits: ray-cast of the mesh at every pixel centre.
        edge_dist: (H, W) float32 pixels from the nearest pixel that misses the mesh, lies outside
            the image, on a depth edge of the mesh, or (with ``depth``) shows something else;
            0 on such pixels, so nothing is sampled from them.
        part: (V,) connected part of each vertex.
        depth: (H, W) float32 measured depth in metres (0 = none), or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    image: np.ndarray
    K: Intrinsics
    hits: RayHits
    edge_dist: np.ndarray
    part: np.ndarray
    depth: np.ndarray | None = None

    @classmethod
    def make(cls, vertices: np.ndarray, faces: np.ndarray, image: np.ndarray, K: Intrinsics,
             depth: np.ndarray | None = None) -> "View":
        """Ray-cast the mesh; ``depth`` (H, W) metres is the measured depth map, if any."""
        v = np.asarray(vertices, dtype=np.float64)
        hits = raycast([(v, faces)], K)
        inside = hits.hit.copy()
        z = hits.depth
        for axis in (0, 1):
            jump = np.abs(np.diff(z, axis=axis)) > DEPTH_EDGE
            lo = [slice(None), slice(None)]
            hi = [slice(None), slice(None)]
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            inside[tuple(lo)] &= ~jump
            inside[tuple(hi)] &= ~jump
        if depth is not None:
            d = np.nan_to_num(np.asarray(depth, dtype=np.float32))
            if d.shape != z.shape:
                raise ValueError("the depth map and the image differ in size")
            valid = d > 0
            pinhole = binary_closing(np.pad(valid, 2, mode="edge"))[2:-2, 2:-2] & ~valid
            inside &= pinhole | (valid & (d - z < DEPTH_BEHIND) & (z - d < DEPTH_FRONT))
        pad = np.pad(inside, 1, constant_values=False)
        edge = distance_transform_edt(pad)[1:-1, 1:-1].astype(np.float32)
        img = np.asarray(image)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        f = np.asarray(faces)
        return cls(v, f, vertex_normals(v, f), img, K, hits, edge, mesh_parts(f, len(v)),
                   None if depth is None else np.nan_to_num(np.asarray(depth, dtype=np.float32)))

    def pixel_normals(self) -> np.ndarray:
        """(H, W, 3) unit smooth normals (camera frame) of the surface at each pixel, 0 where none."""
        hit = self.hits.hit
        out = np.zeros(hit.shape + (3,))
        n = interpolate(self.faces, self.hits.tri[hit], self.hits.bary[hit], self.normals)
        out[hit] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return out

    def region_pixels(self, face_mask: np.ndarray, erode_px: float = 1.5) -> np.ndarray:
        """(H, W) bool pixels whose ray hits a triangle in ``face_mask`` (F,) bool and lie at least
        ``erode_px`` pixels inside the silhouette."""
        hit = self.hits.hit
        m = np.zeros(hit.shape, bool)
        m[hit] = face_mask[self.hits.tri[hit]]
        return m & (self.edge_dist >= erode_px)

    def factors(self, points: np.ndarray, normals: np.ndarray, tri: np.ndarray | None = None,
                vertex_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`observe`'s confidence is made of, for surface ``points`` (N, 3) with unit normals (N, 3):
        their pixel positions (N, 2) (-1 off the image), whether the camera sees them (N,) bool, and the
        view-angle (:data:`COS_RAMP`) and edge-distance (:data:`EDGE_RAMP`) factors (N,) in [0, 1]."""
        pts = np.asarray(points, dtype=np.float64)
        K = self.K
        z = pts[:, 2]
        uv = project(pts, K)
        ok = (z > 1e-6) & np.isfinite(uv).all(1)
        uv = np.where(ok[:, None], uv, -1)
        col = np.rint(uv[:, 0]).astype(np.int64)
        row = np.rint(uv[:, 1]).astype(np.int64)
        ok &= (col >= 0) & (col < K.width) & (row >= 0) & (row < K.height)
        col, row = np.where(ok, col, 0), np.where(ok, row, 0)
        ht = self.hits.tri[row, col]
        ok &= ht >= 0
        hf = self.faces[np.maximum(ht, 0)]
        if tri is not None:
            own = self.faces[np.asarray(tri)]
            adjacent = (own[:, :, None] == hf[:, None, :]).any((1, 2))
            same = self.part[own[:, 0]] == self.part[hf[:, 0]]
        elif vertex_ids is not None:
            vid = np.asarray(vertex_ids)
            adjacent = (hf == vid[:, None]).any(1)
            same = self.part[vid] == self.part[hf[:, 0]]
        else:
            adjacent = np.zeros(len(pts), bool)
            same = np.ones(len(pts), bool)
        near = same & (np.abs(self.hits.depth[row, col] - z) < DEPTH_TOL)
        ok &= adjacent | near
        view = -pts / np.maximum(np.linalg.norm(pts, axis=1, keepdims=True), 1e-12)
        cos = np.einsum("nc,nc->n", np.asarray(normals, dtype=np.float64), view)
        w_cos = np.clip((cos - COS_RAMP[0]) / (COS_RAMP[1] - COS_RAMP[0]), 0, 1)
        w_edge = np.clip((self.edge_dist[row, col] - EDGE_RAMP[0]) / (EDGE_RAMP[1] - EDGE_RAMP[0]), 0, 1)
        return uv, ok, w_cos, w_edge

    def observe(self, points: np.ndarray, normals: np.ndarray, tri: np.ndarray | None = None,
                vertex_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Photo colours (N, 3) at surface ``points`` (N, 3) and their confidence (N,) in [0, 1].

        ``normals`` (N, 3) are unit camera-frame normals. Give ``tri`` (N,) for points inside
        triangles or ``vertex_ids`` (N,) for mesh vertices, so a hit on an adjacent triangle counts
        as seen. Confidence is 0 for points the camera does not see.
        """
        uv, ok, w_cos, w_edge = self.factors(points, normals, tri, vertex_ids)
        w = np.where(ok, w_cos * w_edge, 0.0)
        colors = np.zeros((len(uv), 3), np.float32)
        if ok.any():
            colors[ok] = sample(self.image, uv[ok])
        return colors, w
