"""The residual terms of the RGB-D fit and what they match.

Each term is an ``evaluate(x, with_jac)`` function (:data:`headcast.fit.solver.Evaluate`) over the
full packed vector x (P,): residuals (M,), or residuals and their Jacobian (M, P). Residuals are
scaled so that their sum of squares is the term's mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.geometry import face_normals
from headcast.fit.head import PackedHead
from headcast.fit.packing import Packing
from headcast.fit.solver import Evaluate
from headcast.model.head_model import N_CONTOUR

INNER = np.arange(N_CONTOUR, 68)  # landmarks without the face oval


@dataclass
class Targets:
    """What the fit matches, camera frame: landmarks3d (68, 3) m with valid (68,), face points (N, 3) m,
    landmarks2d (68, 2) pixels and the intrinsics."""

    landmarks3d: np.ndarray | None
    valid3d: np.ndarray | None
    points: np.ndarray | None
    landmarks2d: np.ndarray
    K: Intrinsics
    scene_points: np.ndarray | None = None  # (M, 3) all depth points near the head, for region growing


def point_term(head: PackedHead, x: np.ndarray, pts: np.ndarray, trim_m: float | None) -> Evaluate:
    """Correspondences of the points (n, 3) on the mesh at x, then the point-to-surface term.

    Points farther than ``trim_m`` from the mesh are left out, unless that would leave fewer than 30 %.
    """
    faces = head.model.faces
    (tri, bary, dist), v = head.closest(x, pts)
    keep = dist < trim_m if trim_m is not None else np.ones(len(pts), bool)
    if keep.sum() < 0.3 * len(pts):  # far from the surface: do not trim yet
        keep[:] = True
    corners, b = faces[tri[keep]], bary[keep]
    where = head.surface_map(corners, b)
    target = pts[keep]
    n = int(keep.sum())
    normal = distance_directions(v, faces[tri[keep]], b, pts[keep])

    def evaluate(xx: np.ndarray, with_jac: bool):
        q, J = head.surface_points_along(xx, where, normal, with_jac)
        r = ((q - target) * normal).sum(1) / np.sqrt(n)
        return (r, np.divide(J, np.sqrt(n), out=J)) if with_jac else r

    return evaluate


def distance_directions(v: np.ndarray, corners: np.ndarray, bary: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Unit directions (n, 3) along which each point (n, 3) is measured from its closest point
    (triangle ``corners`` (n, 3) of the vertices v (V, 3), weights ``bary`` (n, 3)).

    The residual (q - p) . n equals the point-to-triangle distance at the current mesh while
    letting the surface slide under the point (point-to-plane Gauss-Newton), which converges
    in a few steps where fixed point-to-point correspondences crawl.
    """
    d = pts - np.einsum("nk,nkc->nc", bary, v[corners])
    dn = np.linalg.norm(d, axis=1, keepdims=True)
    out = d / np.maximum(dn, 1e-18)
    on = np.flatnonzero(dn[:, 0] <= 1e-7)  # on the surface: the face normal, turned to the point's side
    if len(on):
        fn = face_normals(v, corners[on])
        out[on] = fn * np.sign((fn * d[on]).sum(1, keepdims=True) + 1e-30)
    return out


def landmark_term(head: PackedHead, tgt: np.ndarray, idx: np.ndarray) -> Evaluate:
    """3D landmark term of the static (inner) landmarks ``idx`` (n,) against ``tgt`` (n, 3)."""
    m = head.model
    tgt = np.asarray(tgt, dtype=np.float64)
    where = head.surface_map(m.faces[m.lmk_faces[idx]], m.lmk_bary[idx].astype(np.float64))
    scale = 1.0 / np.sqrt(len(idx))

    def evaluate(xx: np.ndarray, with_jac: bool):
        q, J = head.surface_points(xx, where, with_jac)
        r = ((q - tgt) * scale).reshape(-1)
        return (r, J.reshape(-1, head.pk.size) * scale) if with_jac else r

    return evaluate


def prior_rows(pk: Packing, x: np.ndarray, active: np.ndarray, weights: dict[str, float]
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Residual rows ``sqrt(w) * x[part]`` and their Jacobians (n, P) for each part named in ``weights``
    that has an active entry."""
    rs, Js = [], []
    for name, w in weights.items():
        if active[pk.sl[name]].any():
            rs.append(np.sqrt(w) * x[pk.sl[name]])
            J = np.zeros((rs[-1].size, pk.size))
            J[:, pk.sl[name]] = np.sqrt(w) * np.eye(rs[-1].size)
            Js.append(J)
    return rs, Js
