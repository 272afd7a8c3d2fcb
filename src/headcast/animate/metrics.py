"""Measures of a tracked parameter stream: jitter on a still stretch, landmark error."""

from __future__ import annotations

import numpy as np

from headcast.model.head_model import HeadModel
from headcast.preprocess.ibug68 import inter_ocular


def vertex_speed_mm(model: HeadModel, beta: np.ndarray, theta: np.ndarray, psi: np.ndarray,
                    region: str = "face", batch: int = 64) -> np.ndarray:
    """Mean speed (N - 1,) in millimetres per frame of the ``region`` vertices of the head with identity
    ``beta`` (S,) driven by theta (N, N_POSE) and psi (N, E), in the model frame."""
    from headcast.model.skinning import FixedShape

    shape = FixedShape(model, beta, ids=model.masks[region])
    out = [shape.vertices(theta[a:a + batch], psi[a:a + batch]) for a in range(0, len(theta), batch)]
    v = np.concatenate(out)
    return np.linalg.norm(np.diff(v, axis=0), axis=2).mean(1) * 1000


def stillest_stretch(landmarks: np.ndarray, found: np.ndarray, length: int) -> tuple[int, int] | None:
    """(start, stop) of the ``length``-frame window with the least detected landmark motion (every frame
    with a face), or None. landmarks (N, 68, 2) pixels; motion is normalised by the inter-ocular distance."""
    n = len(landmarks)
    if n < length or length < 2:
        return None
    io = np.maximum(inter_ocular(landmarks), 1e-6)
    step = np.linalg.norm(np.diff(landmarks, axis=0), axis=2).mean(1) / io[1:]
    ok = found[1:] & found[:-1]
    step = np.where(ok, step, np.inf)
    c = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(step), step, 1e9))])
    sums = c[length - 1:] - c[: len(c) - length + 1]
    start = int(np.argmin(sums))
    if sums[start] >= 1e9:
        return None
    return start, start + length


def landmark_nme(model_uv: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Mean landmark distance divided by the inter-ocular (outer eye corner) distance of the detection,
    per frame: model_uv, detected (N, 68, 2) -> (N,)."""
    return np.linalg.norm(model_uv - detected, axis=2).mean(1) / inter_ocular(detected)


MOUTH_CORNERS = np.array([48, 54])  # iBUG-68 mouth corners
LIPS = np.arange(48, 68)  # iBUG-68 outer and inner lip points


def expression_landmarks(model: HeadModel, beta: np.ndarray, theta: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks (N, 68, 3) metres of the head ``beta`` (S,) with the expression and jaw of theta
    (N, N_POSE) / psi (N, E) but no head rotation (root and neck zeroed): expression alone, model frame."""
    th = np.array(theta, dtype=np.float64)
    th[:, :6] = 0.0  # root | neck
    import torch

    from headcast.model.layer import HeadLayer

    layer = HeadLayer(model, dtype=torch.float64)
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    with torch.no_grad():
        return layer.landmarks(f(np.tile(beta, (len(th), 1))), f(psi), f(th)).numpy()


def mouth_errors_mm(model: HeadModel, beta: np.ndarray, theta: np.ndarray, psi: np.ndarray,
                    theta_ref: np.ndarray, psi_ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame (N,), in millimetres on the head ``beta``: the mean distance of the two mouth corners and
    of the 20 lip points between the expression (theta, psi) and the reference (theta_ref, psi_ref)."""
    a = expression_landmarks(model, beta, theta, psi)
    b = expression_landmarks(model, beta, theta_ref, psi_ref)
    d = np.linalg.norm(a - b, axis=2) * 1000
    return {"mouth_corners": d[:, MOUTH_CORNERS].mean(1), "lips": d[:, LIPS].mean(1)}
