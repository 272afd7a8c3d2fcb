"""The fitted parameters of a head in a camera: FLAME's beta, psi, theta and the placement eta.

The placement is a similarity from the model frame to the camera frame,
``X_cam = s * FLIP @ X_model + t`` (see headcast.core.camera). The paper's eta is an
orthographic projection (scale and 2D translation); :meth:`HeadParams.paper_eta`
gives its equivalent for this camera. On disk: :mod:`headcast.io.recon` (``write_params`` /
``read_params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from headcast.core.camera import Intrinsics, to_camera

JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
N_JOINTS = len(JOINT_NAMES)
N_POSE = 3 * N_JOINTS  # theta: [root | neck | jaw | left eye | right eye] axis-angle, radians


def pose_slice(joint: str) -> slice:
    """The three entries of theta (N_POSE,) that hold ``joint``'s axis-angle rotation."""
    k = JOINT_NAMES.index(joint)
    return slice(3 * k, 3 * k + 3)


@dataclass
class HeadParams:
    """beta (S,), psi (E,), theta (N_POSE,) radians, scale s (unitless), t (3,) metres, model name."""

    beta: np.ndarray
    psi: np.ndarray
    theta: np.ndarray
    scale: float = 1.0
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    model: str = "ict"

    @classmethod
    def neutral(cls, layer, model: str) -> "HeadParams":
        return cls(np.zeros(layer.n_shape), np.zeros(layer.n_expr), np.zeros(N_POSE), 1.0, np.zeros(3), model)

    def vertices(self, layer) -> np.ndarray:
        """Camera-frame vertices (V, 3) in metres of these parameters on ``layer`` (a ``HeadLayer``)."""
        import torch  # not at the top: the tracking stages use this module without torch (2-3 s to import)

        t = lambda a: torch.as_tensor(np.asarray(a), dtype=layer.v_template.dtype)[None]  # noqa: E731
        with torch.no_grad():
            v = layer.vertices(t(self.beta), t(self.psi), t(self.theta))[0].double().numpy()
        return to_camera(v, self.scale, self.translation)

    def paper_eta(self, K: Intrinsics) -> np.ndarray:
        """The paper's orthographic eta = (s, tx, ty): pixels = s * (x, y) + (tx, ty), for model-frame x, y
        after FLIP, linearised at the head's depth (weak perspective)."""
        tz = float(self.translation[2])
        s = K.fx * self.scale / tz
        return np.array([s, K.fx * self.translation[0] / tz + K.cx, K.fy * self.translation[1] / tz + K.cy])
