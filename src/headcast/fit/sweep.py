"""``headcast reconstruct`` on several frames (a sweep): one head from many RGB-D frames.

The frames are read and turned upright by one turn (:mod:`.frames`), registered rigidly outwards from the
frame with the best view of the face (:mod:`.register`), and one head is fitted to the landmarks and the
head points of up to ``max_frames`` frames spread over the view angles, all moved into the camera frame of
the first frame: one identity and one expression (the subject holds still), the fitted placement standing for
the head pose in that frame. The frames' poses are then refined against the fitted mesh (ICP) and the model
refitted on the refined points (the joint fit, alternated once); with ``expression="per-frame"`` each fitted
frame then gets its own expression (:mod:`.expressions`); last the detail layer (:mod:`.detail`), which
with one shared expression first slides the lids and lips towards the landmark contours of the fitted frames.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.scene import closest_points_on_mesh
from headcast.fit.config import FitConfig
from headcast.fit.expressions import fit_expressions, points_in_output_expression
from headcast.fit.frames import load_frames, skipped_frames, spread_frames, sweep_inputs
from headcast.fit.reconstruct import Reconstruction, make_fitter
from headcast.fit.register import Registered, refine_to_mesh, register_frames, transform
from headcast.fit.rgbd_fit import BLOCK2, RGBDFitter, Targets
from headcast.fit.terms import INNER, landmark_term, point_term
from headcast.model.head_model import HeadModel
from headcast.preprocess.cloud import face_axes
from headcast.preprocess.ibug68 import CHIN
from headcast.preprocess.preprocess import Observation, preprocess
from headcast.preprocess.rgbd import RGBDFrame

logger = logging.getLogger(__name__)

EXPRESSIONS = ("shared", "per-frame")  # SweepConfig.expression


@dataclass
class SweepConfig:
    """Settings of the sweep beyond the single-frame fit's. Lengths in metres."""

    max_frames: int = 12         # frames the fit uses, spread over the view angles (all frames are registered)
    radius: float = 0.14         # head points: depth points within this of the head's centre
    behind: float = 0.07         # the head's centre: this far behind the face's centre along the face normal
    below: float = 0.06          # head points reach at least this far under the head's centre ...
    above_chin: float = 0.01     # ... and down to this far above the chin's tip (not the throat: it turns with the neck)
    refine: bool = True          # refine the poses against the fitted mesh and refit once
    iters_refit: int = 8         # block 2 steps of the refit
    detail: str = "normal"       # the detail layer: "normal" (offsets along the normals) or "none"
    fit_points: int = 12000      # points of the whole head in the fit
    iters_block2: int = 30       # the joint fit's block 2 and its first damping: the single frame's 20 steps from
    lm_damping: float = 1e-3     # 1e-5 (issue 14) left subject 2007 of `bench sweep` at 0.46 mm mean, not 0.29
    expression: str = "shared"   # "shared" (the subject holds still) or "per-frame" (:mod:`.expressions`)
    expression_tie: float = 1.0  # per-frame: pull towards the shared psi, times the fit's expression prior
    expression_rounds: int = 1   # per-frame: alternations of the frames' expressions and the identity


@dataclass
class Sweep:
    """A fitted sweep: the frames, their registration, poses camera -> output frame (4, 4) or None,
    the frames the fit used, each frame's observation (None: no face found or not looked for) and
    why frames were skipped."""

    frames: list[RGBDFrame]
    registered: list[Registered]
    poses: list[np.ndarray | None]
    used: list[int]
    obs: list[Observation | None]
    skipped: dict[int, str] = field(default_factory=dict)
    expressions: dict[int, np.ndarray] = field(default_factory=dict)  # per-frame psi (E,) by frame index

    @property
    def first(self) -> int:
        """The output frame: the first registered frame."""
        return next(i for i, p in enumerate(self.poses) if p is not None)


def reconstruct_sweep(inputs: list[str | Path], model: HeadModel, out: Path, *, rotate: str | int = "auto",
                      landmarks: str = "mediapipe", config: FitConfig | None = None,
                      sweep: SweepConfig | None = None, started: float | None = None,
                      force: bool = False) -> tuple[Reconstruction, Sweep]:
    """Fit one head to the frames ``inputs`` (prefixes or color files, or one folder of them) and write the
    reconstruction folder ``out`` (:func:`headcast.fit.sweep_io.write_sweep`)."""
    from headcast.fit.sweep_io import frame_inputs, write_sweep
    from headcast.io import recon
    from headcast.io.outputs import check_output_dir

    started = time.perf_counter() if started is None else started
    config, sweep = config or FitConfig(), sweep or SweepConfig()
    paths = sweep_inputs(inputs)
    check_output_dir(out, recon.KIND, force=force, inputs=paths)
    frames = load_frames(paths, rotate, landmarks)
    sw = register_sweep(frames, sweep, landmarks, config.seed)
    rec = fit_sweep(sw, model, config, sweep)
    rec.report["seconds_total"] = time.perf_counter() - started
    write_sweep(Path(out), sw, rec, model, force=force, inputs=frame_inputs(frames))
    return rec, sw


