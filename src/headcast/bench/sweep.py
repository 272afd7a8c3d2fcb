"""Sweep benchmark: one head from many frames against one frame, on synthetic sweeps with ground truth and
on the real TrueDepth sweep.

Synthetic: each subject turns its head over +-``yaw_range`` degrees in ``views`` views (TrueDepth noise, a
``bump_mm`` bump beyond the model on the left cheek; :mod:`headcast.synth.sweep`). Errors in millimetres:
- whole head: ground-truth vertices within 150 mm of the nose tip to the fitted surface, and fitted vertices
  within 150 mm of the fitted nose tip to the ground-truth surface; median / mean / p95;
- face: ground-truth face-region vertices to the fitted surface (as ``bench reconstruct``'s ``surface``);
for the single frontal frame (its own camera), the sweep without and with the detail layer (first frame's
camera); per-frame pose error against the ground truth (degrees, and mm at the head's centre).
Real: frames registered, registered points to the mesh, time, and a picture of the head from the left,
the front, the right and above beside the nearest real frames.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from headcast.bench import finish, machine, truedepth_folder
from headcast.bench.sweep_views import seen_shares, views_picture
from headcast.core.scene import closest_points_on_mesh
from headcast.fit.detail import detailed_vertices, fit_offsets
from headcast.fit.evaluate import error_stats
from headcast.fit.reconstruct import reconstruct_frame
from headcast.fit.sweep import SweepConfig, reconstruct_sweep
from headcast.io.validate import check_number
from headcast.model.head_model import HeadModel
from headcast.model.layer import HeadLayer
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.preprocess.rgbd import load_rgbd
from headcast.synth import read_sample
from headcast.synth.sweep import sweep_yaws, synth_sweep, true_poses
from headcast.texture.pipeline import texture_reconstruction

logger = logging.getLogger(__name__)

NOSE_TIP = 30        # iBUG-68 nose tip
HEAD_RADIUS = 0.15   # metres around the nose tip: the whole head
RIGID_RADIUS = 0.09  # metres around the nose tip: the vertices that turn rigidly with the head (no neck)


def head_errors(model: HeadModel, fitted: np.ndarray, truth: np.ndarray) -> dict:
    """Whole-head errors (mm) both ways and the face error of fitted (V, 3) against truth (V, 3), one frame."""
    f = model.faces
    gt_nose, fit_nose = model.landmark_vertices(truth)[NOSE_TIP], model.landmark_vertices(fitted)[NOSE_TIP]
    gt_pts = truth[np.linalg.norm(truth - gt_nose, axis=1) < HEAD_RADIUS]
    fit_pts = fitted[np.linalg.norm(fitted - fit_nose, axis=1) < HEAD_RADIUS]
    to_fit = closest_points_on_mesh(fitted, f, gt_pts)[2] * 1000
    to_gt = closest_points_on_mesh(truth, f, fit_pts)[2] * 1000
    face = closest_points_on_mesh(fitted, f, truth[model.masks["face"]])[2] * 1000
    return {"gt_to_fitted": error_stats(to_fit), "fitted_to_gt": error_stats(to_gt), "face": error_stats(face)}


def pose_errors(model: HeadModel, sw, truths: list[np.ndarray]) -> list[dict]:
    """Per registered view: rotation (deg) and head-centre (mm) error of its head-to-camera transform."""
    base = truths[sw.first]
    rigid = np.flatnonzero(np.linalg.norm(base - model.landmark_vertices(base)[NOSE_TIP], axis=1) < RIGID_RADIUS)
    gt = true_poses([base] + list(truths), rigid)[1:]
    centre = base[rigid].mean(0)
    out = []
    for k, A in enumerate(sw.poses):
        if A is None:
            continue
        E = np.linalg.inv(A)
        deg = np.degrees(Rotation.from_matrix(E[:3, :3].T @ gt[k][:3, :3]).magnitude())
        mm = np.linalg.norm((E[:3, :3] @ centre + E[:3, 3]) - (gt[k][:3, :3] @ centre + gt[k][:3, 3])) * 1000
        out.append({"view": k, "deg": float(deg), "mm": float(mm)})
    return out


def run_subject(model: HeadModel, seed: int, views: int, yaw_range: float, bump_mm: float, noise: str,
                size: tuple[int, int], max_frames: int, work: Path) -> dict:
    """One synthetic subject: the frontal frame alone and the sweep, with and without detail."""
    frames = work / f"subject-{seed}"
    synth_sweep(model, frames, n=views, seed=seed, yaw_range_deg=yaw_range, profile=noise, width=size[0],
                height=size[1], bump_mm=bump_mm)
    truths = [read_sample(frames, f"frame-{k:03d}")["gt"]["vertices"] for k in range(views)]
    k0 = int(np.argmin(np.abs(sweep_yaws(views, yaw_range))))
    t0 = time.perf_counter()
    single = reconstruct_frame(load_rgbd(frames / f"frame-{k0:03d}"), model, work / f"single-{seed}")
    t1 = time.perf_counter()
    rec, sw = reconstruct_sweep([frames], model, work / f"sweep-{seed}", sweep=SweepConfig(max_frames=max_frames))
    t2 = time.perf_counter()
    plain = rec.params.vertices(HeadLayer(model, dtype=torch.float64))
    truth = truths[sw.first]
    poses = pose_errors(model, sw, truths)
    # the detail layer on the frontal frame alone: its own head points (the registration's, in its camera)
    offsets, _ = fit_offsets(model, single.params, single.vertices, sw.registered[k0].cloud)
    out = {"seed": seed, "single": head_errors(model, single.vertices, truths[k0]),
           "single_detail": head_errors(model, detailed_vertices(model, single.params, offsets), truths[k0]),
           "sweep": head_errors(model, plain, truth), "sweep_detail": head_errors(model, rec.vertices, truth),
           "pose_deg_max": max(p["deg"] for p in poses), "pose_mm_max": max(p["mm"] for p in poses),
           "pose_deg_median": float(np.median([p["deg"] for p in poses])),
           "pose_mm_median": float(np.median([p["mm"] for p in poses])),
           "poses": poses, "registered": sum(p is not None for p in sw.poses), "views": views,
           "seconds_single": t1 - t0, "seconds_sweep": t2 - t1}
    logger.info(f"  subject {seed}: whole head mean {out['single']['gt_to_fitted']['mean']:.2f} (1 frame) -> "
                f"{out['sweep']['gt_to_fitted']['mean']:.2f} (sweep) -> {out['sweep_detail']['gt_to_fitted']['mean']:.2f}"
                f" mm (+detail); pose error up to {out['pose_deg_max']:.2f} deg / {out['pose_mm_max']:.2f} mm")
    return out


def run_real(model: HeadModel, folder: Path, work: Path, max_frames: int, figures: Path | None) -> dict:
    """The real TrueDepth sweep: registration, points to mesh, time; the views picture."""
    t0 = time.perf_counter()
    rec, sw = reconstruct_sweep([folder], model, work / "real", sweep=SweepConfig(max_frames=max_frames))
    secs = time.perf_counter() - t0
    out = {"frames": len(sw.frames), "registered": sum(p is not None for p in sw.poses), "used": len(sw.used),
           "registered_points_to_mesh_mm": rec.report["registered_points_to_mesh_mm"], "seconds": secs,
           "detail": rec.report.get("detail")}
    t1 = time.perf_counter()
    tex = texture_reconstruction(work / "real", model=model)
    out.update(seconds_texture=time.perf_counter() - t1, texels_seen_sweep=tex.get("texels_seen_sweep"),
               head_texels_seen_sweep=tex.get("head_texels_seen_sweep"),
               texels_seen_first_frame=tex["sweep_seen"][0]["seen"])
    out["seen_shares"] = seen_shares(model, work / "real")
    if figures is not None:

        figures.mkdir(parents=True, exist_ok=True)
        out["figure"] = str(views_picture(model, work / "real", figures / "sweep-real.png"))
    logger.info(f"  real sweep: {out['registered']} of {out['frames']} registered, points to mesh median "
                f"{out['registered_points_to_mesh_mm']['median']:.2f} mm, {secs:.0f} s")
    return out


def _agg(rs: list[dict], key: str, part: str) -> dict:
    return {s: float(np.mean([r[key][part][s] for r in rs])) for s in ("median", "mean", "p95")}


def run_sweep_bench(n: int = 10, views: int = 11, yaw_range: float = 60.0, bump_mm: float = 2.0,
                    noise: str = "truedepth", size: tuple[int, int] = (320, 240), model_spec: str = DEFAULT_MODEL,
                    seed: int = 2000, max_frames: int = SweepConfig.max_frames, samples: Path | None = None,
                    figures: Path | None = None, out: Path | None = None, real: bool = True) -> dict:
    """Run the benchmark (module docstring); log a markdown summary; return (and write to ``out``) the figures."""
    check_number(n, "--n", 0, None, integer=True)  # 0: the real sweep alone
    check_number(seed, "--seed", 0, None, integer=True)
    check_number(max_frames, "--max-frames", 1, 1000, integer=True)
    model = resolve_model(model_spec)
    result = {"model": model.name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "views": views,
              "yaw_range_deg": yaw_range, "bump_mm": bump_mm, "noise": noise, "subjects": [], "real": None}
    with tempfile.TemporaryDirectory(prefix="headcast-bench-sweep-") as tmp:
        for s in range(seed, seed + n):
            result["subjects"].append(run_subject(model, s, views, yaw_range, bump_mm, noise, size, max_frames,
                                                  Path(tmp)))
        folder = truedepth_folder(samples)
        if real and folder.is_dir():
            result["real"] = run_real(model, folder, Path(tmp), max_frames, figures)
    rs = result["subjects"]
    result["summary"] = {k: {"whole_head": _agg(rs, k, "gt_to_fitted"), "fitted_to_gt": _agg(rs, k, "fitted_to_gt"),
                             "face": _agg(rs, k, "face")} for k in ("single", "single_detail", "sweep", "sweep_detail")}
    result["summary"]["pose"] = {"deg_max": max(r["pose_deg_max"] for r in rs), "mm_max": max(r["pose_mm_max"] for r in rs),
                                 "deg_median": float(np.median([p["deg"] for r in rs for p in r["poses"]])),
                                 "mm_median": float(np.median([p["mm"] for r in rs for p in r["poses"]]))}
    return finish(out, "sweep", result, summary_markdown(result))


def summary_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"Model `{result['model']}`; {len(result['subjects'])} synthetic subjects, {result['views']} views over "
             f"+-{result['yaw_range_deg']:g} deg, {result['noise']} noise, a {result['bump_mm']:g} mm bump; "
             f"{result['machine']}; {result['date']}.", "",
             "| fit | whole head GT->fit median / mean / p95 (mm) | fit->GT median / mean / p95 (mm) | face median (mm) |",
             "|---|---|---|---|"]
    for k, name in (("single", "1 frame (frontal)"), ("single_detail", "1 frame + detail"), ("sweep", "sweep"),
                    ("sweep_detail", "sweep + detail")):
        a, b = s[k]["whole_head"], s[k]["fitted_to_gt"]
        lines.append(f"| {name} | {a['median']:.2f} / {a['mean']:.2f} / {a['p95']:.2f} | {b['median']:.2f} / "
                     f"{b['mean']:.2f} / {b['p95']:.2f} | {s[k]['face']['median']:.2f} |")
    lines += ["", f"Pose error per frame: median {s['pose']['deg_median']:.2f} deg, {s['pose']['mm_median']:.2f} mm; "
                  f"worst {s['pose']['deg_max']:.2f} deg, {s['pose']['mm_max']:.2f} mm."]
    r = result["real"]
    if r:
        pm, sh = r["registered_points_to_mesh_mm"], r["seen_shares"]
        lines += [f"Real TrueDepth sweep: {r['registered']} of {r['frames']} frames registered, {r['used']} fitted; "
                  f"registered points to mesh median {pm['median']:.2f} mm, p95 {pm['p95']:.2f} mm; "
                  f"{r['seconds']:.0f} s (shared machine); texels seen {r['head_texels_seen_sweep']:.0%} of the head "
                  f"surface's, {r['texels_seen_sweep']:.0%} of the atlas's (the first frame alone: "
                  f"{r['texels_seen_first_frame']:.0%} of the atlas's). View confidence alone (no shading trust), head "
                  f"surface / atlas: the sweep's frames {sh['head_sweep_with_depth']:.0%} / {sh['sweep_with_depth']:.0%}, "
                  f"its cameras on the mesh without the depth check {sh['head_sweep_mesh_only']:.0%} / "
                  f"{sh['sweep_mesh_only']:.0%}, {sh['n_sphere']} cameras all around {sh['head_all_around']:.0%} / "
                  f"{sh['all_around']:.0%}: the sweep sees {sh['head_sweep_with_depth'] / sh['head_all_around']:.0%} "
                  f"of the head surface any camera could."]
    return "\n".join(lines)
