"""HeadLayer: a HeadModel as a batched, differentiable torch module.

The parameters follow FLAME: ``beta`` (B, S) identity, ``psi`` (B, E) expression
and ``theta`` (B, 15) axis-angle pose ``[root | neck | jaw | left eye | right eye]``.
Outputs are in the model frame (metres, y up, face towards +z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from headcast.model import lbs as L
from headcast.model.head_model import N_CONTOUR, HeadModel


@dataclass
class HeadOutput:
    """Result of a forward pass: vertices (B, V, 3), joints (B, J, 3), landmarks (B, 68, 3)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor


class HeadLayer(nn.Module):
    """Torch module over a :class:`HeadModel`.

    Args:
        model: the head model.
        n_shape, n_expr: use only the first components (default: all).
        dtype: float32 (default) or float64.
    """

    def __init__(self, model: HeadModel, n_shape: int | None = None, n_expr: int | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.n_shape = model.n_shape if n_shape is None else min(n_shape, model.n_shape)
        self.n_expr = model.n_expr if n_expr is None else min(n_expr, model.n_expr)
        self.n_joints = model.n_joints
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        shapedirs = model.shapedirs[:, :, : self.n_shape]
        exprdirs = model.exprdirs[:, :, : self.n_expr]
        jr = model.j_regressor.astype(np.float64)
        self.register_buffer("v_template", t(model.v_template))
        self.register_buffer("shapedirs", t(shapedirs))
        self.register_buffer("exprdirs", t(exprdirs))
        self.has_posedirs = bool(np.any(model.posedirs))  # ICT has none: skip that term
        self.register_buffer("posedirs", t(model.posedirs) if self.has_posedirs else torch.zeros(0))
        self.register_buffer("lbs_weights", t(model.lbs_weights))
        self.register_buffer("j_template", t(jr @ model.v_template))
        self.register_buffer("j_shapedirs", t(np.einsum("jv,vck->jck", jr, shapedirs)))
        self.register_buffer("j_exprdirs", t(np.einsum("jv,vck->jck", jr, exprdirs)))
        self.register_buffer("parents", torch.as_tensor(model.parents, dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.long))
        self.register_buffer("lmk_faces", torch.as_tensor(model.lmk_faces, dtype=torch.long))
        self.register_buffer("lmk_bary", t(model.lmk_bary))
        self.dynamic = model.has_dynamic_contour
        if self.dynamic:
            self.register_buffer("dyn_lmk_faces", torch.as_tensor(model.dyn_lmk_faces, dtype=torch.long))
            self.register_buffer("dyn_lmk_bary", t(model.dyn_lmk_bary))
        self._build_fast_path(model)

    def _build_fast_path(self, model: HeadModel) -> None:
        """Index the vertices any landmark triangle touches, with faces remapped onto them."""
        tri_ids = [model.lmk_faces.ravel()]
        if self.dynamic:
            tri_ids.append(model.dyn_lmk_faces.ravel())
        used = np.unique(model.faces[np.unique(np.concatenate(tri_ids))])
        remap = np.full(model.n_vertices, -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        faces_sub = remap[model.faces]  # -1 where a face leaves the subset; never indexed by landmarks
        self.register_buffer("fast_vertex_ids", torch.as_tensor(used, dtype=torch.long))
        self.register_buffer("fast_faces", torch.as_tensor(np.maximum(faces_sub, 0), dtype=torch.long))

    # ------------------------------------------------------------------
    def zeros(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Neutral parameters: beta, psi, theta filled with zeros."""
        kw = dict(dtype=self.v_template.dtype, device=self.v_template.device)
        return {"beta": torch.zeros(batch, self.n_shape, **kw),
                "psi": torch.zeros(batch, self.n_expr, **kw),
                "theta": torch.zeros(batch, 3 * self.n_joints, **kw)}

    def landmark_embedding(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = theta.shape[0]
        faces = self.lmk_faces.unsqueeze(0).expand(B, -1).clone()
        bary = self.lmk_bary.unsqueeze(0).expand(B, -1, -1).clone()
        if self.dynamic:
            dyn_f, dyn_b = L.dynamic_contour(theta, self.dyn_lmk_faces, self.dyn_lmk_bary)
            faces[:, :N_CONTOUR] = dyn_f
            bary[:, :N_CONTOUR] = dyn_b
        return faces, bary

    def vertices(self, beta: torch.Tensor, psi: torch.Tensor, theta: torch.Tensor,
                 ids: torch.Tensor | None = None) -> torch.Tensor:
        """Posed vertices (B, V, 3), or only the rows ``ids`` (B, len(ids), 3); exact either way."""
        return self._run(beta, psi, theta, ids)[0]

    def _run(self, beta, psi, theta, rows: torch.Tensor | None):
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])  # noqa: E731
        return L.lbs(beta, psi, theta, pick(self.v_template), pick(self.shapedirs), pick(self.exprdirs),
                     pick(self.posedirs) if self.has_posedirs else None, self.j_template, self.j_shapedirs, self.j_exprdirs,
                     self.parents, pick(self.lbs_weights))

    def forward(self, beta: torch.Tensor, psi: torch.Tensor, theta: torch.Tensor) -> HeadOutput:
        """Full mesh: beta (B, S), psi (B, E), theta (B, 3J) -> HeadOutput."""
        verts, joints = self._run(beta, psi, theta, None)
        faces, bary = self.landmark_embedding(theta)
        lmk = L.vertices2landmarks(verts, self.faces, faces, bary)
        return HeadOutput(vertices=verts, joints=joints, landmarks=lmk)

    def landmarks(self, beta: torch.Tensor, psi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Fast path: the 68 landmarks (B, 68, 3) evaluating only the vertices they need.

        Equal to ``forward(...).landmarks``; tracking uses it every frame.
        """
        verts, _ = self._run(beta, psi, theta, self.fast_vertex_ids)
        faces, bary = self.landmark_embedding(theta)
        return L.vertices2landmarks(verts, self.fast_faces, faces, bary)
