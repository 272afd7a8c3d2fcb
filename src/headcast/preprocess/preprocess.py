"""The paper's preprocessing: 2D landmarks, 3D landmarks and the filtered face point cloud of one frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.io.validate import MAX_HULL_MARGIN_M, check_number
from headcast.preprocess.cloud import HULL_MARGIN, FaceCloud, face_point_cloud
from headcast.preprocess.landmarks import Landmarks2D, detect_landmarks
from headcast.preprocess.lift import Landmarks3D, lift_landmarks
from headcast.preprocess.rgbd import RGBDFrame

MIN_LIFTED = 20       # landmarks with depth needed to place the face
MIN_POINTS = 200      # face points needed for the point-to-mesh loss
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """What the fit sees of one RGB-D frame (camera frame of the turned-upright frame, metres).

    landmarks2d: (68, 2) pixels; landmarks3d: (68, 3) metres, NaN where ``valid`` is False;
    points: (N, 3) face points; colors: (N, 3) uint8; detection: the full landmark result (with
    MediaPipe's 478 points in ``detection.mesh``); cloud: counts of the point filter.
    """

    frame: RGBDFrame
    detection: Landmarks2D
    landmarks2d: np.ndarray
    landmarks3d: np.ndarray
    valid: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    cloud: FaceCloud

    @property
    def n_lifted(self) -> int:
        return int(self.valid.sum())

    def counts(self) -> dict[str, int]:
        """Numbers for reports: landmarks lifted, depth pixels, points in the hull, face points kept."""
        return {"landmarks": len(self.valid), "landmarks_lifted": self.n_lifted, "depth_points": self.cloud.n_depth,
                "hull_points": self.cloud.n_hull, "face_points": self.cloud.n_points}


def preprocess(frame: RGBDFrame, method: str = "mediapipe", face: int | None = None, forehead: bool = False,
               hull_margin: float = HULL_MARGIN, max_points: int | None = None, seed: int = 0) -> Observation:
    """Landmarks, 3D landmarks and the face point cloud of an (upright) RGB-D frame.

    method: 'mediapipe' or 'dlib'. face: which face (left to right) when there are several.
    forehead: extend the hull above the brows. hull_margin: metres the landmark hull is widened along
    the camera rays (0 = the paper's hull of the landmarks alone). max_points: keep a random subset
    of the face points (drawn with ``seed``). Progress lines go to the module's logger (INFO).
    HeadcastError when no face is found or there is no valid depth around it, or hull_margin is outside
    0..MAX_HULL_MARGIN_M.
    """
    check_number(hull_margin, "--hull-margin", 0, MAX_HULL_MARGIN_M, unit="metres")
    det = detect_landmarks(frame.color, method, face, name=frame.name)
    logger.info(f"landmarks: {method}, {det.n_faces} face(s), using face {det.face_index} (score {det.score:.2f})")
    lm3 = lift_landmarks(det.points, frame.depth, frame.K)
    valid = lm3.valid & det.visible
    lm3 = Landmarks3D(np.where(valid[:, None], lm3.points, np.nan), valid, lm3.radius)
    hidden = int((~det.visible).sum())
    side = 2 * lm3.radius + 1
    logger.info(f"3D landmarks: {lm3.n_lifted} of 68 lifted ({side}x{side} px depth window"
                f"{f'; {hidden} hidden from the camera' if hidden else ''})")
    depth_name = str(frame.depth_path) if frame.depth_path else "the depth map"
    if lm3.n_lifted < MIN_LIFTED:
        raise HeadcastError(f"no valid depth around the face in {depth_name}: only {lm3.n_lifted} of 68 landmarks "
                            f"have depth (need {MIN_LIFTED})")
    cloud = face_point_cloud(frame.depth, frame.color, frame.K, lm3.points, lm3.valid, forehead=forehead,
                             margin=hull_margin, max_points=max_points, seed=seed)
    logger.info(f"face points: {cloud.n_points} kept of {cloud.n_hull} inside the landmark hull"
                f"{' (with forehead)' if forehead else ''}")
    if cloud.n_points < MIN_POINTS:
        raise HeadcastError(f"no valid depth around the face in {depth_name}: only {cloud.n_points} face points "
                            f"(need {MIN_POINTS})")
    return Observation(frame, det, det.points, lm3.points, lm3.valid, cloud.points, cloud.colors, cloud)
