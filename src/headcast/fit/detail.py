"""The detail layer: per-vertex offsets beyond the parametric model (the paper's "mixed" model).

After the parametric fit, each vertex may move along its normal by d_v metres. The offsets minimise
    sum_points ((p - q) . n_q - sum_k b_k d_k (n_k . n_q))^2 + smooth (N / V) ||L d||^2 + sum_v mu_v d_v^2
with q the closest point of the fitted (offset) mesh to data point p (barycentric weights b on the corners
k, unit normal n_q), N points on V vertices, L the uniform graph Laplacian (weighted by the points per
vertex, so that the offsets average the sensor noise of many points, whatever their number) and mu_v a
weak pull to zero where points support the vertex and a strong one where none do (no data, no offset); a
sparse linear solve, repeated with fresh correspondences. The offsets are stored as vectors (V, 3) in the
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


def to_rest(params: HeadParams, vectors: np.ndarray) -> np.ndarray:
    """Camera-frame displacement vectors (V, 3) as rest-space (model frame) vectors: undo the placement's
    scale and FLIP and the root rotation (the jaw's small turn is not undone)."""
    R = Rotation.from_rotvec(params.theta[pose_slice("root")]).as_matrix()
    return (vectors @ FLIP.T.astype(np.float64)) @ R / params.scale


def fit_offsets(model, params: HeadParams, verts: np.ndarray, pts: np.ndarray, cfg: DetailConfig | None = None
                ) -> tuple[np.ndarray, dict]:
    """Rest-space offsets (V, 3) float32 for the fitted head (camera-frame vertices ``verts`` (V, 3) of
    ``params`` on ``model``) from the registered points (N, 3), and a report (millimetres)."""
    d, seen = normal_offsets(verts, model.faces, pts, cfg)
    n = vertex_normals(verts, model.faces)
    offsets = to_rest(params, d[:, None] * n).astype(np.float32)
    mm = np.abs(d[seen]) * 1000 if seen.any() else np.zeros(1)
    report = {"vertices_seen": int(seen.sum()), "vertices_offset": int((d != 0).sum()),
              "offset_mm": {"median": float(np.median(mm)), "p95": float(np.percentile(mm, 95)),
                            "max": float(mm.max())}}
    logger.info(f"detail: offsets on {report['vertices_offset']} vertices ({int(seen.sum())} seen), "
                f"median {report['offset_mm']['median']:.2f} mm, p95 {report['offset_mm']['p95']:.2f} mm")
    return offsets, report


def detailed_vertices(model, params: HeadParams, offsets: np.ndarray | None) -> np.ndarray:
    """Camera-frame vertices (V, 3) of ``params`` on ``model`` with the rest-space ``offsets`` (V, 3) added."""
    from headcast.fit.head import PackedHead
    from headcast.io.recon import with_offsets

    return PackedHead(with_offsets(model, offsets), params.model).vertices_of(params)
