"""The head model evaluated on the fit's packed parameter vector, in the camera frame, with its Jacobian.

NumPy float64 throughout: the vertices, points on the mesh and their exact Jacobians come from the closed
form of :mod:`headcast.model.skin` (root and jaw rotations, every beta and psi).
"""

from __future__ import annotations

import numpy as np

from headcast.core.camera import FLIP, to_camera
from headcast.core.params import HeadParams, pose_slice
from headcast.core.rigid import similarity_fit
from headcast.fit.packing import FITTED_JOINTS, Packing
from headcast.model.head_model import HeadModel
from headcast.model.rig import PointSet, left_jacobian, matrix_to_rotvec, rotvec_to_matrix, yaw_degrees
from headcast.model.skin import SkinPoints, VertexSkin

_FLIP = FLIP.astype(np.float64)


class PackedHead:
    """The head model ``model`` (registered as ``model_name``) evaluated on vectors packed by ``self.pk``
    (:class:`Packing`). Points are camera-frame metres, float64."""

    def __init__(self, model: HeadModel, model_name: str):
        self.model = model
        self.model_name = model_name
        self.n_shape, self.n_expr = model.n_shape, model.n_expr
        self.pk = Packing(model.n_shape, model.n_expr)
        self.skin = VertexSkin(model, FITTED_JOINTS[1:])
        self._landmark_points = PointSet.from_model(model)
        self._mesh: tuple | None = None  # (x bytes, vertices (V, 3), MeshScene or None): the last mesh
        self._found: tuple | None = None  # (points, vertices then, (tri, bary, dist)): the last answer
        self._order: tuple | None = None  # (points, the order they are queried in)

    def closest(self, x: np.ndarray, pts: np.ndarray) -> tuple[tuple, np.ndarray]:
        """The closest points of ``pts`` (n, 3) on the mesh at x: (triangle (n,), barycentric weights (n, 3),
        distance (n,)), and the mesh's camera-frame vertices (V, 3).

        One Open3D scene per mesh, and the last answer, kept for further queries at the same x (a block's
        report and the next block's first step query the same mesh).
        """
        from headcast.core.scene import MeshScene

        v = self.mesh_vertices(x)
        key = self._mesh[0]
        f = self._found
        if f is not None and f[0] is pts and f[1] is v:
            return f[2], v
        if self._mesh[2] is None:
            self._mesh = (key, v, MeshScene([(v, self.model.faces)]))
        order = self._query_order(pts)
        found = self._mesh[2].closest(pts[order])
        tri, bary, dist = (_unsort(a, order) for a in (found[0], found[1], found[3]))
        self._found = (pts, v, (tri, bary, dist))
        return self._found[2], v

    def _query_order(self, pts: np.ndarray) -> np.ndarray:
        """An order of the points (n, 3) in which neighbours follow each other (2 mm rows of camera y, then x),
        kept for the point set: Open3D answers each point on its own, with about 15 % less CPU in this order
        than in the fit's random one."""
        if self._order is None or self._order[0] is not pts:
            self._order = (pts, np.lexsort((pts[:, 0], np.floor(pts[:, 1] / 0.002))))
        return self._order[1]

    def mesh_vertices(self, x: np.ndarray) -> np.ndarray:
        """The mesh's camera-frame vertices (V, 3) at x, kept with the last mesh (:meth:`closest`)."""
        key = x.tobytes()
        if self._mesh is None or self._mesh[0] != key:
            self._mesh = (key, self.vertices_cam(x), None)
        return self._mesh[1]

    def _pose(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        """z = [beta | psi] (Z,), the root rotation (3, 3), the other joints' (G - 1, 3, 3), s and t of x."""
        sl = self.pk.sl
        z = np.concatenate([x[sl["beta"]], x[sl["psi"]]])
        R0 = rotvec_to_matrix(x[sl[FITTED_JOINTS[0]]])
        Rg = np.stack([rotvec_to_matrix(x[sl[j]]) for j in FITTED_JOINTS[1:]])
        return z, R0, Rg, float(np.exp(x[sl["log_s"]][0])), x[sl["t"]]

    def surface_map(self, corners: np.ndarray, bary: np.ndarray) -> SkinPoints:
        """Points on the mesh: barycentric blends of triangle corners (n, 3 vertex ids), weights (n, 3)."""
        return SkinPoints(self.skin, corners, bary)

    def vertices_cam(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Vertices ``ids`` (k, 3) (all when None) at ``x``."""
        z, R0, Rg, s, t = self._pose(x)
        if ids is None:
            return to_camera(self.skin.vertices(z, R0, Rg), s, t)
        return to_camera(self._vertex_map(ids).points(z, R0, Rg), s, t)

    def _vertex_map(self, ids: np.ndarray) -> SkinPoints:
        ids = np.asarray(ids)
        return SkinPoints(self.skin, np.repeat(ids[:, None], 3, 1), np.tile([1.0, 0.0, 0.0], (len(ids), 1)))

    def vertices_of(self, p: HeadParams) -> np.ndarray:
        """Camera-frame vertices (V, 3) of parameters ``p`` (joints outside FITTED_JOINTS at rest)."""
        return self.vertices_cam(self.pk.pack(p))

    def vertices_jacobian(self, x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertices ``ids`` (k, 3) and their Jacobian (k, 3, P) for the packed vector x (P,)."""
        return self.surface_points(x, self._vertex_map(ids), True)

    def surface_points(self, x: np.ndarray, where: SkinPoints, with_jac: bool):
        """The points (n, 3) ``where`` places on the mesh at x, and their (n, 3, P) Jacobian (None unless
        ``with_jac``).

        Q = s FLIP X + t with X the skinned model-frame points: the rotations' columns are the
        left-perturbation derivatives times SO(3)'s left Jacobian at each axis-angle, beta and psi's are
        the closed form's d_z, log s's is Q - t and t's the identity.
        """
        z, R0, Rg, s, t = self._pose(x)
        if not with_jac:
            return to_camera(where.points(z, R0, Rg), s, t), None
        X, d_root, d_g, d_z = where.jacobian(z, R0, Rg)
        Q = to_camera(X, s, t)
        return Q, self._assemble(x, s * _FLIP @ d_root, [s * _FLIP @ d for d in d_g], s * _FLIP @ d_z, Q - t,
                                 np.broadcast_to(np.eye(3), (len(Q), 3, 3)))

    def surface_points_along(self, x: np.ndarray, where: SkinPoints, e: np.ndarray, with_jac: bool):
        """The points (n, 3) at x and, with ``with_jac``, the Jacobian (n, P) of e_i . q_i for camera-frame
        directions e (n, 3) (the point-to-plane residuals' rows, without forming (n, 3, P))."""
        z, R0, Rg, s, t = self._pose(x)
        if not with_jac:
            return to_camera(where.points(z, R0, Rg), s, t), None
        X, er, eg, d_z = where.projected(z, R0, Rg, s * e @ _FLIP)
        Q = to_camera(X, s, t)
        return Q, self._assemble(x, er, list(eg), d_z, ((Q - t) * e).sum(1), e)

    def _assemble(self, x: np.ndarray, d_root, d_g, d_z, d_log_s, d_t) -> np.ndarray:
        """The packed Jacobian (..., P) from its parts (..., 3) / (..., Z) / (...) by rotation
        (left perturbations), coefficients, log s and t."""
        sl = self.pk.sl
        jac = np.empty(d_z.shape[:-1] + (self.pk.size,))
        jac[..., sl[FITTED_JOINTS[0]]] = d_root @ left_jacobian(x[sl[FITTED_JOINTS[0]]])
        for joint, d in zip(FITTED_JOINTS[1:], d_g):
            jac[..., sl[joint]] = d @ left_jacobian(x[sl[joint]])
        jac[..., sl["beta"]] = d_z[..., : self.n_shape]
        jac[..., sl["psi"]] = d_z[..., self.n_shape:]
        jac[..., sl["log_s"]] = d_log_s[..., None]
        jac[..., sl["t"]] = d_t
        return jac

    def landmark_map(self, x: np.ndarray) -> SkinPoints:
        """The 68 landmarks as :class:`SkinPoints`, the contour chosen by the head's yaw at x (the
        model's dynamic contour; the static one when it has none)."""
        pts = self._landmark_points
        rows = pts.rows_for(yaw_degrees(rotvec_to_matrix(x[self.pk.sl["root"]])), pupils=False)
        return self.surface_map(pts.vids[rows], pts.bary[rows])

    def landmarks_cam(self, x: np.ndarray) -> np.ndarray:
        """The 68 landmarks (68, 3) at ``x``."""
        return self.surface_points(x, self.landmark_map(x), False)[0]

    def template_landmarks(self) -> np.ndarray:
        """The neutral head's 68 landmarks (68, 3), model frame, float64."""
        x = self.pk.pack(HeadParams.neutral(self, self.model_name))
        return to_camera(self.landmarks_cam(x), 1.0, np.zeros(3))  # FLIP is its own inverse

    def init_similarity(self, target: np.ndarray, idx: np.ndarray) -> HeadParams:
        """Closed-form similarity (Umeyama) from the template landmarks ``idx`` to the 3D targets (n, 3)."""
        s, Ru, t_u = similarity_fit(self.template_landmarks()[idx], target)
        return self.params_from_camera_rotation(Ru, s, t_u)

    def params_from_camera_rotation(self, Ru: np.ndarray, s: float, t_u: np.ndarray) -> HeadParams:
        """Neutral parameters placing the head at X_cam = s Ru v + t_u: the root rotation about joint 0
        and the translation."""
        R = _FLIP @ Ru  # the rotation in model axes (FLIP is its own inverse)
        j0 = self.skin.j0[0]
        t = t_u - to_camera(j0 - R @ j0, s, np.zeros(3))  # the root turns about j0, not the model origin
        p = HeadParams.neutral(self, self.model_name)
        p.theta[pose_slice("root")] = matrix_to_rotvec(R)
        p.scale, p.translation = s, t
        return p


def _unsort(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The rows of ``a`` (answers for the points taken in ``order``) back in the points' own order."""
    out = np.empty_like(a)
    out[order] = a
    return out
