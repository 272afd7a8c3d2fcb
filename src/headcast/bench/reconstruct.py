"""Reconstruction benchmark: every method on the same synthetic subjects, and the real TrueDepth frames.

Synthetic: random identity, expression and head pose (yaw within +-30 degrees) of the model,
ray-cast with a depth profile; each method fits the same preprocessed frame (real MediaPipe
landmarks on the rendered image). Errors are per vertex against the ground-truth mesh in camera
space, over the model's 'face' region, in millimetres:
- ``vertex``: distance from each fitted face vertex to the same vertex of the ground truth;
- ``surface``: distance from each ground-truth face vertex to the fitted surface (no sliding term).
Real: the median distance of the face points to the fitted mesh, and one overlay per frame.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from headcast.bench import REAL_FRAMES, finish, machine, truedepth_folder
from headcast.core.errors import HeadcastError
from headcast.fit.config import FitConfig
from headcast.fit.evaluate import synthetic_errors
from headcast.fit.reconstruct import fit_observation, make_fitter
from headcast.fit.rgbd_fit import METHODS
from headcast.io.validate import check_number
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.preprocess.preprocess import preprocess
from headcast.preprocess.rgbd import RGBDFrame
from headcast.synth import default_intrinsics, random_subject, render_rgbd

logger = logging.getLogger(__name__)


def run_synthetic(model, n: int, noise: str, methods: list[str], seed: int, fit_seed: int = 0) -> dict:
    """Per-method error statistics (medians over subjects of per-subject medians, etc.) and timings.
    ``fit_seed``: the fit's face-point subsampling seed (:attr:`FitConfig.seed`)."""
    K = default_intrinsics(640, 480)
    fitter = make_fitter(model, FitConfig(seed=fit_seed))
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    skipped = 0
    for i in range(n):
        subj = random_subject(model, seed + i)
        fr = render_rgbd(model, subj, K, profile=noise, seed=seed + i)
        frame = RGBDFrame(fr.color, fr.depth, K)
        try:
            obs = preprocess(frame, "mediapipe", seed=seed + i)
        except HeadcastError as e:  # a detector miss (no face, no depth around it) is counted, not hidden
            skipped += 1
            logger.info(f"  subject {seed + i}: skipped ({e})")
            continue
        for m in methods:
            t0 = time.perf_counter()
            rec = fit_observation(obs, fitter, m)
            secs = time.perf_counter() - t0
            err = synthetic_errors(model, rec.vertices, fr.vertices)
            rows[m].append({"seed": seed + i, "seconds": secs, **err})
            logger.info(f"  subject {seed + i} {noise:9s} {m:13s} vertex median {err['vertex']['median']:.2f} mm, "
                        f"surface median {err['surface']['median']:.2f} mm, {secs:.1f} s")
    out = {"noise": noise, "n": n, "skipped": skipped, "methods": {}}
    for m, rs in rows.items():
        if not rs:
            continue
        agg = lambda kind, stat: float(np.median([r[kind][stat] for r in rs]))  # noqa: E731
        out["methods"][m] = {
            "vertex_mm": {s: agg("vertex", s) for s in ("median", "mean", "p95")},
            "surface_mm": {s: agg("surface", s) for s in ("median", "mean", "p95")},
            "seconds_per_frame": float(np.mean([r["seconds"] for r in rs])),
            "subjects": rs,
        }
    return out


