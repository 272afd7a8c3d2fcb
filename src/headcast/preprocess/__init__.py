"""Preprocessing (the paper's section 1): RGB-D input, 2D landmarks, 3D landmarks, the face point cloud."""

from headcast.preprocess.cloud import FaceCloud, face_point_cloud, hull_points, inside_hull
from headcast.preprocess.ibug68 import MEDIAPIPE_TO_IBUG68, REGIONS, mediapipe_to_ibug68
from headcast.preprocess.landmarks import Face, Landmarks2D, detect_faces, detect_landmarks
from headcast.preprocess.lift import Landmarks3D, lift_landmarks
from headcast.preprocess.overlay import observation_overlay, overlay_image
from headcast.preprocess.preprocess import Observation, preprocess
from headcast.preprocess.rgbd import RGBDFrame, load_rgbd
from headcast.preprocess.rotate import camera_rotation, find_upright_rotation, rotate_frame

__all__ = [
    "FaceCloud", "face_point_cloud", "hull_points", "inside_hull", "MEDIAPIPE_TO_IBUG68", "REGIONS",
    "mediapipe_to_ibug68", "Face", "Landmarks2D", "detect_faces", "detect_landmarks", "Landmarks3D",
    "lift_landmarks", "observation_overlay", "overlay_image", "Observation", "preprocess",
    "RGBDFrame", "load_rgbd", "camera_rotation", "find_upright_rotation", "rotate_frame",
]
