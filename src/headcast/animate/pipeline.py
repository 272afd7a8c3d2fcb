"""``headcast animate RECON_DIR VIDEO --out DIR``: drive a reconstructed head with a video of anyone.

Stages (timed separately): decode, landmarks (MediaPipe FaceMesh in tracking mode), the driver's
identity (once, from ``identity_frames`` frames of the first ``identity_window_s`` seconds that
span the head poses seen there; :func:`headcast.animate.track.select_calibration`), the per-frame
fit (Loss5, :mod:`headcast.animate.fit`), and the preview video, in one pass (:func:`detect_and_track`):
landmarks in a thread of their own, the identity once its window's landmarks are in, then each frame
fitted as it arrives and drawn and encoded by the preview's thread meanwhile, from the frames the
landmark thread decoded (:class:`headcast.animate.video.SharedFrames`). The subject keeps its own beta;
only theta and psi come from the driver. Output folder (written whole or not at all; every file in
docs/formats.md, read and written by :mod:`headcast.io.anim`): ``params.npz`` and ``frames.jsonl``
(the per-frame parameters, Loss5, landmarks; the subject's beta, the driver's identity, fps and
threshold), ``animation.mp4`` (the input frame with its landmarks, green detected and red fitted,
beside the reconstructed head, textured when the folder has a texture), ``preview.png`` and
``report.json`` (frame counts, the share under the threshold, errors, jitter, times, the settings).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from headcast.animate.fit import Observation, TrackConfig
from headcast.animate.identity import DriverIdentity
from headcast.animate.metrics import landmark_nme, stillest_stretch, vertex_speed_mm
from headcast.animate.subject import Subject, load_subject, subject_light, with_appearance  # noqa: F401 (the stage's API)
from headcast.animate.track import TrackedFrame, Tracker, jaw_expressions, select_calibration
from headcast.animate.video import Prefetched, SharedFrames, VideoInfo, VideoLandmarker, read_frames, video_info
from headcast.core import threads
from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.threads import one_blas_thread
from headcast.io import anim as anim_io
from headcast.io.outputs import check_output_dir, shown, staged_dir
from headcast.io.validate import check_options
from headcast.model.head_model import HeadModel
from headcast.render.gl import DEFAULT_LIGHT, LIGHTS

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------ stages
@dataclass
class Detections:
    """Per-frame observations (None: no face), the video's info and the stage times in seconds."""

    info: VideoInfo
    observations: list[Observation | None]
    seconds_decode: float
    seconds_detect: float


def detect_video(video: str | Path, max_frames: int | None = None, info: VideoInfo | None = None) -> Detections:
    """Decode every frame (ahead, in a thread) and find its landmarks (MediaPipe FaceMesh, tracking mode);
    ``info``: the video's :func:`video_info` when the caller has it. ``seconds_decode`` is the time spent
    waiting for decoded frames."""
    info = info or video_info(video)
    sec = dict(decode=0.0, detect=0.0)
    obs = list(_landmarks(video, max_frames, info, sec))
    return Detections(info, obs, sec["decode"], sec["detect"])


@dataclass
class Track:
    """The parameter stream, the driver's identity, calibration frame indices, and stage times (s)."""

    frames: list[TrackedFrame]
    identity: DriverIdentity
    calibration_frames: list[int]
    seconds_identity: float
    seconds_fit: float


def track(model: HeadModel, observations: list[Observation | None], fps: float, config: TrackConfig | None = None,
          size: tuple[int, int] | None = None) -> Track:
    """Estimate the driver's identity, then fit every frame in order; ``size`` (width, height) pixels of the
    video gives the tracker its nominal focal length (:meth:`TrackConfig.for_video`)."""
    if not any(o is not None for o in observations):
        raise HeadcastError("no face found in any frame")
    cfg = config or TrackConfig()
    return _track_stream(iter(observations), model, cfg.for_video(*size) if size else cfg, fps)[1]


