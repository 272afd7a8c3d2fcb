"""Expression-transfer benchmark (``headcast bench expression``): synthetic drivers of other identities.

Each driver is a seeded random identity (beta ~ N(0, ``spread``^2) on the leading components) that
plays the built-in scripted motion (:mod:`headcast.animate.builtin`: still, head turns, jaw, blink,
smile with raised brows, nod), rendered to video; the tracker recovers theta and psi, which drive a
different head, the avatar (another seeded identity). Known ground truth: the script's expression.
Per frame: the expression error ``|psi - psi_true|`` (RMS over the model's components, its own units),
and on the avatar (expression and jaw only, no head rotation) the mean mouth-corner and lip-landmark
distances in millimetres between the tracked and the true expression. Neutral frames (the script's
expression and jaw all zero) are reported separately: there the mouth-corner figure is the avatar's
displacement from its own neutral (target <= 1 mm).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from headcast.animate.builtin import builtin_motion_video
from headcast.animate.metrics import mouth_errors_mm
from headcast.animate.pipeline import detect_video, track
from headcast.bench import machine
from headcast.io.validate import check_number
from headcast.model.registry import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)
AVATAR_SEED = 1000  # the avatar's identity seed (drivers use 0, 1, ...)


def random_identity(model, seed: int, spread: float = 1.0, components: int = 20) -> np.ndarray:
    """A seeded identity beta (S,): N(0, spread^2) on the leading ``components``, 0 beyond."""
    beta = np.zeros(model.n_shape)
    k = min(components, model.n_shape)
    beta[:k] = np.random.default_rng(seed).normal(0.0, spread, k)
    return beta


def bench_driver(model, driver_beta: np.ndarray, avatar_beta: np.ndarray, seed: int, folder: Path,
                 max_frames: int | None = None) -> dict:
    """Figures of one synthetic driver (see the module docstring)."""
    video = folder / f"driver-{seed}.mp4"
    truth = builtin_motion_video(video, model, driver_beta, seed=seed)
    det = detect_video(video, max_frames)
    trk = track(model, det.observations, det.info.fps, size=(det.info.width, det.info.height))
    n = len(trk.frames)
    found = np.array([f.face_found for f in trk.frames])
    theta = np.array([f.theta for f in trk.frames])
    psi = np.array([f.psi for f in trk.frames])
    t_theta, t_psi = truth.theta[:n], truth.psi[:n]
    err = mouth_errors_mm(model, avatar_beta, theta, psi, t_theta, t_psi)
    psi_err = np.sqrt(((psi - t_psi) ** 2).mean(1))
    neutral = found & (np.abs(t_psi).max(1) < 1e-6) & (np.abs(t_theta[:, 6:9]).max(1) < 1e-6)
    active = found & ~neutral

    def q(x: np.ndarray, sel: np.ndarray) -> dict:
        x = x[sel]
        return {"mean": float(x.mean()), "p95": float(np.percentile(x, 95)), "max": float(x.max())} if x.size else {}

    return {"seed": seed, "frames": n, "frames_with_face": int(found.sum()), "neutral_frames": int(neutral.sum()),
            "driver_beta_norm": float(np.linalg.norm(driver_beta)),
            "neutral": {"mouth_corner_mm": q(err["mouth_corners"], neutral), "lips_mm": q(err["lips"], neutral),
                        "psi_rms": q(psi_err, neutral)},
            "expressive": {"mouth_corner_mm": q(err["mouth_corners"], active), "lips_mm": q(err["lips"], active),
                           "psi_rms": q(psi_err, active)},
            "identity": trk.identity.report}


def run_expression_bench(drivers: int = 3, model_name: str = DEFAULT_MODEL, spread: float = 1.0,
                         max_frames: int | None = None) -> dict:
    """Run :func:`bench_driver` for ``drivers`` seeded identities against one avatar."""
    check_number(drivers, "--drivers", 1, 50, integer=True)
    check_number(spread, "--spread", 0.0, 3.0)
    model = resolve_model(model_name)
    avatar = random_identity(model, AVATAR_SEED, spread)
    rows = []
    with tempfile.TemporaryDirectory(prefix="headcast-bench-expression-") as tmp:
        for seed in range(int(drivers)):
            logger.info(f"bench expression: driver {seed + 1}/{drivers}")
            rows.append(bench_driver(model, random_identity(model, seed, spread), avatar, seed, Path(tmp), max_frames))
    return {"model": model.name, "machine": machine(), "spread": spread, "avatar_seed": AVATAR_SEED, "drivers": rows}


def markdown(res: dict) -> str:
    """The result table."""
    lines = [f"Expression transfer, model `{res['model']}`, synthetic drivers (identity spread {res['spread']}) "
             "playing the built-in motion, avatar of another identity; millimetres on the avatar.", "",
             "| driver | neutral frames | neutral: mouth corners mean / max mm | neutral: lips mean mm | "
             "expressive: mouth corners mean / p95 mm | expressive: lips mean mm | psi RMS neutral / expressive |",
             "|---|---|---|---|---|---|---|"]
    for r in res["drivers"]:
        n, e = r["neutral"], r["expressive"]
        g = lambda d, k: d.get(k, float("nan"))  # noqa: E731
        lines.append(f"| {r['seed']} | {r['neutral_frames']} | {g(n['mouth_corner_mm'], 'mean'):.2f} / "
                     f"{g(n['mouth_corner_mm'], 'max'):.2f} | {g(n['lips_mm'], 'mean'):.2f} | "
                     f"{g(e['mouth_corner_mm'], 'mean'):.2f} / {g(e['mouth_corner_mm'], 'p95'):.2f} | "
                     f"{g(e['lips_mm'], 'mean'):.2f} | {g(n['psi_rms'], 'mean'):.3f} / {g(e['psi_rms'], 'mean'):.3f} |")
    return "\n".join(lines)
