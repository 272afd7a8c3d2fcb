"""The classical RGB baseline ``rgb-2d``: the head fitted to the 2D landmarks alone through the
pinhole camera (no depth), placed first by PnP on the inner landmarks."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.fit.head import PackedHead
from headcast.fit.results import BlockReport, FitResult
from headcast.fit.runner import BlockRunner
from headcast.fit.solver import Evaluate
from headcast.fit.terms import INNER, Targets

logger = logging.getLogger(__name__)


def landmark2d_term(head: PackedHead, x: np.ndarray, tgt: np.ndarray, K: Intrinsics, depth: float) -> Evaluate:
    """All 68 landmarks (contour chosen by the yaw at x) projected through K against ``tgt`` (68, 2)
    pixels; residuals are scaled by ``depth`` / fx so they read as metres at the face."""
    where = head.landmark_map(x)
    k = depth / K.fx / np.sqrt(68)

    def evaluate(xx: np.ndarray, with_jac: bool):
        p, J = head.surface_points(xx, where, with_jac)
        z = p[:, 2]
        uv = np.stack([K.fx * p[:, 0] / z + K.cx, K.fy * p[:, 1] / z + K.cy], axis=1)
        r = ((uv - tgt) * k).reshape(-1)
        if not with_jac:
            return r
        du = (K.fx / z)[:, None] * J[:, 0] - (K.fx * p[:, 0] / z ** 2)[:, None] * J[:, 2]
        dv = (K.fy / z)[:, None] * J[:, 1] - (K.fy * p[:, 1] / z ** 2)[:, None] * J[:, 2]
        return r, np.stack([du, dv], axis=1).reshape(-1, head.pk.size) * k

    return evaluate


def fit_rgb2d(fitter: BlockRunner, tg: Targets) -> FitResult:
    """Place the head by PnP, then fit pose alone (``iters_2d_pose`` steps), then shape, expression,
    pose and translation (``iters_2d``) to the 2D landmarks; one block ``rgb2d``."""
    K, cfg = tg.K, fitter.cfg
    src = fitter.template_landmarks()[INNER]
    ok, rvec, tvec = cv2.solvePnP(src.astype(np.float64), tg.landmarks2d[INNER].astype(np.float64), K.K, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise HeadcastError("could not place the head from the 2D landmarks")
    Ru = cv2.Rodrigues(rvec)[0]
    x = fitter.pk.pack(fitter.params_from_camera_rotation(Ru, 1.0, tvec.ravel()))
    tgt = np.asarray(tg.landmarks2d, dtype=np.float64)

    def terms(xx: np.ndarray):
        return [(1.0, landmark2d_term(fitter, xx, tgt, K, float(tvec.ravel()[2])))]

    res = FitResult(HeadParams.neutral(fitter, fitter.model_name))
    t0 = time.perf_counter()
    logger.info("rgb-2d: pose, shape and expression on 2D landmarks")
    x, _, pose_steps = fitter.run_block("rgb-2d", x, ("root", "t"), cfg.iters_2d_pose, terms,
                                          cfg.lm_damping_2d)
    x, cost, steps = fitter.run_block("rgb-2d", x, ("beta", "psi", "root", "jaw", "t"), cfg.iters_2d, terms,
                                        cfg.lm_damping_2d)
    res.blocks.append(BlockReport("rgb2d", pose_steps + steps, time.perf_counter() - t0, loss=cost))
    res.params = fitter.pk.unpack(x, fitter.model_name)
    return res
