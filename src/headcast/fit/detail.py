"""The detail layer: per-vertex offsets beyond the parametric model (the paper's "mixed" model).

After the parametric fit, each vertex may move along its normal by d_v metres. The offsets minimise
    sum_points ((p - q) . n_q - sum_k b_k d_k (n_k . n_q))^2 + smooth (N / V) ||L d||^2 + sum_v mu_v d_v^2
with q the closest point of the fitted (offset) mesh to data point p (barycentric weights b on the corners
k, unit normal n_q), N points on V vertices, L the uniform graph Laplacian (weighted by the points per
vertex, so that the offsets average the sensor noise of many points, whatever their number) and mu_v a
weak pull to zero where points support the vertex and a strong one where none do (no data, no offset); a
sparse linear solve, repeated with fresh correspondences.

The depth cannot place the lip border or the lids' edges along the surface (a TrueDepth frame smooths a
millimetre crease away, and the basis cannot bend the lips to the detected contours while fitting the depth), so
before the normal offsets the lips and lids may slide along the surface towards the landmark contours detected in
the frames (:func:`landmark_warp`): tangential displacements t_v minimising
    mean_views sum_landmarks |P_i (sum_k b_k t_k) + e_i|^2 + warp_smooth ||L t||^2
with e_i the landmark's error in view i (pixels times depth / focal length: metres on the image plane) and P_i
its linearised projection (2, 3), zero beyond ``warp_radius_mm`` of those landmarks. The offsets are stored as vectors (V, 3) in the
model's rest space (model frame, before pose and placement) so they move with the head when it is animated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from scipy.spatial.transform import Rotation

from headcast.core.camera import FLIP
from headcast.core.geometry import vertex_adjacency, vertex_normals
from headcast.core.params import HeadParams, pose_slice
from headcast.core.scene import closest_points_on_mesh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetailConfig:
    """Weights of the offset solve (per point squared metres, unitless ratios) and its limits."""

    smooth: float = 25.0          # Laplacian weight against the data term, per point a vertex has on average
    support_min: float = 0.5      # barycentric weight from points a vertex needs to count as seen
    pull_seen: float = 1e-3       # pull to zero on seen vertices
    pull_unseen: float = 100.0    # pull to zero on unseen vertices
    rings: int = 2                # offsets are kept within this many edge rings of seen vertices, zero beyond
    trim_mm: float = 6.0          # points farther than this from the mesh do not take part
    max_mm: float = 10.0          # offsets are clipped to +-this
    rounds: int = 2               # solves, each with fresh correspondences
    warp_landmarks: tuple[int, ...] = tuple(range(36, 68))  # iBUG-68 lids (36-47) and lips (48-67) that slide
    warp_radius_mm: float = 12.0  # vertices this close to those landmarks may slide (zero beyond)
    warp_smooth: float = 0.1      # Laplacian weight of the slide against the views' mean landmark error
    warp_trim_mm: float = 5.0     # a view's landmark error beyond this is left out (a wrong detection)
    warp_max_mm: float = 4.0      # slides are clipped to this length


@dataclass(frozen=True)
class LandmarkView:
    """Detected landmarks (68, 2) pixels in a frame with intrinsics K, whose camera sees the fitted head's
    frame through ``to_camera`` (4, 4)."""

    to_camera: np.ndarray
    K: object
    landmarks2d: np.ndarray


def laplacian(adj: sp.csr_matrix) -> sp.csr_matrix:
    """Uniform graph Laplacian I - D^-1 A of an adjacency (isolated vertices: zero rows)."""
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.diags((deg > 0).astype(np.float64)) - sp.diags(inv) @ adj).tocsr()


def normal_offsets(verts: np.ndarray, faces: np.ndarray, pts: np.ndarray, cfg: DetailConfig | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets d (V,) metres along the unit vertex normals of the mesh (verts (V, 3), faces (F, 3)) fitted to
    the points (N, 3) (module docstring), and the seen mask (V,) bool."""
    cfg = cfg or DetailConfig()
    V = len(verts)
    normals = vertex_normals(verts, faces)
    adj = vertex_adjacency(faces, V)
    L = laplacian(adj)
    d = np.zeros(V)
    seen = np.zeros(V, bool)
    for _ in range(cfg.rounds):
        cur = verts + d[:, None] * normals
        tri, bary, dist = closest_points_on_mesh(cur, faces, pts)
        keep = dist < cfg.trim_mm / 1000.0
        corners, b, p = faces[tri[keep]], bary[keep], pts[keep]
        nq = np.einsum("nk,nkc->nc", b, normals[corners])
        nq /= np.maximum(np.linalg.norm(nq, axis=1, keepdims=True), 1e-12)
        q = np.einsum("nk,nkc->nc", b, cur[corners])
        w = b * np.einsum("nkc,nc->nk", normals[corners], nq)
        rows = np.repeat(np.arange(len(p)), 3)
        A = sp.csr_matrix((w.ravel(), (rows, corners.ravel())), shape=(len(p), V))
        rhs = ((p - q) * nq).sum(1) + A @ d
        support = np.bincount(corners.ravel(), weights=b.ravel(), minlength=V)
        seen = support >= cfg.support_min
        mu = np.where(seen, cfg.pull_seen, cfg.pull_unseen)
        M = (A.T @ A + cfg.smooth * len(p) / V * (L.T @ L) + sp.diags(mu)).tocsc()
        d = np.clip(spsolve(M, A.T @ rhs), -cfg.max_mm / 1000.0, cfg.max_mm / 1000.0)
    near = seen.astype(np.float64)
    for _ in range(cfg.rings):
        near = near + adj @ near
    d[near == 0] = 0.0
    return d, seen


