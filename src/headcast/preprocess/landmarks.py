"""Faces and 2D landmarks on a color image: MediaPipe FaceMesh (mapped to iBUG-68) or dlib's 68-point predictor.

Pixel coordinates are (x right, y down) with the centre of the top-left pixel at (0, 0).
Faces are numbered from left to right by the centre of their box (``face=0`` is the leftmost).
Detectors are loaded once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.preprocess.ibug68 import inter_ocular, mediapipe_to_ibug68
from headcast.preprocess.native import QuietGraph, import_mediapipe, quiet_graph

METHODS = ("mediapipe", "dlib")
MAX_FACES = 5
# A FaceMesh landmark hidden by more than this (x the eye-corner distance) behind the mesh is
# occluded, not merely just past the silhouette: measured on the mannequin and photos, points past
# the silhouette of a visible side sit 0.15-0.6 behind, the far side of a three-quarter view 0.9-1.6.
HIDDEN_LIMIT = 0.8
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1) in pixels and the detector's confidence."""

    bbox: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))

    @property
    def center_x(self) -> float:
        return float(self.bbox[0] + self.bbox[2]) / 2


@dataclass(frozen=True)
class Landmarks2D:
    """68 iBUG-ordered landmarks of one face.

    points: (68, 2) float64 pixels. mesh: (478, 3) MediaPipe points (x, y in pixels, z relative depth
    in the same pixel scale, smaller is nearer) or None for dlib. score: detection confidence (the
    detector's own scale: MediaPipe 0..1, dlib HOG margin). bbox: (4,) x0, y0, x1, y1.
    n_faces: faces found; face_index: the one used (left to right).
    """

    points: np.ndarray
    score: float
    bbox: np.ndarray
    n_faces: int
    face_index: int
    method: str
    visible: np.ndarray
    mesh: np.ndarray | None = None


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise HeadcastError(f"landmark method must be one of {', '.join(METHODS)}, not {method!r}")
    return method


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


# --- detectors (loaded once) -------------------------------------------------------------------

@functools.cache
def _blazeface(model_selection: int) -> QuietGraph:
    mp = import_mediapipe()
    return quiet_graph(lambda: mp.solutions.face_detection.FaceDetection(model_selection=model_selection,
                                                                         min_detection_confidence=0.5))


@functools.cache
def _facemesh() -> QuietGraph:
    mp = import_mediapipe()
    return quiet_graph(lambda: mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                               max_num_faces=MAX_FACES, min_detection_confidence=0.5))


def dlib_model_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """Path of a model file shipped by ``face_recognition_models`` (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise HeadcastError("dlib's landmark model is missing: install face_recognition_models")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise HeadcastError(f"dlib model {name} not found in face_recognition_models")


@functools.cache
def _dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dependency missing
        raise HeadcastError(f"dlib is not installed ({e}); run the set-up or use --landmarks mediapipe") from None
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_model_path()))


@functools.cache
def facemesh_triangles() -> np.ndarray:
    """(854, 3) triangles of the 468-vertex FaceMesh, recovered from MediaPipe's edge list."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    nbrs: dict[int, set[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, set()).add(b)
        nbrs.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in nbrs[a] & nbrs[b]}
    return np.array(sorted(tris), dtype=np.int64)


