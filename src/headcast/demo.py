"""``headcast demo``: every stage that exists, on a synthetic subject made on the spot.

out/input/           the synthetic RGB-D frame (layout of real captures) and its ground truth
out/reconstruction/  the fitted head (``headcast reconstruct`` outputs) with its texture
out/animation/       the head driven by the built-in motion (or ``--video``)
out/head.glb         textured, rigged, animated glTF
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from headcast.io.outputs import staged_output
from headcast.model.registry import resolve_model


def run_demo(out: Path, model_spec: str = "ict", seed: int = 0, video: Path | None = None,
             progress: Callable[[str], None] = print) -> dict:
    """Make, reconstruct and measure a synthetic subject; returns the headline figures."""
    from headcast.animate import animate, animate_builtin
    from headcast.bench.reconstruct import synthetic_errors
    from headcast.export.gltf import export_glb
    from headcast.fit.reconstruct import fit_observation, make_fitter, write_reconstruction
    from headcast.preprocess.preprocess import preprocess
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.synth import default_intrinsics, random_subject, render_rgbd, write_sample
    from headcast.texture import texture_reconstruction

    t0 = time.perf_counter()
    model = resolve_model(model_spec)
    progress(f"demo: model '{model.name}' ({model.n_vertices} vertices, {model.n_shape} identity and "
             f"{model.n_expr} expression components)")
    with staged_output(out) as tmp:
        subject = random_subject(model, seed)
        frame = render_rgbd(model, subject, default_intrinsics(640, 480), profile="truedepth", seed=seed)
        write_sample(frame, subject, model, tmp / "input", prefix="frame-000")
        progress(f"demo: synthetic subject {seed} (yaw {subject.info.get('yaw_deg', 0):+.0f} deg, "
                 f"TrueDepth-like depth noise) -> {out / 'input'}")
        rgbd = load_rgbd(str(tmp / "input" / "frame-000"), rotate=0)
        obs = preprocess(rgbd, "mediapipe", progress=lambda s: progress(f"demo: {s}"))
        rec = fit_observation(obs, make_fitter(model), "full")
        errors = synthetic_errors(model, rec.vertices, frame.vertices)
        rec.report["ground_truth_mm"] = errors
        write_reconstruction(tmp / "reconstruction", obs, rec, model)
        v, s = errors["vertex"], errors["surface"]
        pm = rec.report["point_to_mesh_mm"]
        progress(f"demo: reconstructed in {rec.report['seconds_fit']:.1f} s; against the ground truth over the "
                 f"face: vertex error median {v['median']:.2f} mm (p95 {v['p95']:.2f}), surface error median "
                 f"{s['median']:.2f} mm; face points to mesh median {pm['median']:.2f} mm")
        tex = texture_reconstruction(tmp / "reconstruction", model=model.name, progress=_prefixed(progress))
        progress(f"demo: textured: Loss4 {tex['loss4']:.4f} (lighting: 27 SH numbers, albedo.png)")
        if video is None:
            anim = animate_builtin(tmp / "reconstruction", tmp / "animation", progress=_prefixed(progress))
        else:
            anim = animate(tmp / "reconstruction", video, tmp / "animation", progress=_prefixed(progress))
        glb = export_glb(tmp / "reconstruction", tmp / "animation", tmp / "head.glb")
        progress(f"demo: exported {out / 'head.glb'} ({glb.stat().st_size / 1e6:.1f} MB)")
    v, s = errors["vertex"], errors["surface"]
    progress(f"demo: outputs in {out}/: input/ (synthetic RGB-D + ground truth), reconstruction/ (mesh.obj, "
             f"mesh_textured.obj, albedo.png, params.json, fit_report.json, overlay.png, render_vs_photo.png), "
             f"animation/ (animation.mp4, frames.jsonl), head.glb; total {time.perf_counter() - t0:.0f} s")
    progress(f"demo: look at the head in a browser: headcast view {out / 'head.glb'}")
    return {"errors_mm": errors, "point_to_mesh_mm": pm, "loss4": tex["loss4"],
            "animation": {k: anim.get(k) for k in ("frames", "share_under_threshold", "fps")}}


def _prefixed(progress: Callable[[str], None]) -> Callable[[str], None]:
    return lambda msg: progress(f"demo: {msg}")
