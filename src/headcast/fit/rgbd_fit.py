"""The paper's three optimisation blocks on RGB-D observations, and two baselines.

Block 1: root rotation and placement on the 3D landmarks without the 17 contour points (eq. 1, 3).
Block 2: beta, psi, root and jaw rotation, placement on landmarks + L3D (eq. 2, 4).
Block 3: beta alone on L3D (eq. 5).

L3D is the mean squared exact point-to-triangle distance from the face points to the
mesh; correspondences (closest triangle and barycentric point) are recomputed before
every Levenberg-Marquardt step. The landmark term is the mean squared 3D landmark error
(the square of the paper's L2), so every block minimises a sum of squares.

Baselines: ``landmarks-3d`` (blocks 1 and 2 without L3D) and ``rgb-2d`` (the classical
fit to 2D landmarks alone through the pinhole camera, no depth; :mod:`headcast.fit.baseline2d`).

The pieces: :mod:`.packing` (the parameter vector), :mod:`.head` (the model and its Jacobian on it),
:mod:`.terms` (residual terms), :mod:`.priors` (prior weights and the noise they follow),
:mod:`.solver` (one LM step), :mod:`.runner` (LM over a block's parameters), :mod:`.results` (what a fit
returns).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from headcast.core import threads
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.fit.config import FitConfig
from headcast.fit.priors import PriorWeights, prior_weights, residual_sigma
from headcast.fit.results import BlockReport, FitResult
from headcast.fit.runner import BlockRunner, Terms
from headcast.fit.solver import Evaluate
from headcast.fit.terms import INNER, Targets, landmark_term, point_term

__all__ = ["INNER", "METHODS", "BlockReport", "FitConfig", "FitResult", "PriorWeights", "RGBDFitter", "Targets",
           "prior_weights"]

logger = logging.getLogger(__name__)

METHODS = ("full", "landmarks-3d", "rgb-2d")
BLOCK2 = ("beta", "psi", "root", "jaw", "log_s", "t")  # the parameters blocks 2 and 2+ move


class RGBDFitter(BlockRunner):
    """Holds the head model and runs the blocks for one frame (see the module docstring)."""

    def fit(self, tg: Targets, method: str = "full") -> FitResult:
        """Fit a head to the targets with ``method`` in METHODS."""
        if method not in METHODS:
            raise HeadcastError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.dense = method == "full"  # priors: a point cloud constrains shape far more than landmarks
        self.prior = None
        with threads.one_blas_thread():  # 163 columns: OpenBLAS's pool costs more than it saves
            if method == "rgb-2d":
                from headcast.fit.baseline2d import fit_rgb2d  # OpenCV's PnP: only this baseline needs it

                return fit_rgb2d(self, tg)
            return self._fit_3d(tg)

    # -- the blocks ---------------------------------------------------------------------------
    def _fit_3d(self, tg: Targets) -> FitResult:
        """Blocks 1 and 2 (and, with the point cloud, the grown block 2 and block 3)."""
        cfg = self.cfg
        inner = self._inner_landmarks(tg)
        lmk_tgt = np.asarray(tg.landmarks3d[inner], dtype=np.float64)
        lmk = landmark_term(self, lmk_tgt, inner)
        res = FitResult(HeadParams.neutral(self, self.model_name))

        def report(name: str, t0: float, run: tuple[np.ndarray, float, int], pts: np.ndarray | None = None):
            x, cost, steps = run
            res.blocks.append(BlockReport(name, steps, time.perf_counter() - t0,
                                          landmark_rmse_mm=self._lmk_rmse(x, lmk_tgt, inner),
                                          l3d_mm2=self._l3d_mm2(x, pts), loss=cost))
            return x

        x = self.pk.pack(self.init_similarity(tg.landmarks3d[inner], inner))
        t0 = time.perf_counter()
        logger.info("block 1: pose and placement on 3D landmarks")
        x = report("block1", t0, self.run_block("block 1", x, ("root", "log_s", "t"), cfg.iters_block1,
                                                lambda _x: [(1.0, lmk)]))
        pts = self._face_points(tg) if self.dense else None
        t0 = time.perf_counter()
        x = report("block2", t0, self._block2(x, lmk, pts), pts)
        if pts is not None and cfg.grow_mm > 0 and tg.scene_points is not None:
            pts = self._grow_region(x, pts, tg.scene_points)
            self.prior = prior_weights(cfg, len(pts), self.prior.sigma, self.prior.correlation)
            t0 = time.perf_counter()
            logger.info(f"block 2 again on the face region grown from the fit ({len(pts)} points)")
            x = report("block2_grown", t0, self.run_block("block 2+", x, BLOCK2, cfg.iters_grow,
                                                          self._block2_terms(lmk, pts)), pts)
        if pts is not None:
            trim = cfg.trim_mm / 1000.0
            t0 = time.perf_counter()
            logger.info("block 3: shape on the point cloud")
            x = report("block3", t0, self.run_block("block 3", x, ("beta",), cfg.iters_block3,
                                                    lambda xx: [(1.0, point_term(self, xx, pts, trim))]), pts)
            res.priors = self.prior
        res.params = self.pk.unpack(x, self.model_name)
        return res

    def _block2(self, x: np.ndarray, lmk: Evaluate, pts: np.ndarray | None) -> tuple[np.ndarray, float, int]:
        """Block 2; with points and no fixed prior weights, its first half assumes ``sigma_start_mm`` of
        noise and the rest uses the noise the residuals then show. Returns x, the loss and the steps run."""
        cfg = self.cfg
        logger.info("block 2: shape, expression, pose and placement on landmarks" +
                    (" + point cloud" if pts is not None else ""))
        terms = self._block2_terms(lmk, pts)
        if pts is None or cfg.w_beta is not None:
            if pts is not None:
                self.prior = prior_weights(cfg, len(pts))  # fixed by the config
            return self.run_block("block 2", x, BLOCK2, cfg.iters_block2, terms)
        self.prior = prior_weights(cfg, len(pts), cfg.sigma_start_mm / 1000.0)
        half = cfg.iters_block2 // 2
        x, _, first = self.run_block("block 2", x, BLOCK2, half, terms)
        self.prior = prior_weights(cfg, len(pts), *residual_sigma(self, x, pts))
        x, cost, rest = self.run_block("block 2", x, BLOCK2, cfg.iters_block2 - half, terms)
        return x, cost, first + rest

    def _block2_terms(self, lmk: Evaluate, pts: np.ndarray | None) -> Terms:
        """The landmark term, and beside the points (n, 3) the weighted landmark and point terms."""
        if pts is None:
            return lambda _x: [(1.0, lmk)]
        trim = self.cfg.trim_mm / 1000.0
        return lambda xx: [(self.cfg.w_landmarks_block2, lmk), (1.0, point_term(self, xx, pts, trim))]

    def _inner_landmarks(self, tg: Targets) -> np.ndarray:
        """Indices of the inner landmarks that have depth (at least 6)."""
        valid = np.asarray(tg.valid3d, bool)
        inner = np.array([i for i in INNER if valid[i]])
        if len(inner) < 6:
            raise HeadcastError(f"only {len(inner)} inner landmarks have depth; at least 6 are needed")
        return inner

    def _face_points(self, tg: Targets) -> np.ndarray:
        """The face points (n, 3), at most ``max_points`` of them (random, seeded)."""
        if tg.points is None or len(tg.points) < 50:
            raise HeadcastError("the face point cloud has fewer than 50 points; cannot fit L3D")
        pts = tg.points
        if len(pts) > self.cfg.max_points:
            rng = np.random.default_rng(self.cfg.seed)
            pts = pts[rng.choice(len(pts), self.cfg.max_points, replace=False)]
        return pts

    def _grow_region(self, x: np.ndarray, pts: np.ndarray, scene: np.ndarray) -> np.ndarray:
        """Add the depth points within ``grow_mm`` of the fitted mesh's face triangles (beyond the
        landmark hull: forehead, temples, jaw sides), subsampled with the hull points to max_points."""
        face_tri = self.model.region_triangles("face")
        grow = self.cfg.grow_mm / 1000.0
        # a point within ``grow`` of a face triangle lies in the face's bounding box grown by it (and a
        # micrometre, above Open3D's float32 rounding): only those are queried, the same points kept
        corners = self.mesh_vertices(x)[self.model.faces[face_tri]].reshape(-1, 3)
        lo, hi = corners.min(0) - (grow + 1e-6), corners.max(0) + (grow + 1e-6)
        near = scene[np.all((scene >= lo) & (scene <= hi), axis=1)]
        (tri, _, dist), _ = self.closest(x, near)
        extra = near[(dist < grow) & face_tri[tri]]
        both = np.concatenate([pts, extra])
        if len(both) > self.cfg.max_points:
            rng = np.random.default_rng(self.cfg.seed + 1)
            both = both[rng.choice(len(both), self.cfg.max_points, replace=False)]
        return both

    # -- measures -------------------------------------------------------------------------
    def _lmk_rmse(self, x: np.ndarray, tgt: np.ndarray, idx: np.ndarray) -> float:
        """RMS distance (mm) of the landmarks ``idx`` at x from ``tgt`` (n, 3)."""
        d = self.landmarks_cam(x)[idx] - tgt
        return float(np.sqrt((d ** 2).sum(1).mean())) * 1000

    def _l3d_mm2(self, x: np.ndarray, pts: np.ndarray | None) -> float | None:
        """L3D (mm^2): the mean squared distance of the points (n, 3) to the mesh at x; None without points."""
        if pts is None:
            return None
        (_, _, d), _ = self.closest(x, pts)
        return float((d ** 2).mean()) * 1e6
