"""Second-order spherical-harmonics lighting (the paper's lambda: 9 terms x RGB = 27 numbers).

The basis and conventions are those of :mod:`headcast.core.sh` (DECA's): the image is
``albedo * shading``, ``shading_c(n) = sum_k L[k, c] * SH_CONST[k] * b_k(n)`` for unit view-frame
normals ``n`` (x right, y up, z towards the camera). Photos are used as they are (values 0..1,
no gamma), like DECA-style fitters.

Albedo and light are only known up to a scale per colour channel (twice the light and half the
albedo make the same photo). Without an albedo model the scale is fixed by a convention:
:func:`normalise_light` makes the mean shading over the face pixels 1 in every channel, so the
light is white on the face on average and its brightness goes to the albedo.
"""

from __future__ import annotations

import numpy as np

from headcast.core.sh import sh_basis, sh_shading


def robust_weights(residual: np.ndarray, kind: str = "tukey", c: float | None = None) -> np.ndarray:
    """IRLS weights (N,) for residuals (N,) or (N, C) (the norm over C is used).

    ``huber`` (c = 1.345 sigma), ``tukey`` (biweight, c = 4.685 sigma; 0 beyond) or ``l1``
    (1 / |r|, minimising the mean absolute value); sigma from the median absolute deviation.
    """
    r = np.asarray(residual, dtype=np.float64)
    a = np.linalg.norm(r, axis=1) if r.ndim == 2 else np.abs(r)
    if kind == "l1":
        return 1.0 / np.maximum(a, 1e-3)
    sigma = max(1.4826 * np.median(a), 1e-4)
    if kind == "huber":
        k = (c or 1.345) * sigma
        return np.minimum(1.0, k / np.maximum(a, 1e-12))
    if kind == "tukey":
        k = (c or 4.685) * sigma
        return np.clip(1 - (a / k) ** 2, 0, None) ** 2
    raise ValueError(f"unknown robust weight {kind!r}")


def fit_light(colors: np.ndarray, normals: np.ndarray, albedo: np.ndarray | None = None,
              weights: np.ndarray | None = None, robust: str | None = "tukey", iters: int = 8,
              ridge: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares SH light (9, 3) for ``colors`` (N, 3) = ``albedo`` (N, 3) x shading(``normals`` (N, 3)).

    Without ``albedo`` it is 1 (the light then holds the mean albedo too). ``weights`` (N,) weight
    the pixels; ``robust`` re-weights them over ``iters`` rounds (Huber first, then ``robust``),
    so eyebrows, lips and specular spots that break the model lose their say. ``ridge`` pulls the
    8 non-constant terms towards 0 (relative to the data's scale), keeping directions the face's
    normals do not sample from running away. ``weights`` may also be (N, 3), one per channel.
    Returns the light and the final weights (N,) or (N, 3).
    """
    I = np.asarray(colors, dtype=np.float64)
    B = sh_basis(normals)  # (N, 9)
    a = np.ones_like(I) if albedo is None else np.asarray(albedo, dtype=np.float64)
    w0 = np.ones(len(I)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w0.copy()
    L = np.zeros((9, 3))
    for it in range(iters + 1 if robust else 1):
        for c in range(3):
            A = B * a[:, c:c + 1]
            AtW = A.T * (w if w.ndim == 1 else w[:, c])
            M = AtW @ A
            reg = ridge * np.trace(M) / 9
            M[1:, 1:] += reg * np.eye(8)
            L[:, c] = np.linalg.solve(M + 1e-12 * np.eye(9), AtW @ I[:, c])
        if robust and it < iters:
            r = I - a * (B @ L)
            kind = "huber" if it < 2 else robust
            w = w0 * (robust_weights(r, kind) if w0.ndim == 1 else robust_weights(r, kind)[:, None])
    return L, w


def normalise_light(light: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a light that holds the albedo's scale: returns ``(light / k, k)`` with ``k`` (3,) such
    that the mean shading over ``normals`` (N, 3) (the face) is 1 in every channel."""
    s = sh_shading(normals, light).mean(0)
    k = np.where(np.abs(s) > 1e-9, s, 1.0)
    return light / k[None, :], k


def loss4(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> float:
    """The paper's Loss4 (equation 6): mean absolute difference between the photo and the render
    over the pixels in ``mask`` (H, W) and the three channels; images (H, W, 3) in 0..1 (uint8 is
    divided by 255)."""
    def f(x):
        x = np.asarray(x)
        return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    m = np.asarray(mask, bool)
    if not m.any():
        return float("nan")
    return float(np.abs(f(photo)[m] - f(render)[m]).mean())
