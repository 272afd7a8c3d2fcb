"""The eyes of a head model: each eyeball's rest gaze and colours for an untextured eyeball.

A model may mark its irises (``left_iris`` / ``right_iris`` masks: ICT-FaceKit's iris material, whose
irises look about 10 degrees outwards at rest); the rest gaze of an eye is then the direction from
its joint to the iris's centroid, else the model's +z (FLAME). Metres, model frame (x to the
subject's left, y up, face along +z).
"""

from __future__ import annotations

import numpy as np

EYES = ((3, "left_eyeball", "left_iris"), (4, "right_eyeball", "right_iris"))  # joint, eyeball mask, iris mask
SCLERA_RGB, PUPIL_RGB = (0.92, 0.9, 0.86), (0.03, 0.03, 0.03)
IRIS_RGB = (0.35, 0.25, 0.18)
IRIS_COS, PUPIL_COS = 0.92, 0.985  # cosines of the iris's and the pupil's angular radii about the gaze


def gaze_directions(model) -> list[np.ndarray]:
    """Unit rest-gaze directions (3,) of the left and right eye."""
    v = model.v_template.astype(np.float64)
    out = []
    for joint, _, iris in EYES:
        d = np.array([0.0, 0.0, 1.0])
        if iris in model.masks and model.masks[iris].size and model.n_joints > joint:
            d = v[model.masks[iris]].mean(0) - model.j_regressor[joint].astype(np.float64) @ v
        out.append(d / np.linalg.norm(d))
    return out


def eye_colors(model, base=(0.82, 0.74, 0.68), iris_rgb=IRIS_RGB) -> np.ndarray:
    """Per-vertex colours (V, 3) for the untextured head: ``base`` skin, white eyeballs with an
    ``iris_rgb`` iris and a black pupil about each eye's rest gaze (a textured head takes its irises
    from the photo instead)."""
    col = np.tile(np.asarray(base, dtype=np.float64), (model.n_vertices, 1))
    v = model.v_template.astype(np.float64)
    for (joint, mask, _), gaze in zip(EYES, gaze_directions(model)):
        if mask not in model.masks or model.n_joints <= joint:
            continue
        ids = model.masks[mask]
        rel = v[ids] - model.j_regressor[joint].astype(np.float64) @ v
        cos = rel @ gaze / np.maximum(np.linalg.norm(rel, axis=1), 1e-9)
        rgb = np.tile(SCLERA_RGB, (len(ids), 1))
        rgb[cos > IRIS_COS] = iris_rgb
        rgb[cos > PUPIL_COS] = PUPIL_RGB
        col[ids] = rgb
    return col