def _view_rows(lm: np.ndarray, idx: np.ndarray, views: list[LandmarkView], trim: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per view and landmark (lm (n, 3) of the iBUG-68 indices idx (n,), head's frame): the image-plane error
    e (m, 2) metres, its linearised projection P (m, 2, 3) and the landmark's row in lm (m,); errors beyond
    ``trim`` metres left out, all weighted 1 / sqrt(views)."""
    es, Ps, ids = [], [], []
    for v in views:
        R, t = v.to_camera[:3, :3], v.to_camera[:3, 3]
        p = lm @ R.T + t
        z = p[:, 2:3]
        det = v.landmarks2d[idx]
        e = np.stack([(p[:, 0] / p[:, 2] - (det[:, 0] - v.K.cx) / v.K.fx),
                      (p[:, 1] / p[:, 2] - (det[:, 1] - v.K.cy) / v.K.fy)], 1) * z
        P = R[None, :2] - (p[:, :2] / z)[:, :, None] * R[None, 2:3]
        ok = np.isfinite(e).all(1) & (np.linalg.norm(e, axis=1) < trim)
        es.append(e[ok])
        Ps.append(P[ok])
        ids.append(np.flatnonzero(ok))
    w = 1.0 / np.sqrt(max(len(views), 1))
    return np.concatenate(es) * w, np.concatenate(Ps) * w, np.concatenate(ids)


def _tangents(normals: np.ndarray) -> np.ndarray:
    """Two unit tangents (V, 3, 2) orthogonal to each unit normal (V, 3)."""
    a = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, a)
    t1 /= np.maximum(np.linalg.norm(t1, axis=1, keepdims=True), 1e-12)
    return np.stack([t1, np.cross(normals, t1)], 2)


def _tangent_basis(T: np.ndarray, region: np.ndarray, V: int) -> sp.csr_matrix:
    """(3V, 2R) map from two tangential coordinates per region vertex to displacements (V, 3) flattened,
    with the tangents T (R, 3, 2)."""
    R = len(region)
    rows = np.broadcast_to(3 * region[:, None, None] + np.arange(3)[None, :, None], T.shape)
    cols = np.broadcast_to(2 * np.arange(R)[:, None, None] + np.arange(2)[None, None, :], T.shape)
    return sp.csr_matrix((T.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * V, 2 * R))


def landmark_warp(model, verts: np.ndarray, views: list[LandmarkView], cfg: DetailConfig | None = None
                  ) -> tuple[np.ndarray, dict]:
    """Displacements (V, 3) metres along the surface of the fitted head (vertices ``verts`` (V, 3)) moving its
    lids and lips towards the landmarks detected in ``views`` (module docstring), and a report (mm)."""
    cfg = cfg or DetailConfig()
    V, faces = len(verts), model.faces
    idx = np.asarray(cfg.warp_landmarks)
    corners, bary = faces[model.lmk_faces[idx]], model.lmk_bary[idx].astype(np.float64)
    lm = model.landmark_vertices(verts)[idx]
    e, P, li = _view_rows(lm, idx, views, cfg.warp_trim_mm / 1000.0)
    near = np.linalg.norm(verts[:, None] - lm[None], axis=2).min(1) < cfg.warp_radius_mm / 1000.0
    for part in ("left_eyeball", "right_eyeball"):
        near[model.masks.get(part, [])] = False
    region = np.flatnonzero(near)
    if len(e) == 0 or len(region) == 0:
        return np.zeros_like(verts), {"landmark_rows": 0}
    B = _tangent_basis(_tangents(vertex_normals(verts, faces))[region], region, V)
    m = len(e)
    vals = P[:, :, None, :] * bary[li][:, None, :, None]  # (m, 2, 3 corners, 3 coords): P (sum_k b_k u_k)
    r = np.broadcast_to(np.arange(2 * m).reshape(m, 2, 1, 1), vals.shape)
    c = np.broadcast_to((3 * corners[li])[:, None, :, None] + np.arange(3), vals.shape)
    G = sp.csr_matrix((vals.ravel(), (r.ravel(), c.ravel())), shape=(2 * m, 3 * V)) @ B
    Lb = sp.kron(laplacian(vertex_adjacency(faces, V)), sp.identity(3), format="csr") @ B
    M = (G.T @ G + cfg.warp_smooth * (Lb.T @ Lb) + 1e-9 * sp.identity(B.shape[1])).tocsc()
    a = spsolve(M, -(G.T @ e.ravel()))
    u = (B @ a).reshape(V, 3)
    u *= np.minimum(1.0, cfg.warp_max_mm / 1000.0 / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12))
    n = np.linalg.norm(u, axis=1)
    after = (e.ravel() + G @ (B.T @ u.ravel())).reshape(m, 2)  # B's columns are orthonormal
    mm = np.sqrt(len(views)) * 1000
    report = {"landmark_rows": m, "region_vertices": len(region),
              "landmark_error_mm": {"before": float(np.median(np.linalg.norm(e, axis=1)) * mm),
                                    "after": float(np.median(np.linalg.norm(after, axis=1)) * mm)},
              "slide_mm": {"median": float(np.median(n[region]) * 1000), "max": float(n.max() * 1000)}}
    return u, report


def to_rest(params: HeadParams, vectors: np.ndarray) -> np.ndarray:
    """Camera-frame displacement vectors (V, 3) as rest-space (model frame) vectors: undo the placement's
    scale and FLIP and the root rotation (the jaw's small turn is not undone)."""
    R = Rotation.from_rotvec(params.theta[pose_slice("root")]).as_matrix()
    return (vectors @ FLIP.T.astype(np.float64)) @ R / params.scale


def fit_offsets(model, params: HeadParams, verts: np.ndarray, pts: np.ndarray, cfg: DetailConfig | None = None,
                views: list[LandmarkView] | None = None) -> tuple[np.ndarray, dict]:
    """Rest-space offsets (V, 3) float32 for the fitted head (camera-frame vertices ``verts`` (V, 3) of
    ``params`` on ``model``) from the registered points (N, 3), and a report (millimetres). With ``views``,
    the lids and lips first slide towards their landmarks (:func:`landmark_warp`)."""
    slide, warp_report = (landmark_warp(model, verts, views, cfg) if views else (np.zeros_like(verts), None))
    verts = verts + slide
    d, seen = normal_offsets(verts, model.faces, pts, cfg)
    n = vertex_normals(verts, model.faces)
    offsets = to_rest(params, slide + d[:, None] * n).astype(np.float32)
    mm = np.abs(d[seen]) * 1000 if seen.any() else np.zeros(1)
    report = {"vertices_seen": int(seen.sum()), "vertices_offset": int((d != 0).sum()),
              "offset_mm": {"median": float(np.median(mm)), "p95": float(np.percentile(mm, 95)),
                            "max": float(mm.max())}}
    if warp_report is not None:
        report["landmark_warp"] = warp_report
    logger.info(f"detail: offsets on {report['vertices_offset']} vertices ({int(seen.sum())} seen), "
                f"median {report['offset_mm']['median']:.2f} mm, p95 {report['offset_mm']['p95']:.2f} mm")
    return offsets, report


def detailed_vertices(model, params: HeadParams, offsets: np.ndarray | None) -> np.ndarray:
    """Camera-frame vertices (V, 3) of ``params`` on ``model`` with the rest-space ``offsets`` (V, 3) added."""
    from headcast.fit.head import PackedHead
    from headcast.io.recon import with_offsets

    return PackedHead(with_offsets(model, offsets), params.model).vertices_of(params)
