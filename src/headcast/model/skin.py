"""Skinned vertices and points on the mesh with their exact Jacobians, in closed form (NumPy float64).

The RGB-D fit's pose: a root rotation and local rotations of a few joints (the jaw), every other joint
at rest. That is :func:`headcast.model.rig.grouped_points` with each vertex's own skinning weights on
those joints as its groups: a vertex with rest position u (beta and psi blended in, plus the joints'
pose correctives where the model has them: FLAME's) and weight c_g on joint g moves to

    x = R0 (u - J_0 + sum_g c_g (R_g - I)(u - J_g)) + J_0,

affine in z = [beta | psi] for fixed rotations. :class:`SkinPoints` evaluates barycentric points of the
mesh (the fit's surface correspondences and landmarks) and their derivatives, also projected on a
direction per point (the fit's point-to-plane residuals), without per-point copies of the blendshapes.
``tests/test_reconstruct.py`` checks them against :class:`headcast.model.layer.HeadLayer` and torch's
forward-mode derivative. Model frame, metres.
"""

from __future__ import annotations

import numpy as np

from headcast.core.params import JOINT_NAMES
from headcast.model.head_model import HeadModel
from headcast.model.rig import ROOT, grouped_points, joint_jacobian, rotation_jacobians, skew


class VertexSkin:
    """The model data the closed form needs, for a root rotation and local rotations of ``joints``.

    Attributes (float64): v_template (V, 3), dirs (V, 3, Z) the blendshapes of z = [beta | psi], w (G - 1, V)
    the weights on ``joints``, j0 (G, 3) and JZ (G, 3, Z) the rest joints (root first) and their
    derivatives, posedirs (V, 3, 9 (G - 1)) the correctives of the joints' rotation entries or None.
    """

    def __init__(self, model: HeadModel, joints: tuple[str, ...] = ("jaw",)):
        self.model = model
        self.joints = tuple(JOINT_NAMES.index(j) for j in joints)
        groups = (ROOT, *self.joints)
        self.w = model.lbs_weights.astype(np.float64)[:, list(self.joints)].T.copy()  # (G - 1, V)
        self.v_template = model.v_template.astype(np.float64)
        self.dirs = np.concatenate([model.shapedirs, model.exprdirs], axis=-1, dtype=np.float64)  # (V, 3, Z)
        jr = np.asarray(model.j_regressor, dtype=np.float64)[list(groups)]
        used = np.flatnonzero(np.any(jr != 0, axis=0))
        self.j0 = jr[:, used] @ self.v_template[used]  # (G, 3)
        self.JZ = np.einsum("jv,vdz->jdz", jr[:, used], self.dirs[used])  # (G, 3, Z)
        pd = model.posedirs
        self.posedirs = None
        if pd is not None and pd.size and np.any(pd):
            self.posedirs = np.concatenate([pd[..., 9 * (j - 1): 9 * j] for j in self.joints], -1).astype(np.float64)

    def vertices(self, z: np.ndarray, R0: np.ndarray, Rg: np.ndarray) -> np.ndarray:
        """All posed vertices (V, 3) for z (Z,), the root rotation R0 (3, 3) and the joints' Rg (G - 1, 3, 3)."""
        u = self.v_template + (self.dirs.reshape(-1, self.dirs.shape[-1]) @ z).reshape(-1, 3)
        return _posed(u, self.w, self.posedirs, self.j0 + self.JZ @ z, R0, Rg)[0]


def _posed(u: np.ndarray, cg: np.ndarray, posedirs: np.ndarray | None, J: np.ndarray, R0: np.ndarray,
           Rg: np.ndarray):
    """Posed vertices (k, 3) of rest positions u (k, 3) with weights cg (G - 1, k) on the joints J[1:];
    also w, rq (see :func:`grouped_points`) and the weight sums c (G, k)."""
    if posedirs is not None:
        u = u + posedirs @ (Rg - np.eye(3)).reshape(-1)
    c = np.concatenate([1.0 - cg.sum(0)[None], cg])
    x, w, rq = grouped_points(c[:, :, None] * u[None], c, J, R0, Rg)
    return x, w, rq, c


