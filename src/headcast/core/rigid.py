"""Closed-form rigid and similarity alignment of corresponding point sets (Kabsch / Umeyama)."""

from __future__ import annotations

import numpy as np


def similarity_fit(src: np.ndarray, dst: np.ndarray, with_scale: bool = True
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R (3, 3) and translation t (3,) minimising ``sum |s R src_i + t - dst_i|^2``.

    Args:
        src, dst: (N, 3) corresponding points, metres (N >= 3, not collinear).
        with_scale: False fixes s = 1 (Kabsch, a rigid motion).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / (a ** 2).sum(1).mean()) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def rigid_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) minimising ``|src R^T + t - dst|`` (Kabsch)."""
    _, R, t = similarity_fit(src, dst, with_scale=False)
    return R, t
