"""What a live sender streams: parameter frames tracked from a video file or camera as it plays, or
replayed at their own timestamps. Each item is ``(ParamFrame, wall time it became available)``."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Iterator

from headcast.core.errors import HeadcastError
from headcast.stream import codec as K

logger = logging.getLogger(__name__)


def paced(frames: Iterator[K.ParamFrame], realtime: bool = True) -> Iterator[tuple[K.ParamFrame, float]]:
    """(frame, wall time it became available): frames released at their own timestamps."""
    t0 = None
    for f in frames:
        if realtime:
            now = time.perf_counter()
            if t0 is None:
                t0 = now - f.t
            wait = t0 + f.t - now
            if wait > 0:
                time.sleep(wait)
        yield f, time.perf_counter()


def track_source(video: str | int, model, fps_hint: float | None = None, calibration_frames: int = 10,
                 max_frames: int | None = None) -> tuple[Iterator[tuple[K.ParamFrame, float]], float]:
    """Track a video file (or camera index) as it plays: (iterator of (ParamFrame, wall time), fps).

    Uses the animation stage's per-frame :class:`~headcast.animate.track.Tracker`; the driver's
    identity is calibrated on the first ``calibration_frames`` frames with a face (they are held
    back, then sent). A file is paced at its own frame rate, like a camera.
    """
    from headcast.animate.fit import Observation, TrackConfig
    from headcast.animate.track import Tracker
    from headcast.animate.video import VideoLandmarker, read_frames, video_info

    if isinstance(video, int):
        import cv2

        from headcast.preprocess.native import native_logs_shown

        level = cv2.utils.logging.getLogLevel()
        if not native_logs_shown():  # OpenCV's lines about each backend it tried: the error says it
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            cap = cv2.VideoCapture(video)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            raise HeadcastError(f"cannot open camera {video}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or fps_hint or 30.0)
        size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

        def frames():
            n = 0
            while max_frames is None or n < max_frames:
                ok, img = cap.read()
                if not ok:
                    break
                n += 1
                yield img[..., ::-1].copy()
            cap.release()
        it, realtime = frames(), False  # a camera paces itself
    else:
        info = video_info(video)
        fps, size = info.fps, (info.width, info.height)
        it, realtime = read_frames(video, max_frames), True

    def gen():
        tracker = Tracker(model, TrackConfig().for_video(*size))
        lm = VideoLandmarker()
        t_start = time.perf_counter()
        held: list[tuple[int, Observation | None, float]] = []
        calibrated = False
        try:
            for i, img in enumerate(it):
                if realtime:  # a file plays at its frame rate
                    wait = t_start + i / fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                t_cap = time.perf_counter()
                det = lm(img)
                obs = None if det is None else Observation(det.landmarks, det.pupils)
                if not calibrated:
                    held.append((i, obs, t_cap))
                    faces = [o for _, o, _ in held if o is not None]
                    if len(faces) >= calibration_frames:
                        tracker.calibrate(faces)
                        logger.info("send: driver calibrated on %d frames", len(faces))
                        calibrated = True
                        if realtime:  # the file starts playing now: no burst to catch up with the clock
                            t_start = time.perf_counter() - (i + 1) / fps
                        for j, o, tc in held:
                            yield _param_frame(j, j / fps, tracker.step(o)), tc
                        held = []
                    continue
                yield _param_frame(i, i / fps, tracker.step(obs)), t_cap
            if not calibrated:  # short video: calibrate on what there is
                faces = [o for _, o, _ in held if o is not None]
                if faces:
                    tracker.calibrate(faces)
                for j, o, tc in held:
                    yield _param_frame(j, j / fps, tracker.step(o)), tc
        finally:
            lm.close()

    return gen(), fps


def primed(source: Iterator[tuple[K.ParamFrame, float]]) -> tuple[Iterator, K.ParamFrame]:
    """Run ``source`` up to its first frame with a face (calibration happens there, before any
    connection): (the same stream from its start, that frame); HeadcastError when there is none."""
    head = []
    for item in source:
        head.append(item)
        if item[0].face:
            return itertools.chain(head, source), item[0]
    raise HeadcastError("no face found in the video; nothing to send")


def _param_frame(seq: int, t: float, tf) -> K.ParamFrame:
    return K.ParamFrame(seq, t, tf.theta, tf.psi, tf.eta, bool(tf.face_found))
