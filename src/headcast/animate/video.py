"""Video frames in, landmarks out: decoding with OpenCV's FFmpeg and MediaPipe FaceMesh in tracking mode.

Frames are (H, W, 3) uint8 RGB. Landmark pixels are (x right, y down) with the centre of the
top-left pixel at (0, 0), as :mod:`headcast.preprocess.landmarks`.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file
from headcast.io.validate import MAX_IMAGE_PIXELS
from headcast.preprocess.ibug68 import mediapipe_to_ibug68_matrix
from headcast.preprocess.native import import_mediapipe, native_logs_shown, quiet_graph

PANEL = 512  # height of the output videos' panels (the input frame, the rendered head), pixels
MAX_VIDEO_BYTES = 64 << 30  # a video file (it is decoded a frame at a time)
LEFT_IRIS, RIGHT_IRIS = 473, 468  # FaceMesh iris centres (refined mesh): the subject's left and right eye
ONE_DECODER_THREAD_PX = 1 << 19  # frames up to this size (480p, 720x720) are decoded on one thread (decoder_threads)
SHARED_FRAMES_BYTES = 512 << 20  # decoded frames held for the preview video (SharedFrames): 682 frames of 512x512
_TO_68 = mediapipe_to_ibug68_matrix()


@dataclass(frozen=True)
class VideoInfo:
    """fps, frame size (width, height, as decoded: upright when the file says it is rotated) and the
    duration in seconds (the frame count over fps; 0 when unknown)."""

    fps: float
    width: int
    height: int
    duration: float

    @property
    def frames(self) -> int:
        """The frame count the header gives (0 when it gives none)."""
        return int(round(self.duration * self.fps))


def video_info(path: str | Path) -> VideoInfo:
    """Read a video's metadata (its container's header, nothing decoded; in this process, about 5 ms);
    HeadcastError when it is missing or not a video."""
    import cv2

    path = Path(path)
    check_input_file(path, "video", MAX_VIDEO_BYTES)
    with _capture(path, 1) as cap:
        fps, frames = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if w <= 0 or h <= 0 or not np.isfinite(fps) or fps <= 0:
        raise HeadcastError(f"cannot read video {path}: no video stream")
    if w * h > MAX_IMAGE_PIXELS:  # before a frame is decoded
        raise HeadcastError(f"video {path} has {w}x{h} frames, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx "
                            "headcast reads")
    return VideoInfo(float(fps), w, h, float(frames / fps) if np.isfinite(frames) and frames > 0 else 0.0)


def read_frames(path: str | Path, max_frames: int | None = None, info: VideoInfo | None = None
                ) -> Iterator[np.ndarray]:
    """Decode frames (H, W, 3) uint8 RGB in order, every frame the file holds once (up to ``max_frames``);
    HeadcastError when the file cannot be decoded. ``info``: the file's :func:`video_info` when the caller
    has it. Decoded in this process by OpenCV's FFmpeg: the same pixels as the ffmpeg command's rgb24
    output (the same libswscale conversion), without a process and a pipe (bench/RESULTS.md, "batchcpu");
    its decoder on :func:`decoder_threads`."""
    import cv2

    path = Path(path)
    info = info or video_info(path)
    n = 0
    with _capture(path, decoder_threads(info)) as cap:
        try:
            while max_frames is None or n < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                n += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frame)  # OpenCV decodes to BGR
        except cv2.error as e:
            raise HeadcastError(f"cannot decode video {path} after {n} frames: {_first_line(e)}") from None
    if n == 0:
        raise HeadcastError(f"video {path} has no frames")


def decoder_threads(info: VideoInfo) -> int:
    """The decoder's threads for a video: one for frames up to :data:`ONE_DECODER_THREAD_PX`, else the
    thread plan's count (:mod:`headcast.core.threads`). Frame threading costs CPU: the shared videos
    whole took 0.53 -> 1.00 (d6), 0.78 -> 1.09 (wojtek), 0.28 -> 0.34 CPU s (d0) with two threads instead
    of one, for a decoder that on one thread (0.5-3.6 ms a 512x512 frame) already keeps ahead of the
    landmarks it feeds (MediaPipe 3.4-4 ms a frame). A 1280x720 frame took 4.8 ms on one thread, as long
    as its landmarks (5 ms): larger frames get the plan's threads, lest the decoder hold the landmarks back."""
    from headcast.core.threads import apply

    return 1 if info.width * info.height <= ONE_DECODER_THREAD_PX else apply().count


@contextmanager
def _capture(path: Path, threads: int) -> Iterator:
    """An open ``cv2.VideoCapture`` of ``path`` (OpenCV's FFmpeg reader, ``threads`` decoder threads),
    released at the end; HeadcastError when it cannot be opened."""
    quiet = not native_logs_shown()  # FFmpeg's and OpenCV's own lines: the error says what went wrong
    if quiet:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read at OpenCV's first FFmpeg capture
    import cv2

    level = cv2.utils.logging.getLogLevel()
    if quiet:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(threads)])
    except cv2.error as e:
        raise HeadcastError(f"cannot read video {path}: {_first_line(e)}") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    try:
        if not cap.isOpened():
            raise HeadcastError(f"cannot read video {path}: not a video FFmpeg can open")
        yield cap
    finally:
        cap.release()