def detect_and_track(video: str | Path, model: HeadModel, cfg: TrackConfig, info: VideoInfo,
                     max_frames: int | None = None, emit=None, share: SharedFrames | None = None
                     ) -> tuple[Detections, Track]:
    """:func:`detect_video` and :func:`track` as one pass, with the same result: the driver's identity as
    soon as its window's landmarks are in, then each frame fitted as its landmarks arrive and handed to
    ``emit(observation, tracked_frame)`` in order (frames before the first face once it is fitted, holding
    its parameters), so a consumer (the preview video) works while the next frames are found; ``share``
    gets every decoded frame for that consumer (:class:`SharedFrames`, closed here on an error)."""
    sec = dict(decode=0.0, detect=0.0)
    with Prefetched(_landmarks(video, max_frames, info, sec, share), depth=1 << 16) as found:  # no wait for the fits
        try:
            obs, trk = _track_stream(found, model, cfg, info.fps, emit, f" of {video}")
        except BaseException:
            if share is not None:  # the landmark thread may wait for a reader that will not come
                share.close()
            raise
    return Detections(info, obs, sec["decode"], sec["detect"]), trk


def _track_stream(observations: Iterator[Observation | None], model: HeadModel, cfg: TrackConfig, fps: float,
                  emit=None, source: str = "") -> tuple[list[Observation | None], Track]:
    """The observations as they come, and their :class:`Track`: the identity once its window is in, then
    every frame fitted in order and handed to ``emit`` (:func:`detect_and_track`); ``source`` ends the
    error message when no frame has a face."""
    window = max(1, int(round(cfg.identity_window_s * fps)))
    tracker = Tracker(model, cfg)
    obs: list[Observation | None] = []
    frames: list[TrackedFrame] = []
    cal: list[int] | None = None
    first: int | None = None  # the first frame with a face
    sec = dict(identity=0.0, fit=0.0)

    def fit_ready() -> None:
        nonlocal first
        t0 = time.perf_counter()
        while len(frames) < len(obs):
            i = len(frames)
            frames.append(tracker.step(obs[i]))
            if first is None and frames[i].face_found:
                first = i
                f = frames[i]
                for k in range(i):  # offline, frames before the first face hold the first fit too
                    frames[k] = TrackedFrame(f.theta, f.psi, f.eta, float("nan"), 0, False, f.landmarks)
                    if emit is not None:
                        emit(obs[k], frames[k])
            if first is not None and emit is not None:
                emit(obs[i], frames[i])
        sec["fit"] += time.perf_counter() - t0

    def calibrate() -> list[int]:
        t0 = time.perf_counter()
        idx = select_calibration(obs, cfg.identity_frames, window, cfg.identity_quiet_share)
        logger.info(f"animate: driver identity from {len(idx)} frames of the first {min(window, len(obs))}")
        tracker.calibrate([obs[i] for i in idx])
        sec["identity"] += time.perf_counter() - t0
        return idx

    for o in observations:
        obs.append(o)
        if cal is None and len(obs) >= window:
            cal = calibrate()
        if cal is not None:
            fit_ready()
    if cal is None:
        cal = calibrate()
        fit_ready()
    if first is None:
        raise HeadcastError(f"no face found in any of the {len(obs)} frames{source}")
    return obs, Track(frames, tracker.identity, cal, sec["identity"], sec["fit"])


def _landmarks(video: str | Path, max_frames: int | None, info: VideoInfo, sec: dict,
               share: SharedFrames | None = None) -> Iterator[Observation | None]:
    """Each frame's observation (None: no face), frames decoded ahead and handed to ``share`` when given;
    adds the seconds spent waiting for decoded frames and finding landmarks to ``sec`` (``decode``,
    ``detect``)."""
    n = 0
    with VideoLandmarker() as lm, Prefetched(read_frames(video, max_frames, info)) as images:
        while True:
            t0 = time.perf_counter()
            frame = next(images, None)
            t1 = time.perf_counter()
            sec["decode"] += t1 - t0
            if frame is None:
                return
            if share is not None:
                share.put(frame)
            det = lm(frame)
            sec["detect"] += time.perf_counter() - t1
            n += 1
            if n % 100 == 0:
                logger.info(f"animate: landmarks on {n} frames")
            yield None if det is None else Observation(det.landmarks, det.pupils)


