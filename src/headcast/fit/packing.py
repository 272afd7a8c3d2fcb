"""The fit's parameter vector ``[beta | psi | root 3 | jaw 3 | log s | t 3]`` and its link to HeadParams."""

from __future__ import annotations

import numpy as np
import torch

from headcast.core.params import JOINT_NAMES, N_POSE, HeadParams, pose_slice

FITTED_JOINTS = ("root", "jaw")  # the joints the fit rotates; the others stay at rest


def layout(sizes: tuple[tuple[str, int], ...]) -> tuple[dict[str, slice], int]:
    """Consecutive slices of a vector for named parts of the given sizes, and the total size."""
    out, k = {}, 0
    for name, n in sizes:
        out[name] = slice(k, k + n)
        k += n
    return out, k


def pose_vector(rotations: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """theta (N_POSE,) with the named joints' axis-angle rotations (3,) and zeros elsewhere, of
    ``like``'s dtype; built by concatenation, so forward-mode autodiff sees through it."""
    zero = torch.zeros(3, dtype=like.dtype)
    return torch.cat([rotations.get(joint, zero) for joint in JOINT_NAMES])


class Packing:
    """Maps the fitted parameters to one vector: [beta (S) | psi (E) | root 3 | jaw 3 | log s | t 3]."""

    def __init__(self, n_shape: int, n_expr: int):
        self.sl, self.size = layout((("beta", n_shape), ("psi", n_expr), ("root", 3), ("jaw", 3),
                                     ("log_s", 1), ("t", 3)))

    def pack(self, p: HeadParams) -> torch.Tensor:
        """The vector (P,) float64 of ``p``; joints outside FITTED_JOINTS are dropped."""
        x = torch.zeros(self.size, dtype=torch.float64)
        x[self.sl["beta"]] = torch.as_tensor(p.beta)
        x[self.sl["psi"]] = torch.as_tensor(p.psi)
        for joint in FITTED_JOINTS:
            x[self.sl[joint]] = torch.as_tensor(p.theta[pose_slice(joint)])
        x[self.sl["log_s"]] = float(np.log(p.scale))
        x[self.sl["t"]] = torch.as_tensor(p.translation)
        return x

    def unpack(self, x: torch.Tensor, model: str) -> HeadParams:
        """HeadParams of the vector ``x`` (P,) for the model named ``model``."""
        x = x.detach().numpy()
        theta = np.zeros(N_POSE)
        for joint in FITTED_JOINTS:
            theta[pose_slice(joint)] = x[self.sl[joint]]
        return HeadParams(x[self.sl["beta"]].copy(), x[self.sl["psi"]].copy(), theta,
                          float(np.exp(x[self.sl["log_s"]][0])), x[self.sl["t"]].copy(), model)

    def mask(self, *names: str) -> torch.Tensor:
        """(P,) bool, True on the named parts."""
        m = torch.zeros(self.size, dtype=torch.bool)
        for n in names:
            m[self.sl[n]] = True
        return m

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """beta (1, S), psi (1, E), theta (1, N_POSE), scale s (1,) and translation t (3,) of ``x``."""
        theta = pose_vector({joint: x[self.sl[joint]] for joint in FITTED_JOINTS}, x)
        return x[self.sl["beta"]][None], x[self.sl["psi"]][None], theta[None], torch.exp(x[self.sl["log_s"]]), \
            x[self.sl["t"]]
