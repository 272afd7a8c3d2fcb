"""A reconstruction against synthetic ground truth: errors over the model's face region, in millimetres.

- ``vertex``: distance from each fitted face vertex to the same vertex of the ground truth;
- ``surface``: distance from each ground-truth face vertex to the fitted surface (no sliding term).
"""

from __future__ import annotations

import numpy as np

from headcast.core.scene import closest_points_on_mesh
from headcast.model.head_model import HeadModel


def error_stats(e_mm: np.ndarray) -> dict:
    """Median, mean and 95th percentile of errors (N,) in mm."""
    return {"median": float(np.median(e_mm)), "mean": float(e_mm.mean()), "p95": float(np.percentile(e_mm, 95))}


def synthetic_errors(model: HeadModel, fitted: np.ndarray, truth: np.ndarray) -> dict:
    """Face-region errors (mm) of fitted (V, 3) against ground-truth (V, 3) vertices, camera frame, metres."""
    face = model.masks["face"]
    vertex = np.linalg.norm(fitted[face] - truth[face], axis=1) * 1000
    _, _, d = closest_points_on_mesh(fitted, model.faces, truth[face])
    return {"vertex": error_stats(vertex), "surface": error_stats(d * 1000)}