# ------------------------------------------------------------------------ the whole stage
def animate(recon_dir: str | Path, video: str | Path, out_dir: str | Path, model_spec: str | HeadModel | None = None,
            threshold: float | None = None, max_iters: int | None = None, config: TrackConfig | None = None,
            write_video: bool = True, max_frames: int | None = None, copy_input: bool = False, truth=None,
            force: bool = False, light: str = DEFAULT_LIGHT, texture_wait=None, info: VideoInfo | None = None) -> dict:
    """Animate the head in ``recon_dir`` with the face in ``video``; write ``out_dir``; return the report.

    ``config`` holds the tracker's settings (default :class:`TrackConfig`); ``threshold`` and ``max_iters``,
    when given, replace its values. ``max_frames`` stops after that many frames; ``copy_input`` also puts
    the driving video in the folder (``input.mp4``, for the demo's built-in driver); ``truth`` (a
    :class:`headcast.animate.builtin.Motion`, when the video is the built-in motion) adds the recovered
    motion to the report; ``force`` replaces an earlier animation in ``out_dir``; ``light`` (fitted or
    neutral) lights the video's head (:func:`subject_light`). ``texture_wait``: when the texture stage is
    still making ``recon_dir``'s texture (the demo), a call that returns once it is done (or raises what it
    raised); the video's thread calls it before it reads the texture, the tracking does not wait. ``info``: the
    video's :func:`video_info` when the caller has read it already (the demo checks a given video first)."""
    threads.apply()
    with one_blas_thread():  # small matrices everywhere; and no BLAS pool at work while threads fork ffmpeg
        return _animate(recon_dir, video, out_dir, model_spec, _config(config, threshold, max_iters), write_video,
                        max_frames, copy_input, truth, force, light, texture_wait, info)


def _animate(recon_dir, video, out_dir, model_spec, cfg: TrackConfig, write_video: bool, max_frames, copy_input: bool,
             truth, force: bool, light: str, texture_wait, info: VideoInfo | None) -> dict:
    """:func:`animate` with its settings checked."""
    if light not in LIGHTS:
        raise HeadcastError(f"--light must be one of {', '.join(LIGHTS)}, not {light!r}")
    check_options({"max_frames": max_frames})  # None: every frame
    check_output_dir(out_dir, anim_io.KIND, force=force, inputs=(recon_dir, video))  # refuse before the work
    subject = load_subject(recon_dir, model_spec, texture=False)  # the video's thread reads the texture
    info = info or video_info(video)
    cfg = cfg.for_video(info.width, info.height)
    logger.info(f"animate: {video} ({info.width}x{info.height}, {info.fps:g} fps); subject model "
                f"'{subject.model.name}'")
    import_in_background("headcast.animate.preview" if write_video else None)
    with staged_dir(out_dir, anim_io.KIND, force=force, inputs=(recon_dir, video)) as tmp:
        preview = None
        if write_video:
            from headcast.animate.preview import PreviewThread, expected_frames

            preview = PreviewThread(tmp / anim_io.VIDEO, video, _textured(subject, recon_dir, texture_wait),
                                    info, cfg.threshold, light, expected_frames(info, max_frames))
        try:
            det, trk = detect_and_track(video, subject.model, cfg, info, max_frames, preview and preview.add,
                                        preview and preview.frames)
        except BaseException:
            if preview is not None:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    preview.close()
            raise
        sec, stills = preview.close() if preview is not None else (None, [])
        subject = preview.subject if preview is not None else subject  # the head the video shows
        report = summarise(subject, det, trk, cfg)
        if truth is not None:
            from headcast.animate.builtin import motion_recovery

            report["ground_truth"] = motion_recovery(subject.model, subject.params.beta, truth,
                                                     np.array([f.theta for f in trk.frames]),
                                                     np.array([f.psi for f in trk.frames]),
                                                     np.array([f.face_found for f in trk.frames]))
        logger.info(f"animate: {report['frames']} frames, {report['frames_with_face']} with a face; Loss5 < "
                    f"{cfg.threshold:g} in {100 * report['share_under_threshold']:.1f} %; fitting "
                    f"{report['fps']['fitting']:.0f} fps, end to end {report['fps']['end_to_end']:.1f} fps")
        if preview is not None:
            report["seconds"]["video"] = sec
            if stills:
                from headcast.render.images import save_png

                rows = [np.hstack(stills[k:k + 2]) for k in range(0, len(stills) - 1, 2)] or stills[:1]
                save_png(tmp / anim_io.PREVIEW, np.vstack(rows))
        if copy_input:
            import shutil

            shutil.copyfile(video, tmp / ("input" + (Path(video).suffix or ".mp4")))
        anim_io.write_animation(tmp, animation(subject, det, trk, cfg), ("loss", "iterations"), report)
    logger.info(f"animate: wrote {shown(out_dir)}/ (params.npz, frames.jsonl, report.json"
                f"{', animation.mp4, preview.png' if write_video else ''})")
    return report


