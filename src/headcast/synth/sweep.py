"""Synthetic sweeps: one subject turning its head in front of a still camera, with ground truth.

View k of N turns the head to yaw ``-yaw_range + 2 yaw_range k / (N - 1)`` degrees; every other draw of
the subject (identity, expression, pitch, roll, placement, light) stays as drawn for its seed, so the
views differ only by the head's turn and the sensor noise. ``bump_mm`` adds a smooth bump beyond the
parametric model (along the rest normals, on the subject's left cheek) to the ground truth, for the
detail layer. ``expression_change`` > 0 lets the subject's face move between views: view k's expression is
the subject's plus a seeded sparse random expression of weights up to that share of the model's range
(:func:`view_expressions`; clipped to the range), the rest of the subject as drawn. Each view is written as
``frame-NNN`` (:func:`headcast.synth.io.write_sample`; its ``psi`` is the view's own expression), its
ground-truth mesh in its own camera frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from headcast.core.geometry import vertex_normals
from headcast.core.rigid import rigid_fit
from headcast.io.outputs import staged_dir
from headcast.io.recon import with_offsets
from headcast.model.head_model import HeadModel
from headcast.synth.io import default_intrinsics, write_sample
from headcast.synth.render import render_rgbd
from headcast.synth.subject import active_expressions, random_expression, random_subject

logger = logging.getLogger(__name__)

BUMP_SIGMA = 0.012  # metres: the bump's Gaussian width


def bump_offsets(model: HeadModel, bump_mm: float) -> np.ndarray:
    """Rest-space offsets (V, 3) metres: a Gaussian bump of ``bump_mm`` along the template's normals,
    centred between the left outer eye corner (iBUG 45) and the left jaw contour (iBUG 14)."""
    v = model.v_template.astype(np.float64)
    lm = model.landmark_vertices()
    centre = 0.5 * (lm[45] + lm[14])
    g = np.exp(-0.5 * (np.linalg.norm(v - centre, axis=1) / BUMP_SIGMA) ** 2)
    return (bump_mm / 1000.0 * g[:, None] * vertex_normals(v, model.faces)).astype(np.float32)


def view_expressions(model: HeadModel, psi: np.ndarray, n: int, change: float, seed: int) -> list[np.ndarray]:
    """The N views' expressions (E,): ``psi`` plus view k's random sparse expression of scale ``change``
    (:func:`headcast.synth.subject.random_expression`, seeded by (seed, k)), clipped to the model's
    expression range when it has one; ``psi`` for every view when ``change`` is 0."""
    out = []
    for k in range(n):
        rng = np.random.default_rng([int(seed), 12, k])
        p = psi + (random_expression(model, rng, change, 3) if change else 0.0)
        rng_ = model.meta.get("expr_range")
        out.append(np.clip(p, *rng_) if rng_ is not None else p)
    return out


def sweep_yaws(n: int, yaw_range_deg: float) -> np.ndarray:
    """The N views' yaws (degrees), evenly over +-yaw_range."""
    return np.linspace(-yaw_range_deg, yaw_range_deg, n) if n > 1 else np.zeros(1)


def synth_sweep(model: HeadModel, out_dir: str | Path, n: int = 11, seed: int = 0, yaw_range_deg: float = 60.0,
                profile: str = "truedepth", width: int = 640, height: int = 480, bump_mm: float = 0.0,
                background: bool = False, expression_change: float = 0.0, force: bool = False) -> list[Path]:
    """Render subject ``seed`` from ``n`` views (module docstring) into ``out_dir`` (a ``synth`` output:
    built whole, ``force`` replaces an earlier one); returns the colour PNG paths."""
    from headcast.core.errors import HeadcastError

    if not 1 <= n <= 100:
        raise HeadcastError(f"--sweep must be 1..100 views, not {n}")
    if not 0 <= expression_change <= 1:
        raise HeadcastError(f"--expression-change must be 0..1 (a share of the expression range), "
                            f"not {expression_change}")
    K = default_intrinsics(width, height)
    shown = with_offsets(model, bump_offsets(model, bump_mm)) if bump_mm else model
    out = Path(out_dir)
    names = [f"frame-{k:03d}" for k in range(n)]
    exprs = view_expressions(model, random_subject(shown, seed).psi, n, expression_change, seed)
    with staged_dir(out, "synth", force=force) as staging:
        for k, yaw in enumerate(sweep_yaws(n, yaw_range_deg)):
            t0 = time.perf_counter()
            subject = random_subject(shown, seed, yaw_deg=float(yaw), pitch_deg=0.0, roll_deg=0.0,
                                     distance=0.45)
            # the placement stays as drawn for the subject's own expression: only the face moves
            subject = replace(subject, psi=exprs[k], info={**subject.info,
                                                           "expressions": active_expressions(shown, exprs[k])})
            frame = render_rgbd(shown, subject, K, profile=profile, background=background, seed=seed * 1000 + k)
            write_sample(frame, subject, shown, staging, names[k])
            logger.info(f"synth: sweep view {k + 1}/{n} yaw {yaw:+.0f} deg in {time.perf_counter() - t0:.1f} s")
    return [out / f"{p}_color.png" for p in names]


def true_poses(vertices: list[np.ndarray], head: np.ndarray) -> list[np.ndarray]:
    """Head-to-camera transforms (4, 4) of each view relative to view 0: the rigid fit of view 0's
    ground-truth vertices ``head`` (indices) to each view's (vertices: (V, 3) per view, camera frames)."""
    out = []
    for v in vertices:
        R, t = rigid_fit(vertices[0][head], v[head])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        out.append(T)
    return out
