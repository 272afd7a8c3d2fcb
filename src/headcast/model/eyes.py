"""The eyes of a head model: each eyeball's rest gaze and colours for an untextured eyeball.

The rest gaze of an eye runs from its joint (the eyeball's centre) to the eyeball point in front of
the centroid of its six eye-contour landmarks (iBUG 42-47 left, 36-41 right): a real eye at rest looks
out of the middle of its opening, while a model's own iris may not (ICT-FaceKit's irises look about 10 degrees
outwards), and the tracker's pupil point and the drawn iris must agree with the photo's. Metres, model
frame (x to the subject's left, y up, face along +z).
"""

from __future__ import annotations

import numpy as np

EYES = ((3, "left_eyeball", range(42, 48)), (4, "right_eyeball", range(36, 42)))  # joint, eyeball, eye contour
SCLERA_RGB, PUPIL_RGB = (0.92, 0.9, 0.86), (0.03, 0.03, 0.03)
IRIS_RGB = (0.35, 0.25, 0.18)
IRIS_COS, PUPIL_COS = 0.92, 0.985  # cosines of the iris's and the pupil's angular radii about the gaze


def gaze_directions(model) -> list[np.ndarray]:
    """Unit rest-gaze directions (3,) of the left and right eye (+z where a model has no eyeballs)."""
    v = model.v_template.astype(np.float64)
    lm = model.landmark_vertices().astype(np.float64)
    out = []
    for joint, mask, contour in EYES:
        d = np.array([0.0, 0.0, 1.0])
        if mask in model.masks and model.masks[mask].size and model.n_joints > joint:
            c = model.j_regressor[joint].astype(np.float64) @ v
            r = float(np.median(np.linalg.norm(v[model.masks[mask]] - c, axis=1)))
            dx, dy = lm[list(contour), :2].mean(0) - c[:2]
            d = np.array([dx, dy, np.sqrt(max(r * r - dx * dx - dy * dy, 0.25 * r * r))])
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