class Prefetched:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead: decoding (ffmpeg reading into
    a pipe) goes on while the caller works on the previous frames. Re-raises the iterator's exception
    where the caller would have met it; :meth:`close` stops the thread early."""

    def __init__(self, items: Iterator, depth: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self._thread.start()

    def _run(self, items: Iterator) -> None:
        end: tuple = ("end", None)
        try:
            for x in items:
                while not self._stop.is_set():
                    try:
                        self._queue.put(("item", x), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    break
        except BaseException as e:  # handed to the caller in order
            end = ("error", e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        while not self._stop.is_set():
            try:
                self._queue.put(end, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self):
        kind, x = self._queue.get()
        if kind == "item":
            return x
        self._queue.put((kind, x))  # every later call ends the same way
        if kind == "error":
            raise x
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SharedFrames:
    """Decoded frames handed from the pass that finds landmarks (:meth:`put`, in order) to a later reader
    of the same frames in the same order (:meth:`frames`, the preview video), so the video is decoded
    once. At most ``budget`` bytes are held: before the reader starts, a frame past the budget is dropped
    with every later one, and the reader decodes those itself; once it reads, :meth:`put` waits for it
    (the reader takes frame i only after the observation of frame i, so it never waits for a put).
    :meth:`close` (the reader is done or failed, or the landmark pass failed) ends every wait."""

    def __init__(self, video: str | Path, info: VideoInfo, budget: int = SHARED_FRAMES_BYTES):
        self.video, self.info, self.budget = video, info, int(budget)
        self._kept: collections.deque = collections.deque()
        self._bytes = 0
        self._put = 0  # frames put so far
        self._dropped_from: int | None = None  # the first frame not kept (it and every later one)
        self._reading = self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: np.ndarray) -> None:
        """The next decoded frame (H, W, 3) uint8."""
        with self._cond:
            self._put += 1
            if self._closed or self._dropped_from is not None:
                return
            while self._reading and self._kept and self._bytes + frame.nbytes > self.budget and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return
            if self._bytes + frame.nbytes > self.budget and self._kept:  # the reader has not started
                self._dropped_from = self._put - 1
                return
            self._kept.append(frame)
            self._bytes += frame.nbytes

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in order from the first: those kept, then (after a drop) decoded here."""
        taken = 0
        while True:
            with self._cond:
                self._reading = True
                frame = self._kept.popleft() if self._kept else None
                if frame is not None:
                    self._bytes -= frame.nbytes
                    self._cond.notify_all()
            if frame is None:
                break
            taken += 1
            yield frame
        with Prefetched(itertools.islice(read_frames(self.video, None, self.info), taken, None)) as rest:
            yield from rest

    def close(self) -> None:
        """No more waiting in :meth:`put`; later frames are not kept."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class VideoWriter:
    """An H.264 MP4 (yuv420p) from (H, W, 3) uint8 RGB frames, encoded by ffmpeg while the caller makes
    the next frames: frames go through a short queue to a thread that pipes them raw into ffmpeg.

    ``preset`` is x264's speed/size trade; ``veryfast`` costs under half the CPU of the default
    (``medium``) for about the same file size at ``crf`` 15 on talking-head previews. Width and height
    are padded up to a multiple of ``macro_block_size``. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 15, preset: str = "veryfast",
                 macro_block_size: int = 2, queued: int = 8):
        self.path, self.fps, self.crf, self.preset, self.block = Path(path), fps, crf, preset, macro_block_size
        self._queue: queue.Queue = queue.Queue(maxsize=queued)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def append_data(self, frame: np.ndarray) -> None:
        """Queue one frame (every frame the same size); raises what the encoder raised, if anything."""
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode, args=(frame.shape[1], frame.shape[0]), daemon=True)
            self._thread.start()
        self._queue.put(np.ascontiguousarray(frame))

    def _encode(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        from headcast.core.threads import apply

        gen = imageio_ffmpeg.write_frames(
            str(self.path), (width, height), fps=self.fps, codec="libx264", quality=None, macro_block_size=self.block,
            ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p", "-preset", self.preset, "-crf", str(self.crf),
                                                     "-threads", str(apply().count)])
        try:
            gen.send(None)
            while (frame := self._queue.get()) is not None:
                gen.send(frame)
        except BaseException as e:  # reported to the caller on its next append or at close
            self._error = e
            while self._queue.get() is not None:  # let the caller finish its puts
                pass
        finally:
            gen.close()

    def close(self) -> None:
        """Finish the file (waits for the encoder); raises what the encoder raised, if anything."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


@dataclass
class Detection:
    """Landmarks of one frame: iBUG-68 (68, 2) pixels, pupils (2, 2) (left, right) pixels, the full
    FaceMesh (478, 3) (x, y pixels, z relative depth in the same scale)."""

    landmarks: np.ndarray
    pupils: np.ndarray
    mesh: np.ndarray


class VideoLandmarker:
    """MediaPipe FaceMesh in video (tracking) mode: detection runs only when tracking is lost.

    One instance per video (it keeps the track); ``close()`` releases it.
    """

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        mp = import_mediapipe()
        self._mesh = quiet_graph(lambda: mp.solutions.face_mesh.FaceMesh(  # no native log lines (preprocess.native)
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence))

    def __call__(self, frame: np.ndarray) -> Detection | None:
        """Landmarks of the face in ``frame`` (H, W, 3) uint8 RGB, or None when there is none."""
        H, W = frame.shape[:2]
        with warnings.catch_warnings():  # protobuf deprecation noise inside MediaPipe
            warnings.simplefilter("ignore", UserWarning)
            res = self._mesh.process(np.ascontiguousarray(frame))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        mesh = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64) * np.array([W, H, W])
        mesh[:, :2] -= 0.5  # MediaPipe's normalised coordinates put pixel centres at (i + 0.5) / size
        pupils = mesh[[LEFT_IRIS, RIGHT_IRIS], :2] if len(mesh) >= 478 else None
        return Detection(_TO_68[:, : len(mesh)] @ mesh[:, :2], pupils, mesh)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "VideoLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
