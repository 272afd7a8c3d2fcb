"""``headcast synth | reconstruct | texture``: RGB-D frames in, a fitted and textured head out."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from headcast.cli import logs
from headcast.cli.parser import add_force, field_default, param_default
from headcast.core.errors import HeadcastError

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    sub.add_parser("synth", help="render synthetic RGB-D subjects with ground truth", arguments=_synth_arguments)
    sub.add_parser("reconstruct", help="fit a head to one RGB-D frame (the paper's three blocks)",
                   arguments=_reconstruct_arguments)
    sub.add_parser("texture", help="lighting (27 SH numbers) and an albedo map for a reconstruction",
                   arguments=_texture_arguments)


# ---------------------------------------------------------------- synth
def _synth_arguments(s: argparse.ArgumentParser) -> None:
    from headcast.model.registry import DEFAULT_MODEL
    from headcast.synth import PROFILES, random_subject, synth
    from headcast.synth.io import DEFAULT_HFOV_DEG
    from headcast.synth.sweep import synth_sweep

    default = lambda name: param_default(synth, name)  # noqa: E731
    near, far = param_default(random_subject, "distance_range")
    s.add_argument("--out", required=True, help="output folder")
    add_force(s)
    s.add_argument("--model", default=DEFAULT_MODEL, help="head model name or .npz (default: %(default)s)")
    s.add_argument("--n", type=int, default=default("n"), help="number of subjects (default: %(default)s)")
    s.add_argument("--seed", type=int, default=default("seed"), help="random seed (default: %(default)s)")
    s.add_argument("--noise", choices=tuple(PROFILES), default=default("profile"),
                   help="depth sensor profile (default: %(default)s)")
    s.add_argument("--size", default=f"{default('width')}x{default('height')}",
                   help="image size WxH (default: %(default)s)")
    s.add_argument("--no-background", action="store_true", help="no wall and shoulders")
    s.add_argument("--fov", type=float,
                   help=f"horizontal field of view in degrees (default {DEFAULT_HFOV_DEG:g}, as TrueDepth)")
    s.add_argument("--yaw", type=float, help="head yaw in degrees (default: random)")
    s.add_argument("--pitch", type=float, help="head pitch in degrees (default: random)")
    s.add_argument("--roll", type=float, help="head roll in degrees (default: random)")
    s.add_argument("--yaw-range", type=float, help="random yaw within +-this many degrees "
                                                   f"(default {param_default(random_subject, 'yaw_range_deg'):g})")
    s.add_argument("--distance", type=float, help=f"head distance in metres (default: random {near:g}-{far:g})")
    s.add_argument("--skin-tone", type=float, help="0 (light) .. 1 (dark) (default: random)")
    s.add_argument("--beta-file", help="identity: .npy, .json, or a params.npz / _gt.npz with 'beta'")
    s.add_argument("--expression", action="append", metavar="NAME=W",
                   help="expression weight by name or index, repeatable (default: random)")
    s.add_argument("--sweep", type=int, metavar="N",
                   help="one subject (--seed) turning its head over +-yaw-range (default 60) degrees, N views")
    s.add_argument("--expression-change", type=float, default=param_default(synth_sweep, "expression_change"),
                   help="with --sweep: the face moves between views: each view adds a random expression of "
                        "weights up to this share of the range, 0..1 (default %(default)g: a still subject)")
    s.add_argument("--bump-mm", type=float, default=0.0,
                   help="with --sweep: a bump beyond the head model on the left cheek, mm (default 0); the sweep "
                        "renders the head alone, without wall and shoulders")
    s.set_defaults(func=run_synth)


def run_synth(a: argparse.Namespace) -> None:
    from headcast.io.outputs import check_output_dir
    from headcast.io.validate import check_number
    from headcast.model.registry import resolve_model
    from headcast.synth import load_beta, parse_expressions, synth

    w, h = parse_size(a.size)
    check_number(a.seed, "--seed", 0, None, integer=True)
    if a.skin_tone is not None:
        check_number(a.skin_tone, "--skin-tone", 0, 1)
    _check_synth_mode(a)
    check_output_dir(a.out, "synth", force=a.force, inputs=(a.beta_file,))  # refuse before the model loads
    model = resolve_model(a.model)
    if a.sweep is not None:
        from headcast.synth.sweep import synth_sweep

        check_number(a.bump_mm, "--bump-mm", -10, 10, unit="mm")
        check_number(a.expression_change, "--expression-change", 0, 1)
        paths = synth_sweep(model, Path(a.out), n=a.sweep, seed=a.seed, profile=a.noise, width=w, height=h,
                            yaw_range_deg=60.0 if a.yaw_range is None else a.yaw_range, bump_mm=a.bump_mm,
                            expression_change=a.expression_change, force=a.force)
        logger.info(f"headcast: wrote a {len(paths)}-view synthetic sweep to {a.out}")
        return
    subject = {k: v for k, v in dict(yaw_deg=a.yaw, pitch_deg=a.pitch, roll_deg=a.roll, distance=a.distance,
                                     yaw_range_deg=a.yaw_range, skin_tone=a.skin_tone).items() if v is not None}
    if a.beta_file:
        subject["beta"] = load_beta(a.beta_file)
    if a.expression:
        subject["expression"] = parse_expressions(a.expression)
    paths = synth(model, Path(a.out), n=a.n, seed=a.seed, profile=a.noise, width=w, height=h,
                  hfov_deg=a.fov, background=not a.no_background, force=a.force, **subject)
    logger.info(f"headcast: wrote {len(paths)} synthetic RGB-D frame(s) to {a.out}")


def _check_synth_mode(a: argparse.Namespace) -> None:
    """Refuse options the chosen mode would leave unused: a sweep is one subject (--seed) turning its head;
    --expression-change and --bump-mm are the sweep's."""
    from headcast.synth import synth

    if a.sweep is None:
        unused = [f for f, v in (("--expression-change", a.expression_change), ("--bump-mm", a.bump_mm)) if v]
        if unused:
            raise HeadcastError(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for --sweep")
        return
    unused = [f for f, used in (("--n", a.n != param_default(synth, "n")), ("--fov", a.fov is not None),
                                ("--yaw", a.yaw is not None), ("--pitch", a.pitch is not None),
                                ("--roll", a.roll is not None), ("--distance", a.distance is not None),
                                ("--skin-tone", a.skin_tone is not None), ("--beta-file", a.beta_file is not None),
                                ("--expression", bool(a.expression)), ("--no-background", a.no_background)) if used]
    if unused:
        raise HeadcastError(f"{', '.join(unused)}: not for --sweep, which renders one subject (--seed) turning its "
                            "head over --yaw-range, without background")


def parse_size(s: str) -> tuple[int, int]:
    """``640x480`` -> (640, 480); HeadcastError for anything else or sides outside 32..8192."""
    try:
        w, h = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise HeadcastError(f"--size must look like 640x480, not {s!r}") from None
    if not (32 <= w <= 8192 and 32 <= h <= 8192):
        raise HeadcastError(f"--size {s} is out of range (32..8192 pixels a side)")
    return w, h


# ---------------------------------------------------------------- reconstruct
def _reconstruct_arguments(r: argparse.ArgumentParser) -> None:
    from headcast.fit.config import FitConfig
    from headcast.fit.reconstruct import reconstruct_frame
    from headcast.fit.rgbd_fit import METHODS
    from headcast.fit.sweep import EXPRESSIONS, SweepConfig
    from headcast.io.validate import MAX_HULL_MARGIN_M, MAX_TEXTURE_SIZE
    from headcast.model.registry import DEFAULT_MODEL
    from headcast.preprocess.cloud import HULL_MARGIN
    from headcast.preprocess.landmarks import METHODS as DETECTORS
    from headcast.preprocess.preprocess import preprocess
    from headcast.preprocess.rgbd import load_rgbd

    r.add_argument("inputs", nargs="+", metavar="FRAME",
                   help="color image, or a frame prefix such as frame-050 (finds _color.png, _depth_mm.png, "
                        "_intrinsics.json), optionally followed by its depth (uint16 PNG in mm, float32 "
                        "NPY/TIFF/EXR in m, or a PLY point cloud); several frames, or a folder of them "
                        "(every *_color.png), fit one head to the sweep")
    r.add_argument("--max-frames", type=int, default=field_default(SweepConfig, "max_frames"),
                   help="sweep: frames the fit uses, spread over the view angles (every frame is registered; "
                        "default %(default)s)")
    r.add_argument("--detail", choices=("normal", "none"),
                   help="per-vertex offsets along the normals beyond the model (default: "
                        f"{field_default(SweepConfig, 'detail')} for a sweep; "
                        f"{param_default(reconstruct_frame, 'detail')} for one frame, the paper's fit as it is)")
    r.add_argument("--expression", choices=EXPRESSIONS, default=field_default(SweepConfig, "expression"),
                   help="sweep: one expression for every frame (a still subject) or each fitted frame its own, "
                        "pulled towards the shared one (per-frame; poses.json lists them, params.npz keeps the "
                        "first frame's; default %(default)s)")
    r.add_argument("--intrinsics", help="JSON with fx, fy, cx, cy, width, height")
    r.add_argument("--depth-scale", type=float, help="metres per depth unit (default 0.001 for PNG, 1 for float)")
    r.add_argument("--rotate", default=param_default(load_rgbd, "rotate"),
                   help="auto|0|90|180|270: turn the capture clockwise (default %(default)s)")
    r.add_argument("--out", required=True, help="output folder")
    add_force(r)
    r.add_argument("--model", default=DEFAULT_MODEL, help="head model name or .npz (default: %(default)s)")
    r.add_argument("--method", default=param_default(reconstruct_frame, "method"), choices=METHODS,
                   help="full (the paper), landmarks-3d or rgb-2d baselines (default: %(default)s)")
    r.add_argument("--landmarks", default=param_default(preprocess, "method"), choices=DETECTORS,
                   help="2D landmark detector")
    r.add_argument("--face", type=int, help="which face when several (0 = leftmost); default the largest")
    r.add_argument("--forehead", action="store_true", help="extend the face point cloud to the forehead")
    r.add_argument("--hull-margin", type=float, default=HULL_MARGIN,
                   help="metres the landmark hull is widened along the camera rays so cheeks and nose stay in "
                        f"(0 = the paper's hull of the landmarks alone; at most {MAX_HULL_MARGIN_M:g}; "
                        "default %(default)g)")
    r.add_argument("--w-beta", type=float,
                   help="identity prior weight on ||beta||^2 beside the point cloud (default: sigma^2 / points, "
                        "sigma measured from the fit's residuals)")
    r.add_argument("--w-psi", type=float,
                   help="expression prior weight on ||psi||^2 (default: %g x the identity weight)"
                        % field_default(FitConfig, "psi_prior_ratio"))
    r.add_argument("--grow-mm", type=float, default=field_default(FitConfig, "grow_mm"),
                   help="after block 2, also fit the depth points within this distance of the fitted face "
                        "(beyond the landmark hull); 0 = the paper's region only (default %(default)g)")
    r.add_argument("--seed", type=int, default=field_default(FitConfig, "seed"),
                   help="seed for point subsampling (default %(default)s)")
    r.add_argument("--quiet", dest="fit_quiet", action="store_true", help="no per-iteration progress")
    r.add_argument("--texture", action="store_true", help="also estimate lighting and an albedo map")
    r.add_argument("--albedo-model", help="with --texture: FLAME_albedo_from_BFM.npz or FLAME_texture.npz")
    # no default here: reading the texturing stage's would import it (scipy.ndimage) on every reconstruct
    r.add_argument("--texture-size", type=int,
                   help=f"albedo map side in texels, 16..{MAX_TEXTURE_SIZE} (default: as `headcast texture --size`)")
    r.set_defaults(func=run_reconstruct)


def run_reconstruct(a: argparse.Namespace) -> None:
    from headcast.fit.sweep import is_frame, is_sweep

    if is_sweep(a.inputs):
        return run_sweep(a)
    if len(a.inputs) > 2:
        bad = next(p for p in a.inputs if not is_frame(p))
        raise HeadcastError(f"{bad} is not a frame (no {bad}_color.png): give frames, or one color image and its "
                            "depth")
    if a.expression == "per-frame":
        raise HeadcastError("--expression per-frame is for a sweep (several frames or a folder); one frame has "
                            "one expression")
    from headcast.fit.sweep import SweepConfig

    if a.max_frames != field_default(SweepConfig, "max_frames"):
        raise HeadcastError("--max-frames is for a sweep (several frames or a folder)")
    a.color, a.depth = a.inputs[0], (a.inputs[1] if len(a.inputs) > 1 else None)
    from headcast.core import threads
    from headcast.fit.config import FitConfig
    from headcast.fit.reconstruct import prepare_fitter, reconstruct_frame
    from headcast.io import recon
    from headcast.io.outputs import check_output_dir
    from headcast.io.validate import check_options
    from headcast.model.registry import DEFAULT_MODEL, on_disk, resolve_model
    from headcast.preprocess.rgbd import load_rgbd

    t0 = time.perf_counter()
    # the options and --out first: refused before anything is read (the stages check them again)
    check_options({"hull_margin": a.hull_margin, "grow_mm": a.grow_mm})
    check_fit_options(a)
    check_output_dir(a.out, recon.KIND, force=a.force, inputs=(a.color, a.depth, a.intrinsics))
    cfg = FitConfig(w_beta=a.w_beta, w_psi=a.w_psi, grow_mm=a.grow_mm, seed=a.seed)
    # the model and the fitter are made beside the frame's reading (MediaPipe leaves the GIL); a model to
    # build first (the default one on first use) waits until the frame has been read
    fitter = threads.Job(prepare_fitter, a.model, cfg, name="fitter") if on_disk(a.model) else None
    if fitter is None and a.model != DEFAULT_MODEL:
        resolve_model(a.model)  # no such model: refused before the frame is read
    frame = load_rgbd(a.color, a.depth, a.intrinsics, depth_scale=a.depth_scale, rotate=a.rotate,
                      method=a.landmarks)
    if frame.rotation:
        logger.info(f"headcast: turned the capture {frame.rotation} degrees clockwise to make the face upright")
    model = fitter or resolve_model(a.model)
    with logs.scoped(hide=("headcast.fit",) if a.fit_quiet else ()):  # --quiet: the fit's progress lines
        rec = reconstruct_frame(frame, model, Path(a.out), a.method, landmarks=a.landmarks, face=a.face,
                                forehead=a.forehead, hull_margin=a.hull_margin, config=cfg, started=t0,
                                detail=a.detail or param_default(reconstruct_frame, "detail"), force=a.force)
    pm = rec.report["point_to_mesh_mm"]
    logger.info(f"headcast: {a.method} fit in {rec.report['seconds_fit']:.1f} s; face points to mesh: median "
                f"{pm['median']:.2f} mm, p95 {pm['p95']:.2f} mm; 3D landmarks: mean "
                f"{rec.report['landmarks_3d_mm']['mean']:.1f} mm")
    pri = rec.report.get("priors")
    if pri and pri.get("sigma_mm") is not None:
        logger.info(f"headcast: shape priors for {pri['sigma_mm']:.2f} mm of depth noise and model mismatch "
                    f"(w_beta {pri['w_beta']:.2g}, w_psi {pri['w_psi']:.2g})")
    logger.info(f"headcast: wrote {a.out}/ (params, mesh.obj/ply, fit_report.json, "
                "landmarks/overlay/depth_residual.png)")
    if a.texture:  # the reconstruction is whole on disk by now; the texture adds its files to it
        texture(Path(a.out), a.albedo_model, a.texture_size, rec.report["model"], force=a.force)


def run_sweep(a: argparse.Namespace) -> None:
    """``headcast reconstruct`` on several frames: one head from the sweep (headcast.fit.sweep)."""
    from headcast.fit.config import FitConfig
    from headcast.fit.sweep import SweepConfig, reconstruct_sweep
    from headcast.io.validate import check_options
    from headcast.model.registry import resolve_model
    from headcast.preprocess.cloud import HULL_MARGIN

    t0 = time.perf_counter()
    check_options({"max_frames": a.max_frames, "sweep": True})
    check_fit_options(a)
    if a.depth_scale is not None or a.intrinsics is not None:
        raise HeadcastError("--depth-scale and --intrinsics are for one frame; a sweep's frames carry their own")
    if (a.method != "full" or a.face is not None or a.forehead or a.hull_margin != HULL_MARGIN
            or a.grow_mm != field_default(FitConfig, "grow_mm")):
        raise HeadcastError("--method, --face, --forehead, --hull-margin and --grow-mm are for one frame; a sweep "
                            "fits the full method to the whole head")
    model = resolve_model(a.model)
    cfg = FitConfig(w_beta=a.w_beta, w_psi=a.w_psi, seed=a.seed)
    sweep = SweepConfig(max_frames=a.max_frames, detail=a.detail or field_default(SweepConfig, "detail"),
                        expression=a.expression)
    with logs.scoped(hide=("headcast.fit",) if a.fit_quiet else ()):  # --quiet: the fit's progress lines
        rec, sw = reconstruct_sweep(a.inputs, model, Path(a.out), rotate=a.rotate, landmarks=a.landmarks, config=cfg,
                                    sweep=sweep, started=t0, force=a.force)
    pm = rec.report["registered_points_to_mesh_mm"]
    n_reg = sum(p is not None for p in sw.poses)
    logger.info(f"headcast: {n_reg} of {len(sw.frames)} frames registered, {len(sw.used)} fitted in "
                f"{rec.report['seconds_fit']:.1f} s; registered points to mesh: median {pm['median']:.2f} mm, "
                f"p95 {pm['p95']:.2f} mm")
    logger.info(f"headcast: wrote {a.out}/ (params, mesh.obj/ply, poses.json, fused.ply, frames/, fit_report.json)")
    if a.texture:
        texture(Path(a.out), a.albedo_model, a.texture_size, model.name, force=a.force)


def check_fit_options(a: argparse.Namespace) -> None:
    """The options one frame and a sweep share, refused before anything is read: the seed, the prior weights
    and the texturing options (which need ``--texture``; its albedo model must be a file)."""
    from headcast.io.validate import check_options

    check_options({"seed": a.seed, "w_beta": a.w_beta, "w_psi": a.w_psi})
    if not a.texture and (a.texture_size is not None or a.albedo_model is not None):
        raise HeadcastError("--texture-size and --albedo-model are for --texture")
    check_options({"texture_size": a.texture_size})
    if a.albedo_model is not None:
        from headcast.core.files import check_input_file
        from headcast.texture.albedo_model import MAX_BYTES

        check_input_file(a.albedo_model, "albedo model", MAX_BYTES)


# ---------------------------------------------------------------- texture
def _texture_arguments(t: argparse.ArgumentParser) -> None:
    from headcast.io.validate import MAX_TEXTURE_SIZE
    from headcast.texture.pipeline import texture_reconstruction

    t.add_argument("recon_dir", help="a reconstruction folder (headcast reconstruct)")
    t.add_argument("--albedo-model", help="FLAME_albedo_from_BFM.npz (MU/PC) or FLAME_texture.npz (mean/tex_dir); "
                                          "default: per-texel albedo from the photo")
    t.add_argument("--n-components", type=int, default=param_default(texture_reconstruction, "n_components"),
                   help="albedo model coefficients rho (default %(default)s)")
    t.add_argument("--size", type=int, default=param_default(texture_reconstruction, "size"),
                   help=f"albedo map side in texels, 16..{MAX_TEXTURE_SIZE} (default %(default)s)")
    t.add_argument("--model", help="expected head model (error when the folder used another)")
    t.add_argument("--force", action="store_true", help="replace the folder's earlier texture files (headcast's "
                                                        "own, listed in its manifest); other files are never touched")
    t.set_defaults(func=run_texture)


def run_texture(a: argparse.Namespace) -> None:
    from headcast.texture.pipeline import texture_reconstruction

    if a.albedo_model is None and a.n_components != param_default(texture_reconstruction, "n_components"):
        raise HeadcastError("--n-components is for --albedo-model (the photo's per-texel albedo has no components)")
    texture(Path(a.recon_dir), a.albedo_model, a.size, a.model, a.n_components, force=a.force)


def texture(recon: Path, albedo_model, size: int | None, model, n_components: int | None = None,
            force: bool = False) -> None:
    """Texture a reconstruction folder (``size``, ``n_components``: the texturing stage's defaults when None)."""
    from headcast.texture import texture_reconstruction

    more = {k: v for k, v in (("size", size), ("n_components", n_components)) if v is not None}
    rep = texture_reconstruction(recon, albedo_model=albedo_model, model=model, force=force, **more)
    logger.info(f"headcast: textured {recon}: Loss4 {rep['loss4']:.4f}; albedo.png, mesh_textured.obj/.mtl, "
                f"lighting.json, render_vs_photo.png, texture_report.json")
