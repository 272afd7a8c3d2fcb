"""``headcast reconstruct``: one RGB-D frame in, a fitted head and its report out.

Output folder (written whole or not at all):
params.npz / params.json, mesh.obj / mesh.ply (camera frame, metres), fit_report.json,
landmarks.png, overlay.png, depth_residual.png, and the upright input (color.png, depth_mm.png,
intrinsics.json) so later stages can work from the folder alone.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core import threads
from headcast.core.camera import project
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.fit.evaluate import synthetic_errors
from headcast.fit.rgbd_fit import INNER, FitConfig, FitResult, RGBDFitter, Targets
from headcast.io import recon
from headcast.io.mesh import write_obj, write_ply
from headcast.io.outputs import check_output_dir, staged_dir
from headcast.model.head_model import HeadModel
from headcast.preprocess.cloud import HULL_MARGIN
from headcast.preprocess.preprocess import Observation, preprocess
from headcast.preprocess.rgbd import RGBDFrame
from headcast.render import images

logger = logging.getLogger(__name__)


@dataclass
class Reconstruction:
    """A fitted frame: parameters, camera-frame vertices (V, 3) and model landmarks (68, 3) in metres,
    and the report dict."""

    params: HeadParams
    vertices: np.ndarray
    landmarks: np.ndarray
    report: dict
    offsets: np.ndarray | None = None  # the detail layer: rest-space vertex offsets (V, 3) metres


def reconstruct_frame(frame: RGBDFrame, model: HeadModel | threads.Job, out: Path, method: str = "full", *,
                      landmarks: str = "mediapipe", face: int | None = None, forehead: bool = False,
                      hull_margin: float = HULL_MARGIN, config: FitConfig | None = None,
                      truth: np.ndarray | None = None, started: float | None = None,
                      detail: str = "none", force: bool = False) -> Reconstruction:
    """``headcast reconstruct`` on a loaded (upright) frame: preprocess, fit ``model`` with ``method``, write
    the reconstruction folder ``out`` (see the module docstring) and return the result. ``out`` is checked
    first (:func:`headcast.io.outputs.check_output_dir`; ``force`` replaces an earlier reconstruction there).
    ``model`` may be a :class:`headcast.core.threads.Job` of :func:`prepare_fitter` (the command line starts
    one before it reads the frame), else its fitter is prepared beside the preprocessing.

    landmarks, face, forehead, hull_margin: as :func:`headcast.preprocess.preprocess.preprocess` (its
    point subsampling uses ``config.seed``). truth: ground-truth vertices (V, 3) in the camera frame
    (synthetic input): their errors go into the report as ``ground_truth_mm``. started: the
    ``time.perf_counter()`` the run began at, for ``seconds_total`` (default: now). detail: ``normal`` adds
    the detail layer fitted to the frame's head points (the visible side only; :mod:`headcast.fit.detail`),
    ``none`` (default) keeps the paper's fit as it is.
    """
    if detail not in ("normal", "none"):
        raise HeadcastError(f"detail must be normal or none, not {detail!r}")
    started = time.perf_counter() if started is None else started
    threads.apply()
    config = config or FitConfig()
    check_output_dir(out, recon.KIND, force=force, inputs=_inputs(frame))  # refuse before the work
    job = model if isinstance(model, threads.Job) else threads.Job(prepare_fitter, model, config, name="fitter")
    obs = preprocess(frame, landmarks, face=face, forehead=forehead, hull_margin=hull_margin, seed=config.seed)
    pictures = threads.Job(input_pictures, frame, name="pictures")  # encoded beside the fit
    fitter = job.result()
    model = fitter.model
    rec = fit_observation(obs, fitter, method)
    if detail == "normal":
        from headcast.fit.detail import detailed_vertices, fit_offsets  # scipy's sparse solvers: only here

        rec.offsets, rec.report["detail"] = fit_offsets(model, rec.params, rec.vertices, head_points(obs))
        rec.vertices = detailed_vertices(model, rec.params, rec.offsets)
    if truth is not None:
        rec.report["ground_truth_mm"] = synthetic_errors(model, rec.vertices, truth)
    rec.report["seconds_total"] = time.perf_counter() - started
    write_reconstruction(Path(out), obs, rec, model, force=force, pictures=pictures)
    return rec


def _inputs(frame: RGBDFrame) -> tuple:
    """The files a frame was read from (an output may not replace or lie inside them)."""
    return frame.color_path, frame.depth_path, frame.intrinsics_path


def prepare_fitter(model: HeadModel | str, config: FitConfig | None = None) -> RGBDFitter:
    """A fitter for ``model`` (or the model spec to resolve) with the native modules the reconstruction loads
    later already loaded: scipy.spatial (the face cloud's hull: the preprocessing then finds it loaded instead
    of importing it beside this thread's scipy imports) and Open3D (the fit's closest points). Run as a
    :class:`headcast.core.threads.Job` beside the frame's reading and preprocessing: about 0.5 s of CPU, mostly
    under the GIL, which MediaPipe's graphs and this thread's zlib and array copies leave; how much of it
    the command's wall clock hides needs an idle core (bench/RESULTS.md, "speed")."""
    import scipy.spatial  # noqa: F401

    from headcast.core.scene import open3d_native
    from headcast.model.registry import resolve_model

    fitter = make_fitter(resolve_model(model) if isinstance(model, str) else model, config)
    open3d_native()
    return fitter


