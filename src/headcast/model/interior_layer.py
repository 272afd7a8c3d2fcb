"""The mouth interior posed like the head: :class:`InteriorLayer` runs the head's blendshapes and
skinning (:func:`headcast.model.lbs.lbs`) on the interior's own vertices, with the joints of the
head (so the lower teeth turn with the jaw and the upper teeth with the head)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from headcast.model import lbs as L
from headcast.model.interior import Interior
from headcast.model.layer import HeadLayer


class InteriorLayer(nn.Module):
    """Torch module posing ``interior`` with the components and joints of ``head`` (a HeadLayer)."""

    def __init__(self, head: HeadLayer, interior: Interior):
        super().__init__()
        self.head = head
        self.interior = interior
        dtype = head.v_template.dtype
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        self.register_buffer("v_template", t(interior.v_template))
        self.register_buffer("shapedirs", t(interior.shapedirs[:, :, : head.n_shape]))
        self.register_buffer("exprdirs", t(interior.exprdirs[:, :, : head.n_expr]))
        self.register_buffer("lbs_weights", t(interior.lbs_weights))

    def vertices(self, beta: torch.Tensor, psi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Posed interior vertices (B, P, 3), model frame metres, for beta (B, S), psi (B, E), theta (B, 3J)."""
        h = self.head
        return L.lbs(beta, psi, theta, self.v_template, self.shapedirs, self.exprdirs, None, h.j_template,
                     h.j_shapedirs, h.j_exprdirs, h.parents, self.lbs_weights)[0]


def interior_layer(head: HeadLayer) -> InteriorLayer | None:
    """The interior of ``head``'s model (its own or the FLAME proxy) posed with ``head``, or None."""
    from headcast.model.cavity import interior_of

    interior = interior_of(head.model)
    return None if interior is None else InteriorLayer(head, interior)