def is_frame(p: str | Path) -> bool:
    """Whether ``p`` names a frame: a color image (``*_color.png``) or the prefix of one that exists."""
    from headcast.preprocess.rgbd import COLOR_SUFFIXES

    p = Path(p)
    return any(p.name.endswith(s) for s in COLOR_SUFFIXES) or any(
        p.with_name(p.name + s).is_file() for s in COLOR_SUFFIXES)


def is_sweep(inputs: list[str | Path]) -> bool:
    """Whether the command line's inputs are a sweep: one folder, or several frames (not COLOR DEPTH)."""
    if len(inputs) == 1:
        return Path(inputs[0]).is_dir()
    return all(is_frame(p) for p in inputs)


def _detect(frame: RGBDFrame, method: str, seed: int) -> Observation | None:
    try:
        return preprocess(frame, method, seed=seed)
    except HeadcastError as e:
        logger.info(f"sweep: no face used in {frame.name}: {e}")
        return None


def _axes(o: Observation) -> tuple[np.ndarray, np.ndarray] | None:
    """The face's up and normal (:func:`headcast.preprocess.cloud.face_axes`), None when a landmark they
    need has no depth."""
    with np.errstate(invalid="ignore"):
        up, normal, _ = face_axes(o.landmarks3d)
    return (up, normal) if np.isfinite(up).all() and np.isfinite(normal).all() else None


def register_sweep(frames: list[RGBDFrame], cfg: SweepConfig, method: str = "mediapipe", seed: int = 0) -> Sweep:
    """Skip blurred and duplicate frames, find the face in ``cfg.max_frames`` frames spread over the
    sequence, register every frame (:func:`headcast.fit.register.register_frames`) and choose the frames
    the fit uses. HeadcastError when no frame shows a face."""
    skipped = skipped_frames(frames)
    cand = [i for i in range(len(frames)) if i not in skipped]
    if not cand:
        raise HeadcastError("every frame of the sweep is blurred or a duplicate")
    look = spread_frames(cand, np.asarray(cand, dtype=np.float64), cfg.max_frames, cand[len(cand) // 2])
    obs: list[Observation | None] = [None] * len(frames)
    for i in look:
        obs[i] = _detect(frames[i], method, seed)
    found = [i for i in look if obs[i] is not None]
    if not found:
        raise HeadcastError(f"no face found in any of the {len(look)} frames looked at (from {frames[0].name})")
    axes = {i: _axes(obs[i]) for i in found}
    ref = max(found, key=lambda i: (axes[i] is not None, obs[i].n_lifted, obs[i].detection.score))
    o = obs[ref]
    # the chin or an eye corner without depth in every frame: the camera's axes stand in for the face's
    up, normal = axes[ref] or (np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0]))
    centre = np.nanmean(o.landmarks3d[o.valid], axis=0) - cfg.behind * normal
    below = cfg.below
    if o.valid[CHIN] and axes[ref] is not None:  # a long face's chin lies further under its centre
        below = max(below, float((centre - o.landmarks3d[CHIN]) @ up) - cfg.above_chin)
    reg = register_frames([None if i in skipped else f.depth for i, f in enumerate(frames)], frames[0].K,
                          [None if ob is None else ob.landmarks3d for ob in obs], ref, centre, cfg.radius, up, below)
    ok = [i for i in cand if reg[i].pose is not None]
    first = min(i for i, r in enumerate(reg) if r.pose is not None)
    back = np.linalg.inv(reg[first].pose)
    poses = [None if r.pose is None else back @ r.pose for r in reg]
    # view angle of each registered camera about the head's vertical (the reference camera's y axis)
    eye = np.array([reg[i].pose[:3, 3] - centre for i in ok])
    used = spread_frames(ok, np.arctan2(eye[:, 0], -eye[:, 2]), cfg.max_frames, ref)
    logger.info(f"sweep: {len(ok)} of {len(frames)} frames registered (reference {frames[ref].name}); "
                f"fitting {len(used)}")
    return Sweep(frames, reg, poses, used, obs, skipped)


def sweep_targets(sw: Sweep, n_points: int, seed: int) -> Targets:
    """Landmarks (per-landmark median over the used frames that found them) and head points of the used
    frames, in the output frame, at most ``n_points`` of them (seeded)."""
    pts = np.concatenate([transform(sw.poses[i], sw.registered[i].cloud) for i in sw.used])
    if len(pts) > n_points:
        pts = pts[np.sort(np.random.default_rng(seed).choice(len(pts), n_points, replace=False))]
    lms = [transform(sw.poses[i], sw.obs[i].landmarks3d) for i in sw.used if sw.obs[i] is not None]
    if not lms:
        raise HeadcastError("none of the frames the fit uses shows a face")
    with warnings.catch_warnings():  # a landmark no used frame lifted stays NaN (not valid) without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lm = np.nanmedian(np.stack(lms), axis=0)
    valid = np.isfinite(lm).all(1)
    ref = next(i for i in sw.used if sw.obs[i] is not None)
    return Targets(lm, valid, pts, sw.obs[ref].landmarks2d, sw.frames[ref].K, scene_points=None)