def make_fitter(model: HeadModel, config: FitConfig | None = None) -> RGBDFitter:
    """A fitter for ``model`` (expression bounds from the model's metadata)."""
    rng = model.meta.get("expr_range")
    return RGBDFitter(model, model.name, tuple(rng) if rng else None, config)


def fit_observation(obs: Observation, fitter: RGBDFitter, method: str = "full") -> Reconstruction:
    """Run ``method`` on a preprocessed frame and measure the result against the observation."""
    t0 = time.perf_counter()
    targets = Targets(obs.landmarks3d, obs.valid, obs.points, obs.landmarks2d, obs.frame.K,
                      scene_points=head_points(obs) if fitter.cfg.grow_mm > 0 else None)
    res: FitResult = fitter.fit(targets, method)
    seconds = time.perf_counter() - t0
    x = fitter.pk.pack(res.params)
    (_, _, dist), verts = fitter.closest(x, obs.points)  # block 3's last mesh: its Open3D scene is kept
    lmk = fitter.landmarks_cam(x)
    report = res.report()
    report["paper_losses"] = paper_losses(report["blocks"])
    report.update(method=method, model=fitter.model_name, seconds_fit=seconds,
                  points=obs.counts(), **measure(lmk, obs, dist))
    return Reconstruction(res.params, verts, lmk, report)


def head_points(obs: Observation, radius: float = 0.15) -> np.ndarray:
    """Depth points (M, 3) within ``radius`` metres of the 3D landmarks' centre: the head and its surroundings."""
    from headcast.core.camera import depth_to_points

    pts, _ = depth_to_points(obs.frame.depth, obs.frame.K)
    c = np.nanmean(obs.landmarks3d[obs.valid], axis=0)
    return pts[np.linalg.norm(pts - c, axis=1) < radius]


def measure(lmk: np.ndarray, obs: Observation, dist: np.ndarray) -> dict:
    """Landmark errors (mm) of the fitted landmarks (68, 3), camera frame, and the statistics (mm) of the
    face points' distances ``dist`` (n,) metres to the fitted mesh."""
    inner = np.array([i for i in INNER if obs.valid[i]])
    e3 = np.linalg.norm(lmk[inner] - obs.landmarks3d[inner], axis=1) * 1000
    e2 = np.linalg.norm(project(lmk, obs.frame.K) - obs.landmarks2d, axis=1)
    d = dist * 1000
    return {
        "landmarks_3d_mm": {"mean": float(e3.mean()), "median": float(np.median(e3)), "n": int(len(inner))},
        "landmarks_2d_px": {"mean": float(e2.mean()), "median": float(np.median(e2))},
        "point_to_mesh_mm": {"median": float(np.median(d)), "mean": float(d.mean()),
                             "p95": float(np.percentile(d, 95)), "n_points": int(len(d))},
    }


