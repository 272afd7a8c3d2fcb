"""The head model evaluated on the fit's packed parameter vector, in the camera frame, with its Jacobian."""

from __future__ import annotations

import numpy as np
import torch

from headcast.core.camera import FLIP, to_camera, to_camera_torch
from headcast.core.params import HeadParams, pose_slice
from headcast.core.rigid import similarity_fit
from headcast.fit.packing import Packing, layout, pose_vector
from headcast.model import lbs
from headcast.model.layer import HeadLayer


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

        Shaped vertices and rest joints are linear in beta and psi, and skinning is linear in both
        for a fixed pose, so dV/d(beta, psi) = s FLIP M_v @ dirs + dV/dJ @ joint dirs, with M_v the
        blended skinning rotation of each vertex; only the pose, placement and rest-joint directions
        (25 for 5 joints) need forward-mode autodiff instead of all P parameters.
        """
        L, sl = self.layer, self.pk.sl
        beta, psi = x[sl["beta"]][None], x[sl["psi"]][None]
        sd, ed = L.shapedirs[ids], L.exprdirs[ids]
        v_shaped = L.v_template[ids] + lbs.blend_shapes(beta, sd)[0] + lbs.blend_shapes(psi, ed)[0]
        joints = L.j_template + lbs.blend_shapes(beta, L.j_shapedirs)[0] + lbs.blend_shapes(psi, L.j_exprdirs)[0]
        nj = joints.numel()
        zs, _ = layout((("joints", nj), ("root", 3), ("jaw", 3), ("log_s", 1), ("t", 3)))
        weights = L.lbs_weights[ids]

        def pose_map(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """z = [rest joints | root 3 | jaw 3 | log s | t 3] -> camera vertices (k, 3) and skinning T (k, 3, 4)."""
            theta = pose_vector({"root": z[zs["root"]], "jaw": z[zs["jaw"]]}, z)
            rot = lbs.batch_rodrigues(theta.view(-1, 3)).unsqueeze(0)
            _, rel = lbs.batch_rigid_transform(rot, z[zs["joints"]].view(1, -1, 3), L.parents)
            T = torch.einsum("vj,jrc->vrc", weights, rel[0, :, :3, :])
            v = torch.einsum("vrc,vc->vr", T[..., :3], v_shaped) + T[..., 3]
            return to_camera_torch(v, torch.exp(z[zs["log_s"]]), z[zs["t"]]), T

        z = torch.cat([joints.reshape(-1)] + [x[sl[name]] for name in ("root", "jaw", "log_s", "t")])
        V, T = pose_map(z)
        Jz = torch.func.jacfwd(lambda zz: pose_map(zz)[0])(z)  # (k, 3, nj + 10)
        s, origin = torch.exp(x[sl["log_s"]]), torch.zeros(3, dtype=x.dtype)
        jac = torch.zeros(V.shape[0], 3, self.pk.size, dtype=x.dtype)
        # s FLIP M_v: the placement's linear part applied to the columns of each vertex's skinning rotation
        M = to_camera_torch(T[..., :3].transpose(1, 2), s, origin).transpose(1, 2)  # (k, 3, 3)
        for name, dirs, joint_dirs in (("beta", sd, L.j_shapedirs), ("psi", ed, L.j_exprdirs)):
            jac[..., sl[name]] = torch.einsum("vab,vbk->vak", M, dirs) + Jz[..., zs["joints"]] @ joint_dirs.reshape(nj, -1)
        for name in ("root", "jaw", "log_s", "t"):
            jac[..., sl[name]] = Jz[..., zs[name]]
        return V, jac

    def surface_points(self, x: torch.Tensor, corners: np.ndarray, bary: np.ndarray, with_jac: bool):
        """Points (n, 3) = bary-weighted triangle corners (n, 3 vertex ids) at x, and their (n, 3, P)
        Jacobian (None unless ``with_jac``)."""
        ids, inv = np.unique(corners, return_inverse=True)
        ids_t, inv_t = torch.as_tensor(ids), torch.as_tensor(inv.reshape(-1, 3))
        b = torch.as_tensor(bary, dtype=torch.float64)
        if not with_jac:
            V = self.vertices_cam(x, ids_t)
            return torch.einsum("nk,nkc->nc", b, V[inv_t]), None
        V, J = self.vertices_jacobian(x, ids_t)
        return torch.einsum("nk,nkc->nc", b, V[inv_t]), torch.einsum("nk,nkcp->ncp", b, J[inv_t])

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