def fit_sweep(sw: Sweep, model: HeadModel, config: FitConfig, cfg: SweepConfig) -> Reconstruction:
    """The joint fit (module docstring) on a registered sweep; the detail layer when ``cfg.detail``."""
    from headcast.fit.detail import detailed_vertices, fit_offsets

    if cfg.expression not in EXPRESSIONS:
        raise HeadcastError(f"unknown expression mode {cfg.expression!r}; choose one of {', '.join(EXPRESSIONS)}")
    t0 = time.perf_counter()
    fitter = make_fitter(model, FitConfig(**{**config.__dict__, "grow_mm": 0.0, "max_points": cfg.fit_points,
                                         "iters_block2": cfg.iters_block2, "lm_damping": cfg.lm_damping}))
    tg = sweep_targets(sw, cfg.fit_points, config.seed)
    res = fitter.fit(tg, "full")
    report = res.report()
    params = res.params
    if cfg.refine:
        verts = fitter.vertices_of(params)
        refined = refine_to_mesh([r.cloud for r in sw.registered], sw.poses, verts, model.faces, config.seed)
        refined[sw.first] = sw.poses[sw.first]  # the output frame stays the first frame's camera
        sw.poses = refined
        tg = sweep_targets(sw, cfg.fit_points, config.seed)
        params = _refit(fitter, params, tg, cfg.iters_refit)
        report["refit"] = {"iterations": cfg.iters_refit}
    if cfg.expression == "per-frame":
        params, sw.expressions, report["expression"] = fit_expressions(
            fitter, sw, params, res.priors, tie=cfg.expression_tie, rounds=cfg.expression_rounds,
            iters_identity=cfg.iters_refit, n_points=cfg.fit_points, seed=config.seed)
    verts = fitter.vertices_of(params)
    offsets = None
    if cfg.detail != "none":
        pts = all_points(sw, 60000, config.seed) if not sw.expressions else points_in_output_expression(
            sw, params, sw.expressions, fitter.vertices_of, model.faces, 60000, config.seed)
        # the frames' own mouths differ with per-frame expressions: their contours would not agree
        views = None if sw.expressions else landmark_views(sw)
        offsets, detail_report = fit_offsets(model, params, verts, pts, views=views)
        report["detail"] = detail_report
        verts = detailed_vertices(model, params, offsets)
    lmk = fitter.landmarks_cam(fitter.pk.pack(params))
    report.update(method="sweep", model=model.name, seconds_fit=time.perf_counter() - t0,
                  registered_points_to_mesh_mm=points_to_mesh(verts, model.faces, all_points(sw, 30000, 1)))
    return Reconstruction(params, verts, lmk, report, offsets)


def landmark_views(sw: Sweep) -> list:
    """The fitted frames that found a face, as the detail layer's landmark views (output frame to camera)."""
    from headcast.fit.detail import LandmarkView

    return [LandmarkView(np.linalg.inv(sw.poses[i]), sw.frames[i].K, sw.obs[i].landmarks2d)
            for i in sw.used if sw.obs[i] is not None and sw.poses[i] is not None]


def _refit(fitter: RGBDFitter, params, tg: Targets, iters: int):
    """Block 2 on the refined targets from the fitted parameters (the priors the fit measured)."""
    inner = np.array([i for i in INNER if tg.valid3d[i]])
    lmk = landmark_term(fitter, tg.landmarks3d[inner], inner)
    trim = fitter.cfg.trim_mm / 1000.0
    x, _, _ = fitter.run_block("refit", fitter.pk.pack(params), BLOCK2, iters,
                               lambda xx: [(fitter.cfg.w_landmarks_block2, lmk),
                                           (1.0, point_term(fitter, xx, tg.points, trim))])
    return fitter.pk.unpack(x, fitter.model_name)


def all_points(sw: Sweep, n: int, seed: int) -> np.ndarray:
    """Head points (M, 3) of every registered frame in the output frame, at most ``n`` (seeded)."""
    pts = np.concatenate([transform(p, r.cloud) for p, r in zip(sw.poses, sw.registered) if p is not None])
    if len(pts) > n:
        pts = pts[np.random.default_rng(seed).choice(len(pts), n, replace=False)]
    return pts


def points_to_mesh(verts: np.ndarray, faces: np.ndarray, pts: np.ndarray) -> dict:
    """Distances (mm) of points (N, 3) to the mesh: median, mean, p95 and the share within 2 mm."""
    _, _, d = closest_points_on_mesh(verts, faces, pts)
    d = d * 1000
    return {"median": float(np.median(d)), "mean": float(d.mean()), "p95": float(np.percentile(d, 95)),
            "within_2mm": float((d < 2).mean()), "n_points": int(len(d))}