def paper_losses(blocks: list[dict]) -> dict:
    """The paper's Table 1 quantities from the block reports: Loss1 = landmark L2 (RMSE) after block 1,
    Loss2 = landmark L2 + L3D after block 2, Loss3 = L3D after block 3; lengths in mm, L3D in mm^2.
    With region growing (``grow_mm``), Loss2 is on the landmark-hull points and Loss3 on the grown set."""
    b = {x["name"]: x for x in blocks}
    out = {}
    if "block1" in b:
        out["loss1_landmarks_l2_mm"] = b["block1"]["landmark_rmse_mm"]
    if "block2" in b:
        out["loss2_landmarks_l2_mm"] = b["block2"]["landmark_rmse_mm"]
        out["loss2_l3d_mm2"] = b["block2"]["l3d_mm2"]
    if "block3" in b:
        out["loss3_l3d_mm2"] = b["block3"]["l3d_mm2"]
    return out


def write_reconstruction(out_dir: Path, obs: Observation, rec: Reconstruction, model: HeadModel,
                         force: bool = False, pictures: threads.Job | None = None) -> Path:
    """Write every output of a reconstruction into ``out_dir`` atomically (``force``: replace an earlier one).

    The pictures are drawn and encoded on the thread plan's threads while this one renders the overlay and
    writes the meshes (PNG's zlib releases the GIL); with one thread, all in turn. ``pictures``: a Job of
    :func:`input_pictures` (started before the fit, so the input's PNGs are encoded beside it; default: one started here)."""
    frame = obs.frame
    workers = threads.plan().count
    pictures = pictures or threads.Job(input_pictures, frame, name="pictures")
    with staged_dir(out_dir, recon.KIND, force=force, inputs=_inputs(frame)) as tmp, \
            ThreadPoolExecutor(workers) as pool:
        pending = []

        def save(image_of, name):
            job = lambda: (tmp / name).write_bytes(images.encode_png(image_of()))  # noqa: E731
            if workers > 1:
                pending.append(pool.submit(job))
            else:
                job()

        save(lambda: landmark_picture(obs, project(rec.landmarks, frame.K)), recon.LANDMARKS_PNG)
        hits, shaded = images.render_shaded(rec.vertices, model.faces, frame.K)
        save(lambda: images.blend(frame.color, shaded, hits.hit, 0.6), recon.OVERLAY_PNG)
        save(lambda: images.depth_residual_image(frame.color, frame.depth, hits.depth, _face_pixels(obs)),
             recon.DEPTH_RESIDUAL_PNG)
        recon.write_params(tmp, rec.params, frame.K, rec.offsets)
        write_obj(tmp / recon.MESH_OBJ, rec.vertices, model.faces, model.uv, model.uv_faces)
        write_ply(tmp / recon.MESH_PLY, rec.vertices, model.faces)
        frame.K.to_json(tmp / recon.INTRINSICS)
        for name, data in pictures.result().items():
            (tmp / name).write_bytes(data)
        report = dict(rec.report)
        report["input"] = {"color": str(frame.color_path) if frame.color_path else None,
                           "depth": str(frame.depth_path) if frame.depth_path else None,
                           "rotation_deg_cw": frame.rotation, "size": [frame.K.width, frame.K.height]}
        (tmp / recon.FIT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        for job in pending:
            job.result()  # re-raises a failed write inside the staging: nothing half-written
    return Path(out_dir)


def input_pictures(frame: RGBDFrame) -> dict[str, bytes]:
    """The reconstruction's copy of its input, PNG-encoded: ``color.png`` and ``depth_mm.png`` (uint16 mm)."""
    return {recon.COLOR: images.encode_png(frame.color), recon.DEPTH: images.encode_png(images.depth_mm(frame.depth))}


def landmark_picture(obs: Observation, model_uv: np.ndarray) -> np.ndarray:
    """Detected landmarks (dots by region, crosses where not lifted) and the fitted model's (red rings)."""
    from headcast.preprocess.overlay import overlay_image

    H, W = obs.frame.shape
    s = float(np.clip(900 / max(H, W), 0.4, 4.0))
    img = overlay_image(obs.frame.color, obs.landmarks2d, obs.valid, labels=False, scale=s,
                        text="dots: detected   red rings: fitted model")
    return images.draw_points(img, model_uv * s, (255, 0, 0), radius=max(3, round(2 * s)))


def _face_pixels(obs: Observation) -> np.ndarray:
    """(H, W) bool: pixels of the face points (the region the fit saw)."""
    H, W = obs.frame.shape
    uv = np.round(project(obs.points, obs.frame.K)).astype(int)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    m = np.zeros((H, W), bool)
    m[uv[ok, 1], uv[ok, 0]] = True
    return m
