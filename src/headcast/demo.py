"""``headcast demo``: every stage that exists, on a synthetic subject made on the spot.

out/input/           the synthetic RGB-D frame (layout of real captures) and its ground truth; with
                     ``--sweep N``, N views of the subject over +-60 degrees (``headcast synth --sweep``)
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
             sweep: int | None = None, force: bool = False) -> dict:
    """Make, reconstruct and measure a synthetic subject; returns the headline figures. ``sweep``: that many
    views fitted as one head (the sweep path, 2..100) instead of one frame (None); ``force`` replaces an
    earlier demo in ``out``. The options, ``out`` and ``video`` are checked before the work."""
    from headcast.animate.video import video_info
    from headcast.core.errors import HeadcastError
    from headcast.io.validate import check_number

    check_number(seed, "--seed", 0, None, integer=True)
    if sweep is not None and not (isinstance(sweep, int) and 2 <= sweep <= 100):
        raise HeadcastError(f"--sweep must be 2..100 views, not {sweep}")
    check_output_dir(out, "demo", force=force, inputs=(video,))  # refuse before the work
    info = video_info(video) if video is not None else None  # refused before the work, read once
    t0 = time.perf_counter()
    model = resolve_model(model_spec)
    logger.info(f"demo: model '{model.name}' ({model.n_vertices} vertices, {model.n_shape} identity and "
                f"{model.n_expr} expression components)")
    with staged_dir(out, "demo", force=force, inputs=(video,)) as tmp:
        rec = _reconstruct_sweep(model, tmp, seed, sweep) if sweep is not None else _reconstruct(model, tmp, seed)
        tex, anim = _texture_and_animate(model, tmp, out, video, info)
    logger.info(f"demo: outputs in {out}/: input/ (synthetic RGB-D + ground truth), reconstruction/ (mesh.obj, "
                f"mesh_textured.obj, albedo.png, params.json, fit_report.json, overlay.png, render_vs_photo.png), "
                f"animation/ (animation.mp4, frames.jsonl), head.glb; total {time.perf_counter() - t0:.0f} s")
    logger.info(f"demo: look at the head in a browser: headcast view {out / 'head.glb'}")
    figures = {k: rec.report[k] for k in ("ground_truth_mm", "point_to_mesh_mm", "registered_points_to_mesh_mm")
               if k in rec.report}
    return {**figures, "loss4": tex["loss4"],
            "animation": {k: anim.get(k) for k in ("frames", "share_under_threshold", "fps")}}


def _reconstruct(model, tmp: Path, seed: int):
    """Render subject ``seed`` into ``tmp/input/frame-000`` and reconstruct it into ``tmp/reconstruction``,
    measured against its ground truth."""
    from headcast.fit.reconstruct import reconstruct_frame
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.synth import default_intrinsics, random_subject, render_rgbd, write_sample

    subject = random_subject(model, seed)
    frame = render_rgbd(model, subject, default_intrinsics(640, 480), profile="truedepth", seed=seed)
    write_sample(frame, subject, model, tmp / "input", prefix="frame-000")
    logger.info(f"demo: synthetic subject {seed} (yaw {subject.info.get('yaw_deg', 0):+.0f} deg, "
                f"TrueDepth-like depth noise)")
    rgbd = load_rgbd(str(tmp / "input" / "frame-000"), rotate=0)
    rec = reconstruct_frame(rgbd, model, tmp / "reconstruction", truth=frame.vertices)
    v, s = rec.report["ground_truth_mm"]["vertex"], rec.report["ground_truth_mm"]["surface"]
    pm = rec.report["point_to_mesh_mm"]
    logger.info(f"demo: reconstructed in {rec.report['seconds_fit']:.1f} s; against the ground truth over the "
                f"face: vertex error median {v['median']:.2f} mm (p95 {v['p95']:.2f}), surface error median "
                f"{s['median']:.2f} mm; face points to mesh median {pm['median']:.2f} mm")
    return rec


def _reconstruct_sweep(model, tmp: Path, seed: int, views: int):
    """Render ``views`` views of subject ``seed`` into ``tmp/input`` and fit one head to them into
    ``tmp/reconstruction`` (the sweep path of ``headcast reconstruct FOLDER``)."""
    from headcast.fit.sweep import reconstruct_sweep
    from headcast.synth.sweep import synth_sweep

    synth_sweep(model, tmp / "input", n=views, seed=seed)
    logger.info(f"demo: synthetic subject {seed} from {views} views over +-60 deg (TrueDepth-like depth noise)")
    rec, sw = reconstruct_sweep([tmp / "input"], model, tmp / "reconstruction", rotate=0)
    pm = rec.report["registered_points_to_mesh_mm"]
    logger.info(f"demo: {len(sw.used)} views fitted as one head in {rec.report['seconds_fit']:.1f} s; registered "
                f"points to the mesh: median {pm['median']:.2f} mm (p95 {pm['p95']:.2f})")
    return rec


def _texture_and_animate(model, tmp: Path, out: Path, video: Path | None, info=None) -> tuple[dict, dict]:
    """Texture ``tmp/reconstruction``, animate it into ``tmp/animation`` and export ``tmp/head.glb``
    (``tmp`` is the staging folder of ``out``; ``info``: ``video``'s header, read by the caller). The texture is
    made in a thread while the built-in motion (or ``video``) is rendered and tracked, which need only the fitted
    shape; the animation's video waits for the texture (:func:`headcast.animate.animate`'s ``texture_wait``)."""
    import contextlib
    import tempfile

    from headcast.animate import animate
    from headcast.animate.pipeline import render_builtin_motion
    from headcast.core.threads import Job, one_blas_thread
    from headcast.export.gltf import export_glb
    from headcast.texture import texture_reconstruction

    recon = tmp / "reconstruction"
    # one BLAS thread throughout: OpenBLAS's fork handler can hang when its pool works as ffmpeg starts
    with tempfile.TemporaryDirectory(prefix="headcast-motion-") as motion_dir, one_blas_thread():
        texture = Job(lambda: texture_reconstruction(recon, model=model.name), name="texture")
        try:
            truth = None
            if video is None:
                video = Path(motion_dir) / "builtin_motion.mp4"
                logger.info("demo: rendering the built-in motion (7 s) while the texture is made")
                truth = render_builtin_motion(recon, video)
            anim = animate(recon, video, tmp / "animation", copy_input=truth is not None, truth=truth,
                           texture_wait=texture.result, info=info)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                texture.result()
            raise
        tex = texture.result()
    logger.info(f"demo: textured: Loss4 {tex['loss4']:.4f} (lighting: 27 SH numbers, albedo.png)")
    glb = export_glb(recon, tmp / "animation", tmp / "head.glb")
    logger.info(f"demo: exported {out / 'head.glb'} ({glb.stat().st_size / 1e6:.1f} MB)")
    return tex, anim