def run_real(model, folder: Path, figures: Path | None, fit_seed: int = 0) -> list[dict]:
    """The three TrueDepth mannequin frames: point-to-mesh distances and an overlay figure each
    (``fit_seed`` as in :func:`run_synthetic`)."""
    from headcast.core.camera import project
    from headcast.fit.reconstruct import landmark_picture
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.render import images

    fitter = make_fitter(model, FitConfig(seed=fit_seed))
    out = []
    for name in REAL_FRAMES:
        frame = load_rgbd(str(folder / name))
        obs = preprocess(frame, "mediapipe")
        t0 = time.perf_counter()
        rec = fit_observation(obs, fitter, "full")
        secs = time.perf_counter() - t0
        pm = rec.report["point_to_mesh_mm"]
        out.append({"frame": name, "rotation": frame.rotation, "face_points": pm["n_points"],
                    "point_to_mesh_mm": pm, "landmarks_3d_mm": rec.report["landmarks_3d_mm"]["mean"],
                    "seconds": secs, "paper_losses": rec.report["paper_losses"]})
        logger.info(f"  real {name}: point-to-mesh median {pm['median']:.2f} mm, p95 {pm['p95']:.2f} mm, {secs:.1f} s")
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
            hits, shaded = images.render_shaded(rec.vertices, model.faces, frame.K)
            lm = landmark_picture(obs, project(rec.landmarks, frame.K))
            ov = images.blend(frame.color, shaded, hits.hit, 0.6)
            res = images.depth_residual_image(frame.color, frame.depth, hits.depth,
                                              hits.hit & (frame.depth > 0))
            images.save_png(figures / f"reconstruct-{name}.png", images.side_by_side([lm, ov, res], height=480))
    return out


def run_reconstruct_bench(n: int = 20, noise: str = "none,truedepth", model_spec: str = DEFAULT_MODEL,
                          methods: list[str] | None = None, seed: int = 1000, out: Path | None = None,
                          samples: Path | None = None, figures: Path | None = None, fit_seed: int = 0) -> dict:
    """Run the benchmark (``methods`` default: every fit method); log a markdown summary; return (and
    write to ``out``) all figures. ``seed``: the first synthetic subject's; ``fit_seed``: which face points
    the fit subsamples (the benchmark's own noise: judge a fit change on several)."""
    check_number(n, "--n", 0, None, integer=True)  # 0: the real frames alone
    check_number(seed, "--seed", 0, None, integer=True)
    check_number(fit_seed, "--fit-seed", 0, None, integer=True)
    methods = methods or list(METHODS)
    model = resolve_model(model_spec)
    result = {"model": model.name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "synthetic": [],
              "real": [], "fit_seed": fit_seed}
    for nz in [x.strip() for x in noise.split(",") if x.strip()]:
        logger.info(f"synthetic subjects, depth noise '{nz}':")
        result["synthetic"].append(run_synthetic(model, n, nz, methods, seed, fit_seed))
    folder = truedepth_folder(samples)
    if folder.is_dir():
        logger.info("real TrueDepth frames:")
        result["real"] = run_real(model, folder, figures, fit_seed)
    else:
        logger.info(f"real frames skipped: {folder} is absent")
    return finish(out, "reconstruct", result, summary_markdown(result))


def summary_markdown(result: dict) -> str:
    lines = [f"Model `{result['model']}`; {result['machine']}; {result['date']}.", "",
             "| depth noise | method | vertex error median / mean / p95 (mm) | surface error median / mean / p95 (mm) "
             "| s per frame |", "|---|---|---|---|---|"]
    for syn in result["synthetic"]:
        for m, r in syn["methods"].items():
            v, s = r["vertex_mm"], r["surface_mm"]
            lines.append(f"| {syn['noise']} | {m} | {v['median']:.2f} / {v['mean']:.2f} / {v['p95']:.2f} | "
                         f"{s['median']:.2f} / {s['mean']:.2f} / {s['p95']:.2f} | {r['seconds_per_frame']:.1f} |")
    if result["real"]:
        lines += ["", "| real frame | face points | point-to-mesh median / mean / p95 (mm) | 3D landmark mean (mm) "
                  "| s |", "|---|---|---|---|---|"]
        for r in result["real"]:
            p = r["point_to_mesh_mm"]
            lines.append(f"| {r['frame']} | {r['face_points']} | {p['median']:.2f} / {p['mean']:.2f} / "
                         f"{p['p95']:.2f} | {r['landmarks_3d_mm']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
