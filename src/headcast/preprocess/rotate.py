"""Turning an RGB-D frame by quarter turns, and finding the turn that makes the face upright.

Phone depth cameras store frames in the sensor's landscape orientation, so a portrait capture
arrives with the face on its side. Turning the image clockwise by ``d`` degrees turns the camera
frame about its z axis: ``X_new = camera_rotation(d) @ X_old`` for every back-projected point.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.preprocess.landmarks import detect_faces

ROTATIONS = (0, 90, 180, 270)


def _quarter_turns(degrees_cw: int) -> int:
    if int(degrees_cw) % 90:
        raise HeadcastError(f"rotation must be 0, 90, 180 or 270 degrees, not {degrees_cw}")
    return (int(degrees_cw) // 90) % 4


def rotate_image(image: np.ndarray, degrees_cw: int) -> np.ndarray:
    """An (H, W, ...) array turned clockwise by a multiple of 90 degrees (contiguous copy)."""
    return np.ascontiguousarray(np.rot90(image, -_quarter_turns(degrees_cw)))


def camera_rotation(degrees_cw: int) -> np.ndarray:
    """(3, 3) rotation taking camera-frame points of the original image to those of the turned one."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][_quarter_turns(degrees_cw)]
    # a clockwise turn of the image maps (x, y) -> (-y, x) per quarter turn (y points down)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def rotate_frame(frame, degrees_cw: int):
    """An RGBDFrame with color, depth and intrinsics turned clockwise; ``rotation`` accumulates."""
    d = 90 * _quarter_turns(degrees_cw)
    if d == 0:
        return frame
    return dataclasses.replace(frame, color=rotate_image(frame.color, d), depth=rotate_image(frame.depth, d),
                               K=frame.K.rotated(d), rotation=(frame.rotation + d) % 360)


def find_upright_rotation(image: np.ndarray, method: str = "mediapipe", name: str = "COLOR") -> tuple[int, float]:
    """The clockwise turn (0, 90, 180, 270) in which the most confident upright face is found, and its score.

    Every turn is tried; a detector may also fire on an upside-down face, but with a lower score
    than on the upright one. MediaPipe's far-face model is tried (on every turn) only when its near-face
    model finds no face in any turn: a near face is not weighed against the far model's looser scores,
    and the far model is not loaded for a depth camera's frame. None found: HeadcastError.
    """
    turns = [rotate_image(image, d) for d in ROTATIONS]
    best = _most_confident(turns, method, far=False) or _most_confident(turns, method, far=True)
    if best is None:
        raise HeadcastError(f"no face found in {name}; tried rotations 0, 90, 180, 270")
    return best


def _most_confident(turns: list[np.ndarray], method: str, far: bool) -> tuple[int, float] | None:
    """(turn, score) of the most confident face over the turned images (in ROTATIONS' order), or None."""
    if far and method == "dlib":
        return None  # one detector: already tried
    best = None
    for d, image in zip(ROTATIONS, turns):
        faces = detect_faces(image, method, far=far)
        if faces:
            score = max(f.score for f in faces)
            if best is None or score > best[1]:
                best = (d, score)
    return best
