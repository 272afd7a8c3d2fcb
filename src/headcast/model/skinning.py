"""The head (and its mouth interior) posed in numpy for one fixed identity: what :func:`headcast.model.lbs.lbs`
computes, without torch, for the many frames of an animation.

The identity beta is folded into the rest shape and the joints once, so each frame costs one expression
product (one BLAS call for a batch of frames), the joints' rotations and one skinning product. Model
frame, metres; float32 like the preview's :class:`headcast.model.layer.HeadLayer` (equal to it within
float32 rounding, ``tests/test_skinning.py``), or float64 for the synthetic ground truth (equal to the
float64 layer within 1e-12 m).
"""

from __future__ import annotations

import numpy as np

from headcast.core.camera import to_camera
from headcast.core.params import HeadParams
from headcast.model.head_model import HeadModel


def rodrigues(r: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Axis-angle (N, 3) radians -> rotation matrices (N, 3, 3), smooth at zero (as ``lbs.batch_rodrigues``)."""
    r = np.asarray(r, dtype=np.float64)
    angle = np.sqrt((r * r).sum(1, keepdims=True) + eps)
    x, y, z = (r / angle).T
    o = np.zeros_like(x)
    K = np.stack([o, -z, y, z, o, -x, -y, x, o], 1).reshape(-1, 3, 3)
    return np.eye(3) + np.sin(angle)[:, :, None] * K + (1 - np.cos(angle))[:, :, None] * (K @ K)


class _Part:
    """One mesh's per-vertex data with beta folded in: rest (V, 3), expression basis (3V, E), weights (V, J)."""

    def __init__(self, v_template, shapedirs, exprdirs, weights, beta: np.ndarray, n_expr: int, posedirs=None,
                 dtype: type = np.float32):
        S = min(len(beta), shapedirs.shape[2])
        self.rest = (v_template.astype(np.float64) + shapedirs[:, :, :S].astype(np.float64) @ beta[:S]).astype(dtype)
        V = len(self.rest)
        self.expr = np.ascontiguousarray(np.asarray(exprdirs[:, :, :n_expr], dtype=dtype).reshape(3 * V, -1))
        self.weights = np.ascontiguousarray(weights, dtype=dtype)
        self.posedirs = None if posedirs is None else \
            np.ascontiguousarray(np.asarray(posedirs, dtype=dtype).reshape(3 * V, -1))

    def pose(self, psi: np.ndarray, features: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """(B, V, 3) for psi (B, E), pose features (B, 9 (J - 1)) and skinning transforms rel (B, J, 3, 4)."""
        B, V = len(psi), len(self.rest)
        # einsum, not BLAS: as fast on one thread, and no BLAS thread pool at work when another thread
        # forks (OpenBLAS's fork handler can hang then; the preview's ffmpeg processes start from threads)
        offsets = np.einsum("nk,bk->nb", self.expr, psi)  # (3V, B)
        if self.posedirs is not None:
            offsets += np.einsum("nk,bk->nb", self.posedirs, features)
        v = self.rest[:, None] + offsets.reshape(V, 3, B).transpose(0, 2, 1)  # (V, B, 3)
        J = rel.shape[1]
        T = np.einsum("vj,jk->vk", self.weights, rel.transpose(1, 0, 2, 3).reshape(J, B * 12)).reshape(V, B, 3, 4)
        return (np.einsum("vbrc,vbc->vbr", T[..., :3], v) + T[..., 3]).transpose(1, 0, 2)


class FixedShape:
    """``model`` with identity ``beta`` (S,): :meth:`vertices` for batches of (theta, psi); with ``interior``
    (a :class:`headcast.model.interior.Interior`) its vertices follow the head's, posed by the head's joints.
    ``ids``: only these head vertices (default all). ``dtype``: of the posing and the vertices (float32,
    the previews'; float64, the synthetic ground truth's)."""

    def __init__(self, model: HeadModel, beta: np.ndarray, interior=None, ids: np.ndarray | None = None,
                 dtype: type = np.float32):
        beta = np.asarray(beta, dtype=np.float64)
        self.dtype = dtype
        self.n_expr = model.n_expr
        self.parents = np.asarray(model.parents, dtype=np.int64)
        jr = np.asarray(model.j_regressor, dtype=np.float64)
        used = np.flatnonzero(np.any(jr != 0, axis=0))
        jr = jr[:, used]
        S = min(len(beta), model.n_shape)
        self.j_rest = jr @ (model.v_template[used] + model.shapedirs[used][:, :, :S].astype(np.float64) @ beta[:S])
        self.j_expr = np.einsum("jv,vck->jck", jr, model.exprdirs[used].astype(np.float64))  # (J, 3, E)
        posedirs = model.posedirs if model.posedirs is not None and np.any(model.posedirs) else None
        rows = slice(None) if ids is None else np.asarray(ids)
        self.parts = [_Part(model.v_template[rows], model.shapedirs[rows], model.exprdirs[rows], model.lbs_weights[rows],
                            beta, model.n_expr, None if posedirs is None else posedirs[rows], dtype)]
        if interior is not None:
            self.parts.append(_Part(interior.v_template, interior.shapedirs, interior.exprdirs, interior.lbs_weights,
                                    beta, model.n_expr, dtype=dtype))

    def vertices(self, theta: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """Model-frame vertices (B, V + P, 3) (``dtype``) for theta (B, 3J) radians and psi (B, E): the head's V,
        then the interior's P (none without one)."""
        return self.posed(theta, psi)[0]

    def posed(self, theta: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`vertices` and the posed joints (B, J, 3) float64, model frame."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        psi = np.atleast_2d(np.asarray(psi, dtype=np.float64))[:, : self.n_expr]
        B, J = len(theta), len(self.parents)
        R = rodrigues(theta.reshape(-1, 3)).reshape(B, J, 3, 3)
        joints = self.j_rest[None] + np.einsum("jck,bk->bjc", self.j_expr, psi)  # (B, J, 3)
        world = _world_transforms(R, joints, self.parents)
        rel = _skinning_transforms(world, joints).astype(self.dtype)
        features = (R[:, 1:] - np.eye(3)).reshape(B, -1).astype(self.dtype)
        psi_d = psi.astype(self.dtype)
        verts = np.concatenate([p.pose(psi_d, features, rel) for p in self.parts], axis=1)
        return verts, world[:, :, :3, 3].copy()


def camera_vertices(model: HeadModel, params: HeadParams) -> np.ndarray:
    """Camera-frame vertices (V, 3) float64 metres of ``params`` on ``model`` (every joint posed): what
    ``params.vertices(HeadLayer(model))`` gives, without torch."""
    v = FixedShape(model, params.beta).vertices(params.theta, params.psi)[0].astype(np.float64)
    return to_camera(v, params.scale, params.translation)


def _world_transforms(R: np.ndarray, joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Forward kinematics: local rotations R (B, J, 3, 3), rest joints (B, J, 3), parents (J,) (parents
    first) -> each joint's world transform (B, J, 4, 4) (``lbs.batch_rigid_transform``'s chain; its
    translation column is the posed joint)."""
    B, J = joints.shape[:2]
    rel_joints = joints.copy()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    local = np.zeros((B, J, 4, 4))
    local[:, :, :3, :3] = R
    local[:, :, :3, 3] = rel_joints
    local[:, :, 3, 3] = 1.0
    world = [local[:, 0]]
    for i in range(1, J):
        world.append(world[parents[i]] @ local[:, i])
    return np.stack(world, 1)


def _skinning_transforms(W: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """World transforms W (B, J, 4, 4) of the rest joints (B, J, 3) -> (B, J, 3, 4) transforms taking
    rest-pose points to posed points."""
    out = W[:, :, :3, :].copy()
    out[:, :, :, 3] -= np.einsum("bjrc,bjc->bjr", W[:, :, :3, :3], joints)
    return out
