"""``headcast demo``: every stage that exists, on a synthetic subject made on the spot.

out/input/           the synthetic RGB-D frame (layout of real captures) and its ground truth
out/reconstruction/  the fitted head (``headcast reconstruct`` outputs) with its texture
out/animation/       the head driven by the built-in motion (or ``--video``)
out/head.glb         textured, rigged, animated glTF

Progress lines go to this module's logger (INFO); the demo's own start with ``demo:`` (the command line
puts that in front of the stages' lines too).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from headcast.io.outputs import check_output_dir, staged_dir
from headcast.model.registry import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)


def run_demo(out: Path, model_spec: str = DEFAULT_MODEL, seed: int = 0, video: Path | None = None,
             force: bool = False) -> dict:
    """Make, reconstruct and measure a synthetic subject; returns the headline figures. ``force`` replaces
    an earlier demo in ``out``."""
    from headcast.synth import default_intrinsics, random_subject, render_rgbd, write_sample

    check_output_dir(out, "demo", force=force, inputs=(video,))  # refuse before the work
    t0 = time.perf_counter()
    model = resolve_model(model_spec)
    logger.info(f"demo: model '{model.name}' ({model.n_vertices} vertices, {model.n_shape} identity and "
                f"{model.n_expr} expression components)")
    with staged_dir(out, "demo", force=force, inputs=(video,)) as tmp:
        subject = random_subject(model, seed)
        frame = render_rgbd(model, subject, default_intrinsics(640, 480), profile="truedepth", seed=seed)
        write_sample(frame, subject, model, tmp / "input", prefix="frame-000")
        logger.info(f"demo: synthetic subject {seed} (yaw {subject.info.get('yaw_deg', 0):+.0f} deg, "
                    f"TrueDepth-like depth noise) -> {out / 'input'}")
        rec = _reconstruct(model, tmp, frame.vertices)
        tex, anim = _texture_and_animate(model, tmp, out, video)
    errors, pm = rec.report["ground_truth_mm"], rec.report["point_to_mesh_mm"]
    logger.info(f"demo: outputs in {out}/: input/ (synthetic RGB-D + ground truth), reconstruction/ (mesh.obj, "
                f"mesh_textured.obj, albedo.png, params.json, fit_report.json, overlay.png, render_vs_photo.png), "
                f"animation/ (animation.mp4, frames.jsonl), head.glb; total {time.perf_counter() - t0:.0f} s")
    logger.info(f"demo: look at the head in a browser: headcast view {out / 'head.glb'}")
    return {"errors_mm": errors, "point_to_mesh_mm": pm, "loss4": tex["loss4"],
            "animation": {k: anim.get(k) for k in ("frames", "share_under_threshold", "fps")}}


def _reconstruct(model, tmp: Path, truth):
    """Reconstruct ``tmp/input/frame-000`` into ``tmp/reconstruction``, measured against ``truth`` (V, 3)."""
    from headcast.fit.reconstruct import reconstruct_frame
    from headcast.preprocess.rgbd import load_rgbd

    rgbd = load_rgbd(str(tmp / "input" / "frame-000"), rotate=0)
    rec = reconstruct_frame(rgbd, model, tmp / "reconstruction", truth=truth)
    v, s = rec.report["ground_truth_mm"]["vertex"], rec.report["ground_truth_mm"]["surface"]
    pm = rec.report["point_to_mesh_mm"]
    logger.info(f"demo: reconstructed in {rec.report['seconds_fit']:.1f} s; against the ground truth over the "
                f"face: vertex error median {v['median']:.2f} mm (p95 {v['p95']:.2f}), surface error median "
                f"{s['median']:.2f} mm; face points to mesh median {pm['median']:.2f} mm")
    return rec


def _texture_and_animate(model, tmp: Path, out: Path, video: Path | None) -> tuple[dict, dict]:
    """Texture ``tmp/reconstruction``, animate it into ``tmp/animation`` and export ``tmp/head.glb``
    (``tmp`` is the staging folder of ``out``)."""
    from headcast.animate import animate, animate_builtin
    from headcast.export.gltf import export_glb
    from headcast.texture import texture_reconstruction

    tex = texture_reconstruction(tmp / "reconstruction", model=model.name)
    logger.info(f"demo: textured: Loss4 {tex['loss4']:.4f} (lighting: 27 SH numbers, albedo.png)")
    if video is None:
        anim = animate_builtin(tmp / "reconstruction", tmp / "animation")
    else:
        anim = animate(tmp / "reconstruction", video, tmp / "animation")
    glb = export_glb(tmp / "reconstruction", tmp / "animation", tmp / "head.glb")
    logger.info(f"demo: exported {out / 'head.glb'} ({glb.stat().st_size / 1e6:.1f} MB)")
    return tex, anim