def _textured(subject: Subject, recon_dir, texture_wait=None):
    """A call returning ``subject`` with its texture and light (:func:`with_appearance`) once ``texture_wait()``
    (when given) says the texture is made."""
    def load() -> Subject:
        if texture_wait is not None:
            texture_wait()
        return with_appearance(subject, recon_dir)
    return load


def import_in_background(module: str | None) -> threading.Thread | None:
    """Import MediaPipe, then ``module`` (when given) in a thread while MediaPipe finds landmarks in its own
    native threads; the stages that need it later find it loaded. MediaPipe is imported first, here, so
    that the two imports never run at once. An import error is left for the stage that needs the module."""
    from headcast.preprocess.native import import_mediapipe

    import_mediapipe()
    if module is None:
        return None

    def run() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - raised again, with context, where the module is used
            logger.debug(f"animate: importing {module} in the background failed", exc_info=True)

    t = threading.Thread(target=run, name=f"import {module}", daemon=True)
    t.start()
    return t


def _config(config: TrackConfig | None, threshold: float | None, max_iters: int | None) -> TrackConfig:
    """The tracker's settings: ``config`` (default TrackConfig()) with the explicitly given values, checked."""
    cfg = config or TrackConfig()
    threshold = cfg.threshold if threshold is None else threshold
    max_iters = cfg.max_iters if max_iters is None else max_iters
    check_options({"threshold": threshold, "max_iters": max_iters})  # as batch animate checks them
    return replace(cfg, threshold=float(threshold), max_iters=int(max_iters))


def animation(subject: Subject, det: Detections, trk: Track, cfg: TrackConfig) -> anim_io.Animation:
    """The animation folder's content (:mod:`headcast.io.anim`): the tracked frames with their Loss5,
    iterations, detected and fitted landmarks (N, 68, 2) pixels, the subject's beta, the driver's
    identity, the threshold used and a nominal camera for the video (its pixels are eta's;
    :meth:`Intrinsics.nominal`)."""
    fr = trk.frames
    n = len(fr)
    nan68 = np.full((68, 2), np.nan)
    cam = Intrinsics.nominal(det.info.width, det.info.height)  # eta's pixels are the video's
    extras = dict(loss=np.array([f.loss for f in fr]), iterations=np.array([f.iterations for f in fr]),
                  landmarks=np.array([nan68 if o is None else o.landmarks for o in det.observations]),
                  model_landmarks=np.array([nan68 if f.landmarks is None else f.landmarks for f in fr]),
                  driver_beta=trk.identity.beta, driver_offsets=trk.identity.offsets,
                  threshold=np.float64(cfg.threshold), camera_K=cam.K, image_size=np.array([cam.width, cam.height]))
    return anim_io.Animation(np.arange(n) / det.info.fps, np.array([f.theta for f in fr]),
                             np.array([f.psi for f in fr]), np.array([f.eta for f in fr]),
                             np.array([f.face_found for f in fr]), det.info.fps, subject.params.beta,
                             subject.model.name, extras)


