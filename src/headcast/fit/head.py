"""The head model evaluated on the fit's packed parameter vector, in the camera frame, with its Jacobian."""

from __future__ import annotations

import numpy as np
import torch

from headcast.core.camera import FLIP, to_camera, to_camera_torch
from headcast.core.params import N_POSE, HeadParams, pose_slice
from headcast.core.rigid import similarity_fit
from headcast.fit.packing import FITTED_JOINTS, Packing, layout
from headcast.model import lbs
from headcast.model.layer import HeadLayer


def _with_tangents(f, y: torch.Tensor, h: float = 1e-20) -> tuple[torch.Tensor, torch.Tensor]:
    """f(y) and its Jacobian (f's shape + (len(y),)) for a batched analytic f ((B, n) -> (B, ...)).

    Complex-step differentiation: Im f(y + i h e_k) / h is df/dy_k with an error of order h^2 relative,
    i.e. exact in float64 for h = 1e-20 (no difference is taken, so nothing cancels); all len(y)
    directions go through f as one batch. f must be built from analytic operations (products, sums,
    sin, cos, sqrt, division), as rotations and forward kinematics are.
    """
    n = len(y)
    Y = y.detach().to(torch.complex128).repeat(n + 1, 1)
    Y[1:] += 1j * h * torch.eye(n, dtype=torch.float64)
    out = f(Y)
    return out[0].real.to(y.dtype), (out[1:].imag / h).to(y.dtype).movedim(0, -1)


class SurfaceMap:
    """Points on the mesh as barycentric blends of triangle corners (n, 3 vertex ids) with weights
    ``bary`` (n, 3): the vertices they use (``ids``, (k,)) and the sparse (n, k) blend, built once per set
    of correspondences and reused by every evaluation at a new x."""

    def __init__(self, corners: np.ndarray, bary: np.ndarray):
        from scipy.sparse import csr_matrix

        ids, inv = np.unique(corners, return_inverse=True)
        self.n = len(corners)
        self.ids = torch.as_tensor(ids)
        rows = np.repeat(np.arange(self.n), 3)
        self._blend = csr_matrix((np.asarray(bary, np.float64).reshape(-1), (rows, inv.reshape(-1))),
                                 shape=(self.n, len(ids)))

    def blend(self, per_vertex: torch.Tensor) -> torch.Tensor:
        """Rows (k, ...) of the vertices ``ids`` blended into the points' rows (n, ...)."""
        k = per_vertex.shape[0]
        out = self._blend @ per_vertex.detach().reshape(k, -1).numpy()
        return torch.from_numpy(out).reshape(self.n, *per_vertex.shape[1:])


