"""The head model evaluated on the fit's packed parameter vector, in the camera frame, with its Jacobian.

NumPy float64 throughout: the vertices and their exact Jacobian come from the closed form of
:class:`headcast.model.rig.VertexSkin` (root and jaw rotations, every beta and psi).
"""

from __future__ import annotations

import numpy as np

from headcast.core.camera import FLIP, to_camera
from headcast.core.params import HeadParams, pose_slice
from headcast.core.rigid import similarity_fit
from headcast.fit.packing import FITTED_JOINTS, Packing
from headcast.model.head_model import HeadModel
from headcast.model.rig import PointSet, VertexSkin, left_jacobian, matrix_to_rotvec, rotvec_to_matrix, yaw_degrees

_FLIP = FLIP.astype(np.float64)


class SurfaceMap:
    """Points on the mesh as barycentric blends of triangle corners (n, 3 vertex ids) with weights
    ``bary`` (n, 3): the vertices they use (``ids``, (k,)) and the sparse (n, k) blend, built once per set
    of correspondences and reused by every evaluation at a new x."""

    def __init__(self, corners: np.ndarray, bary: np.ndarray):
        from scipy.sparse import csr_matrix

        ids, inv = np.unique(corners, return_inverse=True)
        self.n = len(corners)
        self.ids = ids
        rows = np.repeat(np.arange(self.n), 3)
        self._blend = csr_matrix((np.asarray(bary, np.float64).reshape(-1), (rows, inv.reshape(-1))),
                                 shape=(self.n, len(ids)))

    def blend(self, per_vertex: np.ndarray) -> np.ndarray:
        """Rows (k, ...) of the vertices ``ids`` blended into the points' rows (n, ...)."""
        k = per_vertex.shape[0]
        return (self._blend @ per_vertex.reshape(k, -1)).reshape(self.n, *per_vertex.shape[1:])


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

    def _pose(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        """z = [beta | psi] (Z,), the root rotation (3, 3), the other joints' (G - 1, 3, 3), s and t of x."""
        sl = self.pk.sl
        z = np.concatenate([x[sl["beta"]], x[sl["psi"]]])
        R0 = rotvec_to_matrix(x[sl[FITTED_JOINTS[0]]])
        Rg = np.stack([rotvec_to_matrix(x[sl[j]]) for j in FITTED_JOINTS[1:]])
        return z, R0, Rg, float(np.exp(x[sl["log_s"]][0])), x[sl["t"]]

    def vertices_cam(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Vertices ``ids`` (k, 3) (all when None) at ``x``."""
        z, R0, Rg, s, t = self._pose(x)
        return to_camera(self.skin.vertices(ids, z, R0, Rg), s, t)

    def vertices_of(self, p: HeadParams) -> np.ndarray:
        """Camera-frame vertices (V, 3) of parameters ``p`` (joints outside FITTED_JOINTS at rest)."""
        return self.vertices_cam(self.pk.pack(p))

    def vertices_jacobian(self, x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertices ``ids`` (k, 3) and their Jacobian (k, 3, P) for the packed vector x (P,).

        V = s FLIP X + t with X the skinned model-frame vertices: the rotations' columns are the
        left-perturbation derivatives times SO(3)'s left Jacobian at each axis-angle, beta and psi's are
        the closed form's d_z, log s's is V - t and t's the identity.
        """
        sl = self.pk.sl
        z, R0, Rg, s, t = self._pose(x)
        X, d_root, d_g, d_z = self.skin.vertices(ids, z, R0, Rg, jacobian=True)
        V = to_camera(X, s, t)
        sF = s * _FLIP
        parts = {FITTED_JOINTS[0]: d_root @ left_jacobian(x[sl[FITTED_JOINTS[0]]])}
        for g, joint in enumerate(FITTED_JOINTS[1:]):
            parts[joint] = d_g[g] @ left_jacobian(x[sl[joint]])
        nb = self.n_shape
        parts["beta"], parts["psi"] = d_z[..., :nb], d_z[..., nb:]
        jac = np.empty((len(V), 3, self.pk.size))
        for name, d in parts.items():
            jac[..., sl[name]] = sF @ d
        jac[..., sl["log_s"]] = (V - t)[..., None]
        jac[..., sl["t"]] = np.eye(3)
        return V, jac

    def surface_points(self, x: np.ndarray, where: SurfaceMap, with_jac: bool):
        """The points (n, 3) ``where`` places on the mesh at x, and their (n, 3, P) Jacobian (None unless
        ``with_jac``)."""
        if not with_jac:
            return where.blend(self.vertices_cam(x, where.ids)), None
        V, J = self.vertices_jacobian(x, where.ids)
        return where.blend(V), where.blend(J)

    def landmark_map(self, x: np.ndarray) -> SurfaceMap:
        """The 68 landmarks as a :class:`SurfaceMap`, the contour chosen by the head's yaw at x (the
        model's dynamic contour; the static one when it has none)."""
        pts = self._landmark_points
        rows = pts.rows_for(yaw_degrees(rotvec_to_matrix(x[self.pk.sl["root"]])), pupils=False)
        return SurfaceMap(pts.vids[rows], pts.bary[rows])

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