def summarise(subject: Subject, det: Detections, trk: Track, cfg: TrackConfig) -> dict:
    """Counts, errors, jitter and times of one run."""
    n = len(trk.frames)
    found = np.array([f.face_found for f in trk.frames])
    loss = np.array([f.loss for f in trk.frames])[found]
    iters = np.array([f.iterations for f in trk.frames])[found]
    det68 = np.array([o.landmarks for o in det.observations if o is not None])
    fit68 = np.array([f.landmarks for f in trk.frames if f.face_found])
    nme = landmark_nme(fit68, det68)
    theta = np.array([f.theta for f in trk.frames])
    psi = np.array([f.psi for f in trk.frames])
    fps = det.info.fps
    still = stillest_stretch(np.array([o.landmarks if o is not None else np.zeros((68, 2)) for o in det.observations]),
                             np.array([o is not None for o in det.observations]), max(2, int(round(fps))))
    jitter = None
    if still is not None:
        a, b = still
        speed = vertex_speed_mm(subject.model, subject.params.beta, theta[a:b], psi[a:b])
        jitter = {"frames": [a, b], "mean_face_vertex_speed_mm_per_frame": float(speed.mean()),
                  "mm_per_second": float(speed.mean() * fps)}
    sec = {"decode": det.seconds_decode, "landmarks": det.seconds_detect, "identity": trk.seconds_identity,
           "fit": trk.seconds_fit}
    steady = sec["decode"] + sec["landmarks"] + sec["fit"]
    names = list(subject.model.meta.get("expression_names") or [])
    return {
        "frames": n, "frames_with_face": int(found.sum()), "fps_video": fps,
        "video": {"width": det.info.width, "height": det.info.height},
        "threshold": cfg.threshold,
        "share_under_threshold": float(np.mean(loss < cfg.threshold)),
        "loss5": {"mean": float(loss.mean()), "median": float(np.median(loss)), "p95": float(np.percentile(loss, 95)),
                  "max": float(loss.max())},
        "loss5_definition": "RMS over the 68 landmarks of the 2D distance between detected and fitted points "
                            "(eta, projected with the tracker's focal length, config.focal_px; orthographic "
                            "without one), divided by half the side of the square bounding the detected landmarks",
        "landmark_error_over_interocular": {"mean": float(nme.mean()), "median": float(np.median(nme))},
        "iterations": {"mean": float(iters.mean()), "max": int(iters.max())},
        "still_stretch_jitter": jitter,
        "seconds": sec,
        "ms_per_frame": {k: 1000 * v / n for k, v in sec.items() if k != "identity"},
        "fps": {"fitting": n / max(sec["fit"], 1e-9), "end_to_end": n / max(steady + sec["identity"], 1e-9),
                "end_to_end_steady": n / max(steady, 1e-9)},
        "driver_identity": dict(trk.identity.report, calibration_frames=trk.calibration_frames),
        "expressions_replaced_by_jaw_joint": [names[i] for i in jaw_expressions(subject.model)],
        "model": subject.model.name, "textured": subject.texture is not None,
        "config": asdict(cfg),
    }


def render_builtin_motion(recon_dir: str | Path, video: str | Path, model_spec: str | None = None, seed: int = 0):
    """Render the built-in scripted motion of the head in ``recon_dir`` (its shape and detail, not its
    texture: :func:`headcast.animate.builtin.builtin_motion_video`) into ``video``; returns the ground truth
    (a :class:`headcast.animate.builtin.Motion`)."""
    from headcast.animate.builtin import builtin_motion_video

    shape = load_subject(recon_dir, model_spec, texture=False)
    with one_blas_thread():
        return builtin_motion_video(video, shape.model, shape.params.beta, seed=seed)
