"""The ``headcast`` command: a thin front end over the pipeline stages.

User errors end with one line on stderr and exit status 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from headcast import __version__
from headcast.core.errors import HeadcastError
from headcast.fit.config import FitConfig


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model
def cmd_model_build_ict(a: argparse.Namespace) -> None:
    from headcast.model.head_model import save_model
    from headcast.model.ict import build_ict_model
    from headcast.model.registry import model_path

    out = Path(a.out) if a.out else model_path("ict")
    if a.if_missing and out.is_file():
        from headcast.model.head_model import load_model
        from headcast.model.registry import is_current_ict

        if is_current_ict(load_model(out)):
            _say(f"headcast: default head model present: {out}")
            return
        _say(f"headcast: {out} was built by another headcast version; rebuilding it")
    t0 = time.perf_counter()
    model = build_ict_model(src=Path(a.src) if a.src else None)
    save_model(model, out)
    _say(f"headcast: wrote {out} ({model.n_vertices} vertices, {model.n_shape} identity, "
         f"{model.n_expr} expression components) in {time.perf_counter() - t0:.1f} s")


def cmd_model_import_flame(a: argparse.Namespace) -> None:
    from headcast.model.flame import import_flame
    from headcast.model.head_model import save_model
    from headcast.model.registry import model_path

    model = import_flame(Path(a.pkl), landmark_paths=[Path(p) for p in a.landmarks],
                         masks_path=Path(a.masks) if a.masks else None,
                         template_obj=Path(a.template_obj) if a.template_obj else None,
                         name=a.name)
    out = Path(a.out) if a.out else model_path(model.name)
    save_model(model, out)
    _say(f"headcast: wrote {out} ({model.name}: {model.n_vertices} vertices, "
         f"{'dynamic' if model.has_dynamic_contour else 'static'} contour)")


def cmd_model_info(a: argparse.Namespace) -> None:
    import json

    from headcast.model.registry import resolve_model

    m = resolve_model(a.model)
    info = {k: v for k, v in m.meta.items() if k not in ("attribution", "expression_names")}
    info.update(vertices=m.n_vertices, triangles=int(m.faces.shape[0]), n_shape=m.n_shape, n_expr=m.n_expr,
                joints=m.n_joints, dynamic_contour=m.has_dynamic_contour,
                masks={k: int(v.size) for k, v in m.masks.items()})
    print(json.dumps(info, indent=2))


def cmd_model_list(a: argparse.Namespace) -> None:
    from headcast.core.paths import models_dir

    for p in sorted(models_dir().glob("*.npz")):
        print(f"{p.stem}\t{p}")


# ---------------------------------------------------------------- synth
def cmd_synth(a: argparse.Namespace) -> None:
    from headcast.model.registry import resolve_model
    from headcast.synth import load_beta, parse_expressions, synth

    w, h = _parse_size(a.size)
    model = resolve_model(a.model)
    subject = {k: v for k, v in dict(yaw_deg=a.yaw, pitch_deg=a.pitch, roll_deg=a.roll, distance=a.distance,
                                     yaw_range_deg=a.yaw_range, skin_tone=a.skin_tone).items() if v is not None}
    if a.beta_file:
        subject["beta"] = load_beta(a.beta_file)
    if a.expression:
        subject["expression"] = parse_expressions(a.expression)
    paths = synth(model, Path(a.out), n=a.n, seed=a.seed, profile=a.noise, width=w, height=h,
                  hfov_deg=a.fov, background=not a.no_background, progress=_say, **subject)
    _say(f"headcast: wrote {len(paths)} synthetic RGB-D frame(s) to {a.out}")


def _parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise HeadcastError(f"--size must look like 640x480, not {s!r}") from None
    if not (32 <= w <= 8192 and 32 <= h <= 8192):
        raise HeadcastError(f"--size {s} is out of range (32..8192 pixels a side)")
    return w, h


# ---------------------------------------------------------------- reconstruct
def cmd_reconstruct(a: argparse.Namespace) -> None:
    from headcast.fit.reconstruct import fit_observation, make_fitter, write_reconstruction
    from headcast.model.registry import resolve_model
    from headcast.preprocess.preprocess import preprocess
    from headcast.preprocess.rgbd import load_rgbd

    t0 = time.perf_counter()
    warn = lambda m: _say(f"headcast: warning: {m}")  # noqa: E731
    frame = load_rgbd(a.color, a.depth, a.intrinsics, depth_scale=a.depth_scale, rotate=a.rotate,
                      method=a.landmarks, warn=warn)
    if frame.rotation:
        _say(f"headcast: turned the capture {frame.rotation} degrees clockwise to make the face upright")
    model = resolve_model(a.model)
    obs = preprocess(frame, a.landmarks, face=a.face, forehead=a.forehead, progress=_say, warn=warn,
                     hull_margin=a.hull_margin, seed=a.seed)
    cfg = FitConfig(w_beta=a.w_beta, w_psi=a.w_psi, grow_mm=a.grow_mm, seed=a.seed)
    fitter = make_fitter(model, cfg, progress=None if a.quiet else _say)
    rec = fit_observation(obs, fitter, a.method)
    rec.report["seconds_total"] = time.perf_counter() - t0
    write_reconstruction(Path(a.out), obs, rec, model)
    if a.texture:
        _texture(Path(a.out), a.albedo_model, a.texture_size, model.name, 50)
    pm = rec.report["point_to_mesh_mm"]
    _say(f"headcast: {a.method} fit in {rec.report['seconds_fit']:.1f} s; face points to mesh: median "
         f"{pm['median']:.2f} mm, p95 {pm['p95']:.2f} mm; 3D landmarks: mean "
         f"{rec.report['landmarks_3d_mm']['mean']:.1f} mm")
    pri = rec.report.get("priors")
    if pri and pri.get("sigma_mm") is not None:
        _say(f"headcast: shape priors for {pri['sigma_mm']:.2f} mm of depth noise and model mismatch "
             f"(w_beta {pri['w_beta']:.2g}, w_psi {pri['w_psi']:.2g})")
    _say(f"headcast: wrote {a.out}/ (params, mesh.obj/ply, fit_report.json, landmarks/overlay/depth_residual.png)")


# ---------------------------------------------------------------- texture
def _texture(recon: Path, albedo_model, size: int, model, n_components: int) -> None:
    from headcast.texture import texture_reconstruction

    rep = texture_reconstruction(recon, albedo_model=albedo_model, size=size, model=model,
                                 n_components=n_components, progress=_say)
    _say(f"headcast: textured {recon}: Loss4 {rep['loss4']:.4f}; albedo.png, mesh_textured.obj/.mtl, "
         f"lighting.json, render_vs_photo.png, texture_report.json")


def cmd_texture(a: argparse.Namespace) -> None:
    _texture(Path(a.recon_dir), a.albedo_model, a.size, a.model, a.n_components)


# ---------------------------------------------------------------- animate
def cmd_animate(a: argparse.Namespace) -> None:
    from headcast.animate import animate

    rep = animate(Path(a.recon_dir), Path(a.video), Path(a.out), model_spec=a.model, threshold=a.threshold,
                  max_iters=a.max_iters, max_frames=a.max_frames, write_video=not a.no_video, progress=_say)
    _say(f"headcast: wrote {a.out}/ ({rep.get('frames', '?')} frames)")


def cmd_bench_animate(a: argparse.Namespace) -> None:
    import json

    from headcast.bench.animate import markdown, run_animate_bench

    res = run_animate_bench(a.videos or None, _say, threshold=a.threshold, builtin=not a.no_builtin,
                            max_frames=a.max_frames)
    if a.json:
        print(json.dumps(res, indent=2, default=str))
    print(markdown(res))


def cmd_bench_texture(a: argparse.Namespace) -> None:
    from headcast.bench.texture import run_texture_bench

    run_texture_bench(n=a.n, seed=a.seed, geometry=a.geometry, model_spec=a.model, size=a.size,
                      albedo_model=a.albedo_model, real=not a.no_real, figures=Path(a.figures) if a.figures else None,
                      out=Path(a.out) if a.out else None, progress=_say)


# ---------------------------------------------------------------- bench
def cmd_bench_reconstruct(a: argparse.Namespace) -> None:
    from headcast.bench.reconstruct import run_reconstruct_bench

    run_reconstruct_bench(n=a.n, noise=a.noise, model_spec=a.model, methods=a.methods.split(","), seed=a.seed,
                          out=Path(a.out) if a.out else None, samples=Path(a.samples) if a.samples else None,
                          figures=Path(a.figures) if a.figures else None, progress=_say)


# ---------------------------------------------------------------- stream
def cmd_encode(a: argparse.Namespace) -> None:
    from headcast.stream.files import encode_file

    rep = encode_file(Path(a.anim_dir), a.profile, Path(a.out), key_path=a.key, recon_dir=Path(a.recon) if a.recon else None,
                      target_mm=a.target_mm, key_interval=a.key_interval, sender=a.sender)
    _say(f"headcast: wrote {a.out}: {_stream_summary(rep)}")


def cmd_decode(a: argparse.Namespace) -> None:
    from headcast.stream.files import decode_file

    rep = decode_file(Path(a.stream), Path(a.out), trust_key=a.trust, log=_say)
    _say(f"headcast: decoded into {a.out}/: {_stream_summary(rep)}")


def _stream_summary(rep: dict) -> str:
    keys = ("profile", "frames", "frame_payload_bytes_mean", "frame_bytes_mean", "kbit_s_total",
            "ratio_raw_256_total", "vertex_error_mm_mean")
    return ", ".join(f"{k} {rep[k]:.4g}" if isinstance(rep.get(k), float) else f"{k} {rep[k]}"
                     for k in keys if k in rep)


def cmd_send(a: argparse.Namespace) -> None:
    from headcast.stream.live import run_sender

    if (a.video is None) == (a.camera is None):
        raise HeadcastError("give exactly one of --video FILE or --camera N")
    run_sender(a.to, video=a.video, camera=a.camera, recon_dir=a.recon, key_path=a.key, sender=a.sender,
               profile=a.profile, max_frames=a.max_frames)


def cmd_receive(a: argparse.Namespace) -> None:
    from functools import partial

    from headcast.stream.live import run_receiver
    from headcast.view.live import LiveWeb

    if a.out is None and not a.web:
        raise HeadcastError("give --out FILE.mp4, --web, or both")
    run_receiver(a.listen, Path(a.out) if a.out else None, trust_path=a.trust, idle_timeout=a.idle_timeout,
                 size=a.size, max_lag=a.max_lag, web=partial(LiveWeb, a.web_port) if a.web else None)


def cmd_keygen(a: argparse.Namespace) -> None:
    from headcast.stream import auth

    priv, pub = auth.generate_key(a.out, overwrite=a.force)
    _say(f"headcast: private key {priv}, public key {pub} (fingerprint "
         f"{auth.fingerprint(auth.load_public_key(pub))}); give the public key to receivers (--trust)")


def cmd_bench_stream(a: argparse.Namespace) -> None:
    from headcast.bench.stream import run_stream_bench, summary_markdown

    res = run_stream_bench(Path(a.recon), Path(a.work), model_spec=a.model, live=not a.no_live, progress=_say)
    print(summary_markdown(res))


# ---------------------------------------------------------------- export / view
def cmd_export(a: argparse.Namespace) -> None:
    from headcast.export.gltf import export_glb

    out = export_glb(Path(a.result_dir), Path(a.anim) if a.anim else None, Path(a.out))
    _say(f"headcast: wrote {out} ({out.stat().st_size / 1e6:.1f} MB); look at it with: headcast view {out}")


def cmd_view(a: argparse.Namespace) -> None:
    from headcast.view import showing, wait_until_stopped

    with showing(Path(a.target), Path(a.anim) if a.anim else None, port=a.port) as (glb, url):
        print(f"headcast: showing {glb.name} at {url} (Ctrl-C to stop)", flush=True)  # a script may wait for it
        if a.open:
            import webbrowser

            webbrowser.open(url)
        wait_until_stopped()


def cmd_bench_render(a: argparse.Namespace) -> None:
    import json

    from headcast.bench.render import markdown, run

    res = run(a.size, a.frames, a.texture, a.model)
    if a.json:
        print(json.dumps(res, indent=2))
    print(markdown(res))


# ---------------------------------------------------------------- demo
def cmd_demo(a: argparse.Namespace) -> None:
    from headcast.demo import run_demo

    run_demo(Path(a.out), model_spec=a.model, seed=a.seed, video=Path(a.video) if a.video else None, progress=_say)


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headcast", description=(
        "An animatable 3D head from one RGB-D photo, driven by any video, on a CPU."))
    p.add_argument("--version", action="version", version=f"headcast {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pm = sub.add_parser("model", help="build, import and inspect head models")
    msub = pm.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    b = msub.add_parser("build-ict", help="convert ICT-FaceKit Light (MIT) into the default model 'ict'")
    b.add_argument("--src", help="local copy of the ICT-FaceKit repository (folder holding FaceXModel/); "
                                 "without it the pinned commit is downloaded")
    b.add_argument("--out", help="output .npz (default: the model directory's ict.npz)")
    b.add_argument("--if-missing", action="store_true", help="do nothing when the model exists")
    b.set_defaults(func=cmd_model_build_ict)
    f = msub.add_parser("import-flame", help="import an official FLAME pickle (2020, 2023, 2023 Open) safely")
    f.add_argument("pkl", help="generic_model.pkl, flame2023.pkl or flame2023_Open.pkl")
    f.add_argument("--landmarks", nargs="*", default=[], metavar="FILE",
                   help="flame_static_embedding.pkl, DECA landmark_embedding.npy, mediapipe_landmark_embedding.npz")
    f.add_argument("--masks", help="FLAME_masks.pkl (region masks); default: masks from geometry")
    f.add_argument("--template-obj", help="head_template.obj with FLAME's UV layout")
    f.add_argument("--name", help="model name (default from the file: flame2020, flame2023, flame2023_open)")
    f.add_argument("--out", help="output .npz (default: the model directory)")
    f.set_defaults(func=cmd_model_import_flame)
    i = msub.add_parser("info", help="print a model's sizes and metadata")
    i.add_argument("model", nargs="?", default="ict", help="name or .npz path (default: ict)")
    i.set_defaults(func=cmd_model_info)
    ls = msub.add_parser("list", help="list the models in the model directory")
    ls.set_defaults(func=cmd_model_list)

    s = sub.add_parser("synth", help="render synthetic RGB-D subjects with ground truth")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--model", default="ict", help="head model name or .npz (default: ict)")
    s.add_argument("--n", type=int, default=1, help="number of subjects (default: 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--noise", choices=("none", "truedepth", "zed2"), default="truedepth",
                   help="depth sensor profile (default: truedepth)")
    s.add_argument("--size", default="640x480", help="image size WxH (default: 640x480)")
    s.add_argument("--no-background", action="store_true", help="no wall and shoulders")
    s.add_argument("--fov", type=float, help="horizontal field of view in degrees (default 56, as TrueDepth)")
    s.add_argument("--yaw", type=float, help="head yaw in degrees (default: random)")
    s.add_argument("--pitch", type=float, help="head pitch in degrees (default: random)")
    s.add_argument("--roll", type=float, help="head roll in degrees (default: random)")
    s.add_argument("--yaw-range", type=float, help="random yaw within +-this many degrees (default 30)")
    s.add_argument("--distance", type=float, help="head distance in metres (default: random 0.35-0.6)")
    s.add_argument("--skin-tone", type=float, help="0 (light) .. 1 (dark) (default: random)")
    s.add_argument("--beta-file", help="identity: .npy, .json, or a params.npz / _gt.npz with 'beta'")
    s.add_argument("--expression", action="append", metavar="NAME=W",
                   help="expression weight by name or index, repeatable (default: random)")
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("reconstruct", help="fit a head to one RGB-D frame (the paper's three blocks)")
    r.add_argument("color", help="color image, or a frame prefix such as frame-050 (finds _color.png, "
                                 "_depth_mm.png, _intrinsics.json)")
    r.add_argument("depth", nargs="?", help="depth: uint16 PNG (mm), float32 NPY/TIFF/EXR (m), or a PLY point cloud")
    r.add_argument("--intrinsics", help="JSON with fx, fy, cx, cy, width, height")
    r.add_argument("--depth-scale", type=float, help="metres per depth unit (default 0.001 for PNG, 1 for float)")
    r.add_argument("--rotate", default="auto", help="auto|0|90|180|270: turn the capture clockwise (default auto)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--model", default="ict", help="head model name or .npz (default: ict)")
    r.add_argument("--method", default="full", choices=("full", "landmarks-3d", "rgb-2d"),
                   help="full (the paper), landmarks-3d or rgb-2d baselines (default: full)")
    r.add_argument("--landmarks", default="mediapipe", choices=("mediapipe", "dlib"), help="2D landmark detector")
    r.add_argument("--face", type=int, help="which face when several (0 = leftmost); default the largest")
    r.add_argument("--forehead", action="store_true", help="extend the face point cloud to the forehead")
    r.add_argument("--hull-margin", type=float, default=0.02,
                   help="metres the landmark hull is widened along the camera rays so cheeks and nose stay in "
                        "(0 = the paper's hull of the landmarks alone; default %(default)g)")
    r.add_argument("--w-beta", type=float,
                   help="identity prior weight on ||beta||^2 beside the point cloud (default: sigma^2 / points, "
                        "sigma measured from the fit's residuals)")
    r.add_argument("--w-psi", type=float,
                   help="expression prior weight on ||psi||^2 (default: %g x the identity weight)"
                        % FitConfig.psi_prior_ratio)
    r.add_argument("--grow-mm", type=float, default=FitConfig.grow_mm,
                   help="after block 2, also fit the depth points within this distance of the fitted face "
                        "(beyond the landmark hull); 0 = the paper's region only (default %(default)g)")
    r.add_argument("--seed", type=int, default=0, help="seed for point subsampling (default 0)")
    r.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    r.add_argument("--texture", action="store_true", help="also estimate lighting and an albedo map")
    r.add_argument("--albedo-model", help="with --texture: FLAME_albedo_from_BFM.npz or FLAME_texture.npz")
    r.add_argument("--texture-size", type=int, default=1024, help="albedo map side in texels (default 1024)")
    r.set_defaults(func=cmd_reconstruct)

    t = sub.add_parser("texture", help="lighting (27 SH numbers) and an albedo map for a reconstruction")
    t.add_argument("recon_dir", help="a reconstruction folder (headcast reconstruct)")
    t.add_argument("--albedo-model", help="FLAME_albedo_from_BFM.npz (MU/PC) or FLAME_texture.npz (mean/tex_dir); "
                                          "default: per-texel albedo from the photo")
    t.add_argument("--n-components", type=int, default=50, help="albedo model coefficients rho (default 50)")
    t.add_argument("--size", type=int, default=1024, help="albedo map side in texels (default 1024)")
    t.add_argument("--model", help="expected head model (error when the folder used another)")
    t.set_defaults(func=cmd_texture)

    an = sub.add_parser("animate", help="drive a reconstructed head from an RGB video")
    an.add_argument("recon_dir", help="a reconstruction folder")
    an.add_argument("video", help="a video file with a face (any person)")
    an.add_argument("--out", required=True, help="output folder")
    an.add_argument("--model", help="expected head model (default: the folder's own)")
    an.add_argument("--threshold", type=float, default=0.04, help="stop a frame at Loss5 below this (default 0.04)")
    an.add_argument("--max-iters", type=int, help="iteration cap per frame (default 6)")
    an.add_argument("--max-frames", type=int, help="only the first N frames")
    an.add_argument("--no-video", action="store_true", help="parameters only, no MP4")
    an.set_defaults(func=cmd_animate)

    pb = sub.add_parser("bench", help="benchmarks (figures go to bench/RESULTS.md)")
    bsub = pb.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    br = bsub.add_parser("reconstruct", help="reconstruction error against synthetic ground truth, per method")
    br.add_argument("--n", type=int, default=20, help="subjects (default 20)")
    br.add_argument("--noise", default="none,truedepth", help="depth profiles, comma-separated (default none,truedepth)")
    br.add_argument("--methods", default="full,landmarks-3d,rgb-2d", help="methods, comma-separated")
    br.add_argument("--model", default="ict", help="head model (default ict)")
    br.add_argument("--seed", type=int, default=1000, help="first subject seed (default 1000)")
    br.add_argument("--out", help="folder for per-subject results and the summary JSON")
    br.add_argument("--samples", help="the real samples folder (default ../shared/samples)")
    br.add_argument("--figures", help="folder for one overlay figure per real frame (e.g. bench/figures)")
    br.set_defaults(func=cmd_bench_reconstruct)

    bt = bsub.add_parser("texture", help="albedo and lighting error on synthetic subjects; Loss4 on real frames")
    bt.add_argument("--n", type=int, default=10, help="synthetic subjects (default 10)")
    bt.add_argument("--seed", type=int, default=2000, help="first subject seed (default 2000)")
    bt.add_argument("--geometry", default="gt,fit", help="gt (true mesh), fit (reconstructed), or both")
    bt.add_argument("--model", default="ict", help="head model (default ict)")
    bt.add_argument("--size", type=int, default=1024, help="albedo map side (default 1024)")
    bt.add_argument("--albedo-model", help="an albedo model file to test that path")
    bt.add_argument("--no-real", action="store_true", help="skip the real TrueDepth frames")
    bt.add_argument("--figures", help="folder for the real-frame figure")
    bt.add_argument("--out", help="folder for the JSON and markdown summary")
    bt.set_defaults(func=cmd_bench_texture)

    ba = bsub.add_parser("animate", help="tracking speed and accuracy on videos")
    ba.add_argument("videos", nargs="*", help="videos (default ../shared/samples/video/*.mp4)")
    ba.add_argument("--no-builtin", action="store_true", help="skip the built-in rendered motion")
    ba.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    ba.add_argument("--threshold", type=float, default=0.04, help="Loss5 threshold (default 0.04)")
    ba.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ba.set_defaults(func=cmd_bench_animate)

    bs = bsub.add_parser("stream", help="bytes per frame, vertex error, live latency and fps")
    bs.add_argument("--recon", required=True, help="the reconstruction folder to animate")
    bs.add_argument("--work", required=True, help="working folder (tracked animations, streams)")
    bs.add_argument("--model", default="ict", help="head model (default ict)")
    bs.add_argument("--no-live", action="store_true", help="skip the live loopback runs")
    bs.set_defaults(func=cmd_bench_stream)

    br2 = bsub.add_parser("render", help="preview renderer (OpenGL/EGL) against the ray caster")
    br2.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    br2.add_argument("--frames", type=int, default=30, help="frames timed (default 30)")
    br2.add_argument("--texture", type=int, default=1024, help="texture side in texels (default 1024)")
    br2.add_argument("--model", default="ict", help="head model (default ict)")
    br2.add_argument("--json", action="store_true", help="print the figures as JSON too")
    br2.set_defaults(func=cmd_bench_render)

    en = sub.add_parser("encode", help="encode an animation folder as a parameter stream file")
    en.add_argument("anim_dir", help="an animation folder (headcast animate)")
    en.add_argument("--profile", choices=("paper", "compact"), default="compact", help="default compact")
    en.add_argument("--out", required=True, help="output stream file")
    en.add_argument("--recon", help="the reconstruction folder (for lighting and albedo in the init message)")
    en.add_argument("--key", help="Ed25519 private key (default: $HEADCAST_HOME/keys, made on first use)")
    en.add_argument("--sender", default="default", help="sender name in the init message")
    en.add_argument("--target-mm", type=float, default=0.5, help="compact: vertex error budget (default 0.5)")
    en.add_argument("--key-interval", type=int, default=25, help="compact: a keyframe every N frames (default 25)")
    en.set_defaults(func=cmd_encode)
    de = sub.add_parser("decode", help="decode and verify a stream file")
    de.add_argument("stream", help="a stream file (headcast encode)")
    de.add_argument("--out", required=True, help="output folder")
    de.add_argument("--trust", help="the sender's public key (default: trust on first use)")
    de.set_defaults(func=cmd_decode)
    se = sub.add_parser("send", help="track a video or camera and stream it live over WebSocket")
    se.add_argument("--video", help="video file")
    se.add_argument("--camera", type=int, help="camera index")
    se.add_argument("--to", required=True, help="ws://HOST:PORT of a receiver")
    se.add_argument("--recon", help="the reconstruction to send (identity and appearance)")
    se.add_argument("--key", help="Ed25519 private key")
    se.add_argument("--sender", default="default", help="sender name")
    se.add_argument("--profile", choices=("paper", "compact"), default="compact")
    se.add_argument("--max-frames", type=int, help="stop after N frames")
    se.set_defaults(func=cmd_send)
    rc = sub.add_parser("receive", help="receive a live stream, rebuild the head, render it into an MP4 "
                                        "and/or show it live in a web page")
    rc.add_argument("--listen", required=True, help="HOST:PORT to listen on (e.g. 127.0.0.1:8765)")
    rc.add_argument("--out", help="output MP4 (required unless --web)")
    rc.add_argument("--web", action="store_true", help="also show the stream live in the viewer page "
                                                      "(http://127.0.0.1:PORT/live)")
    rc.add_argument("--web-port", type=int, default=8766, help="port of the live page (default 8766; 0: any)")
    rc.add_argument("--trust", help="the sender's public key (default: trust on first use)")
    rc.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a sender")
    rc.add_argument("--size", type=int, default=512, help="rendered frame side (default 512)")
    rc.add_argument("--max-lag", type=int,
                    help="frames the renderer may fall behind before it skips to the newest (default: 0.1 s of "
                         "frames; 0 = never skip, the MP4 gets every frame however late)")
    rc.set_defaults(func=cmd_receive)
    kg = sub.add_parser("keygen", help="make an Ed25519 sender key pair")
    kg.add_argument("--out", help="private key path (default $HEADCAST_HOME/keys/sender_ed25519.pem)")
    kg.add_argument("--force", action="store_true", help="overwrite an existing key")
    kg.set_defaults(func=cmd_keygen)

    e = sub.add_parser("export", help="write a binary glTF (.glb): textured head, morph targets, skin, animation")
    e.add_argument("result_dir", help="a reconstruction folder")
    e.add_argument("--anim", help="an animation folder (headcast animate) to add as glTF animation")
    e.add_argument("--out", required=True, help="output .glb")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("view", help="show a reconstruction or .glb in the browser (local, offline)")
    v.add_argument("target", help="a reconstruction folder or a .glb file")
    v.add_argument("--anim", help="an animation folder to play")
    v.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    v.add_argument("--open", action="store_true", help="open the page in the default browser")
    v.set_defaults(func=cmd_view)

    d = sub.add_parser("demo", help="run the whole pipeline on a built-in synthetic subject")
    d.add_argument("--out", default="headcast-demo", help="output folder (default: ./headcast-demo)")
    d.add_argument("--model", default="ict", help="head model (default: ict)")
    d.add_argument("--seed", type=int, default=0, help="subject seed (default: 0)")
    d.add_argument("--video", help="drive the head with this video instead of the built-in motion")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ log lines are noise to users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        a.func(a)
    except HeadcastError as e:
        if a.debug:
            raise
        print(f"headcast: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("headcast: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line unless --debug
        if a.debug:
            raise
        print(f"headcast: internal error: {e.__class__.__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
