"""Identity and expression priors beside the point cloud, and the depth noise they are set for.

Beside a point term that is a mean over n points, ``w_beta = sigma^2 / n`` is the MAP weight for
per-point noise sigma (beta ~ N(0, 1)), and ``w_psi = psi_prior_ratio * w_beta``. sigma is measured
from the fit's own residuals (:func:`residual_sigma`) unless the config fixes the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from headcast.core import threads
from headcast.core.geometry import face_normals
from headcast.fit.config import FitConfig
from headcast.fit.head import PackedHead


@dataclass(frozen=True)
class PriorWeights:
    """Identity and expression prior weights beside a point term over ``points`` points, and what they
    stand for: per-point noise ``sigma`` metres (None when the config fixes the weights), the correlation
    factor in it (when measured), and ``source`` (fixed, assumed or measured)."""

    w_beta: float
    w_psi: float
    points: int
    sigma: float | None
    correlation: float | None
    source: str

    def report(self) -> dict:
        """The fields for fit_report.json, sigma in millimetres."""
        out = asdict(self)
        out["sigma_mm"] = None if out.pop("sigma") is None else self.sigma * 1000.0
        return out


def prior_weights(cfg: FitConfig, n: int, sigma: float | None = None,
                  correlation: float | None = None) -> PriorWeights:
    """MAP weights for per-point noise ``sigma`` metres beside the mean over ``n`` points:
    w_beta = sigma^2 / n (sigma at least ``cfg.sigma_floor_mm``), w_psi = psi_prior_ratio * w_beta;
    ``cfg.w_beta`` / ``cfg.w_psi`` override. ``correlation`` None means sigma was assumed, not measured."""
    if cfg.w_beta is not None:
        wb, sigma, source = cfg.w_beta, None, "fixed"
    else:
        sigma = max(sigma, cfg.sigma_floor_mm / 1000.0)
        wb, source = sigma ** 2 / n, ("measured" if correlation is not None else "assumed")
    wp = cfg.w_psi if cfg.w_psi is not None else cfg.psi_prior_ratio * wb
    return PriorWeights(wb, wp, n, sigma, correlation, source)


def residual_sigma(head: PackedHead, x: np.ndarray, pts: np.ndarray, k: int = 16) -> tuple[float, float]:
    """Per-point noise (m) for the priors from the signed distances of the points (n, 3) to the mesh
    at x, and the correlation factor in it.

    sigma = MAD scale of the residuals x sqrt(c), with c in [1, k] the variance of the residuals
    averaged over each point's k nearest neighbours in the image relative to white noise's (sigma^2 / k):
    correlated noise (stereo depth) and smooth model mismatch fit fewer independent points than
    there are, so they call for a stronger prior than their per-point spread alone.
    """
    from scipy.spatial import cKDTree

    faces = head.model.faces
    (tri, bary, d), v = head.closest(x, pts)
    q = np.einsum("nk,nkc->nc", bary, v[faces[tri]])
    r = d * np.sign(((pts - q) * face_normals(v, faces[tri])).sum(1) + 1e-30)
    rays = pts[:, :2] / pts[:, 2:3]  # neighbours across the image: depth noise does not move a point's ray
    _, nb = cKDTree(rays).query(rays, k=k, workers=threads.plan().count)
    c = float(np.clip(k * _mad(r[nb].mean(1)) ** 2 / max(_mad(r), 1e-12) ** 2, 1.0, k))
    return float(_mad(r) * np.sqrt(c)), c


def _mad(a: np.ndarray) -> float:
    """The median absolute deviation scaled to a normal distribution's standard deviation."""
    return 1.4826 * float(np.median(np.abs(a - np.median(a))))
