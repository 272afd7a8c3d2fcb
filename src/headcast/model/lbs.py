"""Functional core of the FLAME-format head: blendshapes, linear blend skinning, landmarks.

Pure, batched, differentiable PyTorch functions. B is the batch size, V
vertices, J joints, K blendshape components, L landmarks. Rotations are
axis-angle vectors in radians; lengths are metres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from headcast.model.head_model import DYN_YAW_MAX_DEG


def batch_rodrigues(rot_vecs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3); smooth at zero angle."""
    angle = torch.sqrt((rot_vecs * rot_vecs).sum(dim=1, keepdim=True) + eps)  # (N, 1)
    axis = rot_vecs / angle
    cos = torch.cos(angle).unsqueeze(-1)
    sin = torch.sin(angle).unsqueeze(-1)
    rx, ry, rz = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(rx)
    K = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device).unsqueeze(0)
    return eye + sin * K + (1 - cos) * torch.bmm(K, K)


def blend_shapes(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Linear blendshape offsets: coeffs (B, K), dirs (V, 3, K) -> (B, V, 3)."""
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def batch_rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor):
    """Forward kinematics.

    Args:
        rot_mats: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest-pose joint locations.
        parents: (J,) parent indices, parents[0] == -1, parents before children.

    Returns:
        posed_joints (B, J, 3) and relative transforms (B, J, 4, 4) that map rest-pose
        points to posed points for skinning.
    """
    B, J = joints.shape[:2]
    rel_joints = joints.clone()
    rel_joints[:, 1:] = rel_joints[:, 1:] - joints[:, parents[1:]]
    top = torch.cat([rot_mats, rel_joints.unsqueeze(-1)], dim=-1)  # (B, J, 3, 4)
    bottom = torch.tensor([0, 0, 0, 1], dtype=joints.dtype, device=joints.device).expand(B, J, 1, 4)
    local = torch.cat([top, bottom], dim=-2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, J):
        chain.append(chain[int(parents[i])] @ local[:, i])
    world = torch.stack(chain, dim=1)
    posed_joints = world[:, :, :3, 3]
    rest = F.pad(joints.unsqueeze(-1), (0, 0, 0, 1))  # (B, J, 4, 1), homogeneous 0
    rel = world - F.pad(world @ rest, (3, 0))
    return posed_joints, rel


def lbs(
    betas: torch.Tensor,
    expr: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    exprdirs: torch.Tensor,
    posedirs: torch.Tensor | None,
    j_template: torch.Tensor,
    j_shapedirs: torch.Tensor,
    j_exprdirs: torch.Tensor,
    parents: torch.Tensor,
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and expression blendshapes, pose correctives and linear blend skinning.

    Joints are linear in beta and psi, so they come from the pre-regressed
    ``j_template`` (J, 3), ``j_shapedirs`` (J, 3, S) and ``j_exprdirs`` (J, 3, E);
    this lets the same function run on any subset of vertices (the landmark fast path).

    Args:
        betas: (B, S) identity coefficients.
        expr: (B, E) expression coefficients.
        pose: (B, J * 3) axis-angle per joint.
        v_template, shapedirs, exprdirs, posedirs, lbs_weights: per-vertex data, any subset of rows;
            ``posedirs`` may be None when the model has no pose correctives.

    Returns:
        vertices (B, V, 3) and posed joints (B, J, 3).
    """
    B = betas.shape[0]
    J = parents.shape[0]
    v_shaped = v_template + blend_shapes(betas, shapedirs) + blend_shapes(expr, exprdirs)
    joints = j_template + blend_shapes(betas, j_shapedirs) + blend_shapes(expr, j_exprdirs)
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).view(B, J, 3, 3)
    if posedirs is not None:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)  # (B, 9 * (J - 1))
        v_shaped = v_shaped + blend_shapes(pose_feature, posedirs)
    posed_joints, rel = batch_rigid_transform(rot_mats, joints, parents)
    T = torch.einsum("vj,bjrc->bvrc", lbs_weights, rel[:, :, :3, :])  # (B, V, 3, 4)
    verts = torch.einsum("bvrc,bvc->bvr", T[..., :3], v_shaped) + T[..., 3]
    return verts, posed_joints


def vertices2landmarks(
    vertices: torch.Tensor, faces: torch.Tensor, lmk_faces: torch.Tensor, lmk_bary: torch.Tensor
) -> torch.Tensor:
    """Barycentric landmarks.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) triangles.
        lmk_faces: (B, L) or (L,) triangle index per landmark.
        lmk_bary: (B, L, 3) or (L, 3) barycentric coordinates.

    Returns:
        (B, L, 3) landmark positions.
    """
    B = vertices.shape[0]
    if lmk_faces.dim() == 1:
        lmk_faces = lmk_faces.unsqueeze(0).expand(B, -1)
        lmk_bary = lmk_bary.unsqueeze(0).expand(B, -1, -1)
    tri = faces[lmk_faces]  # (B, L, 3) vertex ids
    batch = torch.arange(B, device=vertices.device).view(B, 1, 1)
    corners = vertices[batch, tri]  # (B, L, 3, 3)
    return torch.einsum("blk,blkc->blc", lmk_bary, corners)


def head_yaw_degrees(pose: torch.Tensor) -> torch.Tensor:
    """Yaw (B,) in degrees of the head (root then neck rotation) from a (B, J * 3) pose.

    Positive yaw turns the face towards the model's +x side (its left).
    """
    B = pose.shape[0]
    rots = batch_rodrigues(pose[:, :6].reshape(-1, 3)).view(B, 2, 3, 3)
    R = rots[:, 0] @ rots[:, 1]
    return torch.rad2deg(torch.atan2(-R[:, 2, 0], torch.sqrt(R[:, 0, 0] ** 2 + R[:, 1, 0] ** 2) + 1e-12))


def dynamic_contour(
    pose: torch.Tensor, dyn_lmk_faces: torch.Tensor, dyn_lmk_bary: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contour triangles (B, 17) and barycentrics (B, 17, 3) chosen by head yaw.

    ``dyn_lmk_*`` rows are yaw -39..39 degrees; yaw outside is clamped.
    """
    yaw = head_yaw_degrees(pose.detach())
    row = (torch.round(yaw).clamp(-DYN_YAW_MAX_DEG, DYN_YAW_MAX_DEG) + DYN_YAW_MAX_DEG).long()
    return dyn_lmk_faces[row], dyn_lmk_bary[row]
