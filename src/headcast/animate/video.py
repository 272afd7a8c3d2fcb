"""Video frames in, landmarks out: decoding with imageio-ffmpeg and MediaPipe FaceMesh in tracking mode.

Frames are (H, W, 3) uint8 RGB. Landmark pixels are (x right, y down) with the centre of the
top-left pixel at (0, 0), as :mod:`headcast.preprocess.landmarks`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file
from headcast.io.validate import MAX_IMAGE_PIXELS
from headcast.preprocess.ibug68 import mediapipe_to_ibug68_matrix
from headcast.preprocess.native import import_mediapipe, quiet_graph

MAX_VIDEO_BYTES = 64 << 30  # a video file (it is decoded a frame at a time)
LEFT_IRIS, RIGHT_IRIS = 473, 468  # FaceMesh iris centres (refined mesh): the subject's left and right eye
_TO_68 = mediapipe_to_ibug68_matrix()


@dataclass(frozen=True)
class VideoInfo:
    """fps, frame size (width, height) and the duration in seconds (0 when unknown)."""

    fps: float
    width: int
    height: int
    duration: float


def video_info(path: str | Path) -> VideoInfo:
    """Read a video's metadata; HeadcastError when it is missing or not a video."""
    import imageio.v3 as iio

    path = Path(path)
    check_input_file(path, "video", MAX_VIDEO_BYTES)
    try:
        meta = iio.immeta(path, plugin="FFMPEG")
    except Exception as e:  # imageio/ffmpeg raise assorted types for unreadable files
        raise HeadcastError(f"cannot read video {path}: {_first_line(e)}") from None
    if "size" not in meta or not meta.get("fps"):
        raise HeadcastError(f"cannot read video {path}: no video stream")
    w, h = meta["size"]
    if int(w) * int(h) > MAX_IMAGE_PIXELS:  # before a frame is decoded
        raise HeadcastError(f"video {path} has {w}x{h} frames, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx "
                            "headcast reads")
    dur = meta.get("duration") or 0.0
    return VideoInfo(float(meta["fps"]), int(w), int(h), float(dur if np.isfinite(dur) else 0.0))


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames (H, W, 3) uint8 RGB in order; HeadcastError when the file cannot be decoded."""
    import imageio.v3 as iio

    path = Path(path)
    video_info(path)
    n = 0
    try:
        for frame in iio.imiter(path, plugin="FFMPEG"):
            if max_frames is not None and n >= max_frames:
                return
            n += 1
            yield np.ascontiguousarray(frame[..., :3])
    except HeadcastError:
        raise
    except Exception as e:
        raise HeadcastError(f"cannot decode video {path} after {n} frames: {_first_line(e)}") from None
    if n == 0:
        raise HeadcastError(f"video {path} has no frames")


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
