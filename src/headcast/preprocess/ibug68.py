"""The iBUG-68 landmark layout and the MediaPipe FaceMesh (478 points) to iBUG-68 correspondence.

iBUG-68 indices (0-based), "right"/"left" are the subject's (the subject's right is on the image's left):
0-16 jaw contour from the right ear to the left ear (8 is the chin), 17-21 right brow, 22-26 left brow
(each from the outer end inwards, then outwards), 27-30 nose bridge top to tip, 31-35 nostrils,
36-41 right eye (36 outer corner, 39 inner), 42-47 left eye (42 inner, 45 outer), 48-59 outer lips
(48 and 54 the corners), 60-67 inner lips.

The correspondence starts from the mapping in common public use and was checked against dlib's
68-point predictor on 42 real faces (photos, the TrueDepth mannequin, video frames): points that were
clearly off were moved, keeping the table left-right symmetric. Some iBUG points sit between two
FaceMesh vertices; they are the mean of both.
"""

from __future__ import annotations

import numpy as np

#: FaceMesh vertex indices for each iBUG-68 point (one or two; two are averaged).
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16
    (127,), (234,), (93, 177), (132, 58), (58, 172), (136,), (149,), (176, 148), (152,),
    (400, 377), (378,), (365,), (397, 288), (361, 288), (323, 401), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107, 55),
    (336, 285), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168,), (197,), (195, 5), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47
    (33,), (160, 159), (158,), (155,), (153,), (144,),
    (382,), (385,), (387, 386), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405, 321), (314,), (17,), (84,), (181, 91),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)

#: Index ranges of the iBUG-68 regions.
REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose": range(27, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}

INNER = np.arange(17, 68)        # every point but the 17 jaw points (the paper's "face oval")
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45
CHIN = 8
BROWS = np.arange(17, 27)


def mediapipe_to_ibug68_matrix() -> np.ndarray:
    """(68, 478) float64 averaging weights: ``ibug = W @ mesh``."""
    W = np.zeros((68, 478))
    for k, idx in enumerate(MEDIAPIPE_TO_IBUG68):
        W[k, list(idx)] = 1.0 / len(idx)
    return W


def mediapipe_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """FaceMesh points (..., 478, D) (or the first 468 without iris refinement) -> iBUG-68 points (..., 68, D)."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.shape[-2] not in (468, 478):
        raise ValueError(f"expected 468 or 478 FaceMesh points, got {mesh.shape[-2]}")
    return np.stack([mesh[..., list(idx), :].mean(axis=-2) for idx in MEDIAPIPE_TO_IBUG68], axis=-2)


def inter_ocular(points68: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (36, 45) of (..., 68, D) points, in their units."""
    return np.linalg.norm(points68[..., RIGHT_EYE_OUTER, :] - points68[..., LEFT_EYE_OUTER, :], axis=-1)