class SkinPoints:
    """Points (n, 3) on the skinned mesh: barycentric blends of triangle corners (n, 3 vertex ids) with
    weights ``bary`` (n, 3). The vertices they use (``ids``, (k,)) and their data are gathered once, so
    every evaluation at new coefficients and rotations costs O(k Z)."""

    def __init__(self, skin: VertexSkin, corners: np.ndarray, bary: np.ndarray):
        from scipy.sparse import csr_matrix

        ids, inv = _used_vertices(np.asarray(corners).reshape(-1), len(skin.v_template))
        self.skin, self.ids, self.n = skin, ids, len(corners)
        self._rows = np.repeat(np.arange(self.n), 3)
        self._cols = inv
        self._vals = np.asarray(bary, np.float64).reshape(-1)
        # rows of 3 (corners) and 9 (corners x axes) entries in row order: CSR directly, no COO sort
        self.blend = csr_matrix((self._vals, self._cols, np.arange(0, 3 * self.n + 1, 3)), shape=(self.n, len(ids)))
        self._s_cols = (3 * self._cols[:, None] + np.arange(3)).reshape(-1)
        self._s_ptr = np.arange(0, 9 * self.n + 1, 9)
        self._dirs = skin.dirs[ids]  # (k, 3, Z)
        self._v0 = skin.v_template[ids]
        self._cg = skin.w[:, ids]
        self._pd = None if skin.posedirs is None else skin.posedirs[ids]

    def _vertices(self, z: np.ndarray, R0: np.ndarray, Rg: np.ndarray):
        u = self._v0 + (self._dirs.reshape(-1, self._dirs.shape[-1]) @ z).reshape(-1, 3)
        return _posed(u, self._cg, self._pd, self.skin.j0 + self.skin.JZ @ z, R0, Rg)

    def points(self, z: np.ndarray, R0: np.ndarray, Rg: np.ndarray) -> np.ndarray:
        """The points (n, 3) for z (Z,), root rotation R0 (3, 3) and the joints' rotations Rg (G - 1, 3, 3)."""
        return self.blend @ self._vertices(z, R0, Rg)[0]

    def _vertex_parts(self, z, R0, Rg):
        """Per vertex: x (k, 3), d_root (k, 3, 3), d_g (G - 1, k, 3, 3) and RM = R0 M (k, 3, 3) with M the
        blended rotation d y / d u, and the weight sums c (G, k)."""
        x, w, rq, c = self._vertices(z, R0, Rg)
        d_root, d_g = rotation_jacobians(w, rq, R0)
        I3 = np.eye(3)
        RM = R0 @ (I3 + np.einsum("gk,gab->kab", self._cg, Rg - I3))
        if self._pd is not None:  # the correctives move with each joint's rotation entries
            for g in range(len(Rg)):
                dR = np.stack([skew(e) @ Rg[g] for e in I3], axis=-1).reshape(9, 3)  # d vec(R_g) / d d
                d_g[g] += RM @ (self._pd[..., 9 * g: 9 * g + 9] @ dR)
        return x, d_root, d_g, RM, c

    def jacobian(self, z: np.ndarray, R0: np.ndarray, Rg: np.ndarray):
        """The points (n, 3) and their derivatives: d_root (n, 3, 3) for R0 <- exp(d) R0, d_g (G - 1, n, 3, 3)
        for Rg <- exp(d) Rg and d_z (n, 3, Z)."""
        x, d_root, d_g, RM, c = self._vertex_parts(z, R0, Rg)
        d_z = RM @ self._dirs + R0 @ joint_jacobian(c, self.skin.JZ, Rg) + self.skin.JZ[0][None]
        b = self.blend
        return (b @ x, _blend(b, d_root), np.stack([_blend(b, d) for d in d_g]), _blend(b, d_z))

    def projected(self, z: np.ndarray, R0: np.ndarray, Rg: np.ndarray, e: np.ndarray):
        """The points q (n, 3) and the derivatives of e_i . q_i for directions e (n, 3): by the root (n, 3),
        the joints (G - 1, n, 3) and z (n, Z). Only (n, Z) is formed: the blendshapes enter through one
        sparse product with the covectors e_i R0 M_v of each corner."""
        from scipy.sparse import csr_matrix

        x, d_root, d_g, RM, c = self._vertex_parts(z, R0, Rg)
        b = self.blend
        er = np.einsum("na,nab->nb", e, _blend(b, d_root))
        eg = np.stack([np.einsum("na,nab->nb", e, _blend(b, d)) for d in d_g])
        cov = self._vals[:, None] * np.einsum("na,nab->nb", e[self._rows], RM[self._cols])  # (3n, 3)
        k, Z = self._dirs.shape[0], self._dirs.shape[-1]
        S = csr_matrix((cov.reshape(-1), self._s_cols, self._s_ptr), shape=(self.n, 3 * k))
        d_z = S @ self._dirs.reshape(3 * k, Z)
        # the joints' share, per point: e R0 (-JZ_0 + sum_g C_g (I - R_g) JZ_g) + e JZ_0 with C = blended c
        JZ, I3 = self.skin.JZ, np.eye(3)
        C = (b @ c.T).T  # (G, n): C[0] + ... = the blend's row sums
        eR = e @ R0
        d_z += (C.sum(0)[:, None] * (e - eR)) @ JZ[0]
        for g in range(len(Rg)):
            d_z += (C[g + 1][:, None] * eR) @ ((I3 - Rg[g]) @ JZ[g + 1])
        return b @ x, er, eg, d_z


def _used_vertices(ids: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct vertex ids (k,) in ``ids`` (m,), ascending, and each entry's position among them (m,):
    ``np.unique(ids, return_inverse=True)`` by marking instead of sorting (O(V + m))."""
    used = np.zeros(n_vertices, bool)
    used[ids] = True
    distinct = np.flatnonzero(used)
    position = np.empty(n_vertices, np.intp)
    position[distinct] = np.arange(len(distinct))
    return distinct, position[ids]


def _blend(b, per_vertex: np.ndarray) -> np.ndarray:
    """Rows (k, ...) blended by the sparse (n, k) matrix b into (n, ...)."""
    k = per_vertex.shape[0]
    return (b @ per_vertex.reshape(k, -1)).reshape(b.shape[0], *per_vertex.shape[1:])