class PackedHead:
    """A float64 :class:`HeadLayer` of the model named ``model_name``, evaluated on vectors packed by
    ``self.pk`` (:class:`Packing`). Points are camera-frame metres."""

    def __init__(self, layer: HeadLayer, model_name: str):
        self.layer = layer
        self.model_name = model_name
        self.pk = Packing(layer.n_shape, layer.n_expr)

    def landmarks_cam(self, x: torch.Tensor) -> torch.Tensor:
        """The 68 landmarks (68, 3) at ``x``."""
        beta, psi, theta, s, t = self.pk.split(x)
        return to_camera_torch(self.layer.landmarks(beta, psi, theta)[0], s, t)

    def vertices_cam(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices ``ids`` (k, 3) (all when None) at ``x``."""
        beta, psi, theta, s, t = self.pk.split(x)
        return to_camera_torch(self.layer.vertices(beta, psi, theta, ids)[0], s, t)

    def vertices_jacobian(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices ``ids`` (k, 3) and their Jacobian (k, 3, P) for the packed vector x (P,).

        Skinning is V = s FLIP sum_j w_vj G_j [v_shaped; 1] + t with G_j (3, 4) the joints' relative
        transforms, which depend only on y = [rest joints | root 3 | jaw 3] (15 + 6 numbers for 5 joints).
        So dG/dy (J, 3, 4, |y|) comes from a complex-step derivative of that small function (one batch),
        and every vertex's derivative is a blend of it: no differentiation over the k vertices.
        Shaped vertices and rest joints are linear in beta and psi: dV/d(beta, psi) = s FLIP M_v @ dirs
        + dV/dJ @ joint dirs, with M_v the blended skinning rotation of each vertex.
        """
        L, sl = self.layer, self.pk.sl
        beta, psi = x[sl["beta"]][None], x[sl["psi"]][None]
        sd, ed = L.shapedirs[ids], L.exprdirs[ids]
        v_shaped = L.v_template[ids] + lbs.blend_shapes(beta, sd)[0] + lbs.blend_shapes(psi, ed)[0]
        joints = L.j_template + lbs.blend_shapes(beta, L.j_shapedirs)[0] + lbs.blend_shapes(psi, L.j_exprdirs)[0]
        nj = joints.numel()
        ys, ny = layout((("joints", nj),) + tuple((joint, 3) for joint in FITTED_JOINTS))
        y = torch.cat([joints.reshape(-1)] + [x[sl[joint]] for joint in FITTED_JOINTS])
        G, dG = _with_tangents(lambda yy: self._relative_transforms(yy, ys), y)  # (J, 3, 4), (J, 3, 4, ny)
        weights = L.lbs_weights[ids]
        vh = torch.cat([v_shaped, torch.ones_like(v_shaped[:, :1])], 1)  # (k, 4)
        T = torch.einsum("vj,jrc->vrc", weights, G)  # (k, 3, 4)
        posed = torch.einsum("vrc,vc->vr", T, vh)
        dT = (weights @ dG.reshape(G.shape[0], -1)).reshape(-1, 3, 4, ny)
        dposed = torch.einsum("vrcy,vc->vry", dT, vh)  # (k, 3, ny)
        s, t, origin = torch.exp(x[sl["log_s"]]), x[sl["t"]], torch.zeros(3, dtype=x.dtype)
        V = to_camera_torch(posed, s, t)
        to_cam = lambda a: to_camera_torch(a.transpose(1, 2), s, origin).transpose(1, 2)  # noqa: E731  s FLIP a
        Jy = to_cam(dposed)  # (k, 3, ny)
        M = to_cam(T[..., :3])  # (k, 3, 3)
        parts = {joint: Jy[..., ys[joint]] for joint in FITTED_JOINTS}
        for name, dirs, joint_dirs in (("beta", sd, L.j_shapedirs), ("psi", ed, L.j_exprdirs)):
            parts[name] = torch.baddbmm(Jy[..., ys["joints"]] @ joint_dirs.reshape(nj, -1), M, dirs)
        parts["log_s"] = (V - t)[..., None]
        parts["t"] = torch.eye(3, dtype=x.dtype).expand(V.shape[0], 3, 3)
        jac = torch.cat([parts[name] for name in sorted(sl, key=lambda n: sl[n].start)], dim=2)
        return V, jac

    def _relative_transforms(self, y: torch.Tensor, ys: dict[str, slice]) -> torch.Tensor:
        """y (B, n) = [rest joints | root 3 | jaw 3] -> the joints' skinning transforms (B, J, 3, 4)."""
        L, B = self.layer, y.shape[0]
        theta = torch.zeros(B, N_POSE, dtype=y.dtype)
        for joint in FITTED_JOINTS:
            theta[:, pose_slice(joint)] = y[:, ys[joint]]
        rot = lbs.batch_rodrigues(theta.reshape(-1, 3)).view(B, -1, 3, 3)
        _, rel = lbs.batch_rigid_transform(rot, y[:, ys["joints"]].reshape(B, -1, 3), L.parents)
        return rel[:, :, :3, :]

    def surface_points(self, x: torch.Tensor, where: SurfaceMap, with_jac: bool):
        """The points (n, 3) ``where`` places on the mesh at x, and their (n, 3, P) Jacobian (None unless
        ``with_jac``)."""
        if not with_jac:
            return where.blend(self.vertices_cam(x, where.ids)), None
        V, J = self.vertices_jacobian(x, where.ids)
        return where.blend(V), where.blend(J)

    def template_landmarks(self) -> np.ndarray:
        """The neutral head's 68 landmarks (68, 3), model frame, float64."""
        with torch.no_grad():
            z = self.layer.zeros(1)
            return self.layer.landmarks(z["beta"], z["psi"], z["theta"])[0].double().numpy()

    def init_similarity(self, target: np.ndarray, idx: np.ndarray) -> HeadParams:
        """Closed-form similarity (Umeyama) from the template landmarks ``idx`` to the 3D targets (n, 3)."""
        s, Ru, t_u = similarity_fit(self.template_landmarks()[idx], target)
        return self.params_from_camera_rotation(Ru, s, t_u)

    def params_from_camera_rotation(self, Ru: np.ndarray, s: float, t_u: np.ndarray) -> HeadParams:
        """Neutral parameters placing the head at X_cam = s Ru v + t_u: the root rotation about joint 0
        and the translation."""
        from scipy.spatial.transform import Rotation

        R = FLIP.astype(np.float64) @ Ru  # the rotation in model axes (FLIP is its own inverse)
        j0 = self.layer.j_template[0].double().numpy()
        t = t_u - to_camera(j0 - R @ j0, s, np.zeros(3))  # the root turns about j0, not the model origin
        p = HeadParams.neutral(self.layer, self.model_name)
        p.theta[pose_slice("root")] = Rotation.from_matrix(R).as_rotvec()
        p.scale, p.translation = s, t
        return p
