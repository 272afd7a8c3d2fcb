"""The fit's parameter vector ``[beta | psi | root 3 | jaw 3 | log s | t 3]`` and its link to HeadParams."""

from __future__ import annotations

import numpy as np

from headcast.core.params import N_POSE, HeadParams, pose_slice

FITTED_JOINTS = ("root", "jaw")  # the joints the fit rotates; the others stay at rest


def layout(sizes: tuple[tuple[str, int], ...]) -> tuple[dict[str, slice], int]:
    """Consecutive slices of a vector for named parts of the given sizes, and the total size."""
    out, k = {}, 0
    for name, n in sizes:
        out[name] = slice(k, k + n)
        k += n
    return out, k


class Packing:
    """Maps the fitted parameters to one vector: [beta (S) | psi (E) | root 3 | jaw 3 | log s | t 3]."""

    def __init__(self, n_shape: int, n_expr: int):
        self.sl, self.size = layout((("beta", n_shape), ("psi", n_expr), ("root", 3), ("jaw", 3),
                                     ("log_s", 1), ("t", 3)))

    def pack(self, p: HeadParams) -> np.ndarray:
        """The vector (P,) float64 of ``p``; joints outside FITTED_JOINTS are dropped."""
        x = np.zeros(self.size)
        x[self.sl["beta"]] = p.beta
        x[self.sl["psi"]] = p.psi
        for joint in FITTED_JOINTS:
            x[self.sl[joint]] = p.theta[pose_slice(joint)]
        x[self.sl["log_s"]] = np.log(p.scale)
        x[self.sl["t"]] = p.translation
        return x

    def unpack(self, x: np.ndarray, model: str) -> HeadParams:
        """HeadParams of the vector ``x`` (P,) for the model named ``model``."""
        theta = np.zeros(N_POSE)
        for joint in FITTED_JOINTS:
            theta[pose_slice(joint)] = x[self.sl[joint]]
        return HeadParams(x[self.sl["beta"]].copy(), x[self.sl["psi"]].copy(), theta,
                          float(np.exp(x[self.sl["log_s"]][0])), x[self.sl["t"]].copy(), model)

    def mask(self, *names: str) -> np.ndarray:
        """(P,) bool, True on the named parts."""
        m = np.zeros(self.size, dtype=bool)
        for n in names:
            m[self.sl[n]] = True
        return m