def hidden_depth(mesh: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far (L, 3) points lie behind the nearest FaceMesh surface over their pixel, in eye-corner distances.

    mesh: (478, 3) FaceMesh points in pixels (z smaller is nearer). points: (L, 3) in the same units.
    0 when nothing of the mesh is in front.
    """
    tris = facemesh_triangles()
    A, B, C = (mesh[tris[:, i]] for i in range(3))
    p = points[:, None, :2]
    e0, e1, e2 = B[None, :, :2] - A[None, :, :2], C[None, :, :2] - A[None, :, :2], p - A[None, :, :2]
    den = e0[..., 0] * e1[..., 1] - e1[..., 0] * e0[..., 1]
    den = np.where(np.abs(den) < 1e-9, np.nan, den)
    b1 = (e2[..., 0] * e1[..., 1] - e1[..., 0] * e2[..., 1]) / den
    b2 = (e0[..., 0] * e2[..., 1] - e2[..., 0] * e0[..., 1]) / den
    b0 = 1 - b1 - b2
    inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
    z = b0 * A[None, :, 2] + b1 * B[None, :, 2] + b2 * C[None, :, 2]
    front = np.where(inside, z, np.inf).min(axis=1)
    scale = float(inter_ocular(mediapipe_to_ibug68(mesh)[:, :2]))
    return np.clip(points[:, 2] - front, 0, None) / scale


# --- faces -------------------------------------------------------------------------------------

def _blazeface_faces(image: np.ndarray, model_selection: int) -> list[Face]:
    H, W = image.shape[:2]
    faces = []
    for det in _blazeface(model_selection).process(image).detections or []:
        box = det.location_data.relative_bounding_box
        kp = det.location_data.relative_keypoints
        # keypoints 0, 1 are the subject's right and left eye; upright means the right eye is on
        # the image's left and the eye line is within 45 degrees of horizontal.
        dx = (kp[1].x - kp[0].x) * W
        dy = (kp[1].y - kp[0].y) * H
        if abs(np.degrees(np.arctan2(dy, dx))) > 45:
            continue
        x0, y0 = box.xmin * W, box.ymin * H
        faces.append(Face(np.array([x0, y0, x0 + box.width * W, y0 + box.height * H]), float(det.score[0])))
    return faces


def _dlib_faces(image: np.ndarray) -> list[Face]:
    _, detector, _ = _dlib()
    # HOG finds faces of about 80 px and more; small images (e.g. 320x240 depth-camera color) get
    # one 2x upsampling when nothing is found at full size.
    for upsample in (0, 1):
        rects, scores, _ = detector.run(image, upsample, 0.0)
        if len(rects) or upsample or max(image.shape[:2]) > 2000:
            break
    return [Face(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float), float(s))
            for r, s in zip(rects, scores)]


def detect_faces(image: np.ndarray, method: str = "mediapipe", far: bool = True) -> list[Face]:
    """Upright faces in an RGB image, sorted left to right.

    mediapipe: BlazeFace short-range model (faces within about 2 m, the depth-camera case), then, with
    ``far``, the full-range model when it finds nothing; faces whose eye line is tilted more than 45
    degrees are not upright and are ignored. dlib: the HOG frontal detector (upright faces only by design).
    """
    image = _as_rgb(image)
    if _check_method(method) == "dlib":
        faces = _dlib_faces(image)
    else:
        faces = _blazeface_faces(image, 0) or (_blazeface_faces(image, 1) if far else [])
    return sorted(faces, key=lambda f: f.center_x)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pick(n: int, faces_area: list[float], face: int | None, name: str) -> int:
    if face is not None:
        if not 0 <= face < n:
            raise HeadcastError(f"--face {face} is out of range: {n} face(s) found in {name} "
                                f"(numbered 0..{n - 1} from left to right)")
        return face
    i = int(np.argmax(faces_area))
    if n > 1:
        logger.warning(f"{n} faces found in {name}; using the largest (face {i}, numbered from "
                       f"left to right); choose another with --face N")
    return i


def detect_landmarks(image: np.ndarray, method: str = "mediapipe", face: int | None = None,
                     name: str = "the image") -> Landmarks2D:
    """68 iBUG-ordered 2D landmarks of one face in an (H, W, 3) uint8 RGB image.

    Several faces: the largest is used and a warning is logged; ``face=N`` picks the
    N-th from the left instead. No face: HeadcastError naming ``name``.
    """
    image = _as_rgb(image)
    H, W = image.shape[:2]
    if _check_method(method) == "dlib":
        faces = detect_faces(image, "dlib")
        if not faces:
            raise HeadcastError(f"no face found in {name}")
        i = _pick(len(faces), [f.area for f in faces], face, name)
        dlib, _, predictor = _dlib()
        x0, y0, x1, y1 = faces[i].bbox.round().astype(int)
        shape = predictor(image, dlib.rectangle(int(x0), int(y0), int(x1) - 1, int(y1) - 1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Landmarks2D(pts, faces[i].score, faces[i].bbox, len(faces), i, "dlib", np.ones(68, bool))

    result = _facemesh().process(image)
    meshes = [np.array([(p.x * W, p.y * H, p.z * W) for p in lm.landmark]) for lm in result.multi_face_landmarks or []]
    if not meshes:
        raise HeadcastError(f"no face found in {name}")
    boxes = [np.r_[m[:, :2].min(0), m[:, :2].max(0)] for m in meshes]
    order = np.argsort([(b[0] + b[2]) / 2 for b in boxes], kind="stable")
    meshes = [meshes[k] for k in order]
    boxes = [boxes[k] for k in order]
    i = _pick(len(meshes), [float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes], face, name)
    # FaceMesh reports no confidence; take BlazeFace's score of the detection overlapping this face.
    overlaps = [(_iou(f.bbox, boxes[i]), f.score) for f in detect_faces(image, "mediapipe")]
    score = max(overlaps)[1] if overlaps and max(overlaps)[0] > 0.3 else float("nan")
    lm = mediapipe_to_ibug68(meshes[i])
    visible = hidden_depth(meshes[i], lm) <= HIDDEN_LIMIT
    return Landmarks2D(lm[:, :2], score, boxes[i], len(meshes), i, "mediapipe", visible, mesh=meshes[i])
