"""Random appearance of a synthetic subject: per-vertex skin albedo and SH lighting.

Albedo values are display-space RGB reflectances in [0, 1] (the image is ``albedo * shading``, as
in DECA-style fitters; no gamma). Every function takes a numpy Generator and is deterministic for it.
"""

from __future__ import annotations

import numpy as np

from headcast.core.params import JOINT_NAMES
from headcast.core.sh import sh_ambient, sh_directional
from headcast.model.eyes import gaze_directions
from headcast.model.head_model import HeadModel
from headcast.synth import mesh as M

# skin reflectance from light to dark (display RGB); a subject's tone is a random point on this path
SKIN_TONES = np.array([[0.95, 0.80, 0.72], [0.86, 0.66, 0.55], [0.74, 0.53, 0.41],
                       [0.58, 0.40, 0.29], [0.40, 0.27, 0.19]])
HAIR_COLORS = np.array([[0.07, 0.05, 0.04], [0.18, 0.11, 0.06], [0.33, 0.21, 0.12],
                        [0.55, 0.42, 0.26], [0.45, 0.20, 0.10], [0.50, 0.48, 0.46]])
IRIS_COLORS = np.array([[0.30, 0.17, 0.08], [0.17, 0.10, 0.06], [0.42, 0.32, 0.15],  # browns first
                        [0.30, 0.40, 0.25], [0.30, 0.44, 0.60], [0.42, 0.47, 0.52]])
IRIS_RADIUS = 0.006  # metres (human iris diameter ~12 mm)
PUPIL_RADIUS = 0.002


def smooth_field(points: np.ndarray, rng: np.random.Generator, wavelengths=(0.02, 0.08),
                 terms: int = 8) -> np.ndarray:
    """A random smooth scalar field (N,) with unit standard deviation over points (N, 3) metres."""
    out = np.zeros(len(points))
    for _ in range(terms):
        k = rng.normal(size=3)
        k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(*wavelengths))
        out += np.sin(points @ k + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(terms / 2)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (N,) from points (N, 3) to segment a-b, and the position 0..1 along it."""
    ab = b - a
    s = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - (a + s[:, None] * ab), axis=1), s


def _brow_distance(v: np.ndarray, brow: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (V,) of every vertex to a brow polyline (outer end first) and the position 0..1 along it."""
    pts = brow - 0.0025 * up  # iBUG brow points trace the brow's upper edge; centre the band below it
    best = np.full(len(v), np.inf)
    pos = np.zeros(len(v))
    for i in range(len(pts) - 1):
        d, s = _segment_distance(v, pts[i], pts[i + 1])
        closer = d < best
        best[closer] = d[closer]
        pos[closer] = (i + s[closer]) / (len(pts) - 1)
    return best, pos


def skin_albedo(model: HeadModel, rng: np.random.Generator, tone: float | None = None,
                hair: bool | None = None) -> tuple[np.ndarray, dict]:
    """Per-vertex albedo (V, 3) float32 in [0, 1] and a dict describing the draw.

    Skin of a random tone (0 light .. 1 dark) with low-frequency blotches and fine grain, darker
    redder lips (mask ``lips``), eyebrows along the brow landmarks 17-26, cheeks slightly redder,
    eyeballs (masks ``left_eyeball`` and ``right_eyeball``, else ``eyes``) with white sclera, a
    coloured iris and a dark pupil around each eye joint's forward (+z) axis, and optionally short
    hair on the ``scalp`` mask.
    """
    v = model.v_template.astype(np.float64)
    V = len(v)
    op = M.smoothing_operator(model.faces, V)
    drawn_tone, drawn_hair = rng.uniform(0, 1), rng.random() < 0.65  # drawn even when overridden
    tone = drawn_tone if tone is None else float(tone)
    hair = drawn_hair if hair is None else bool(hair)
    x = tone * (len(SKIN_TONES) - 1)
    i = min(int(x), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[i] + (x - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    skin = skin * np.array([1.0, rng.uniform(0.96, 1.03), rng.uniform(0.95, 1.04)])  # hue jitter
    hair_rgb = HAIR_COLORS[rng.integers(len(HAIR_COLORS))] * rng.uniform(0.85, 1.15)
    iris_rgb = IRIS_COLORS[rng.integers(3 if tone > 0.55 else len(IRIS_COLORS))] * rng.uniform(0.85, 1.15)

    blotch = smooth_field(v, rng, (0.03, 0.10))
    redness = smooth_field(v, rng, (0.02, 0.06))
    grain = M.smooth(rng.normal(size=V), op, 1)
    albedo = skin[None, :] * (1 + 0.05 * blotch + 0.02 * grain)[:, None]
    albedo[:, 0] *= 1 + 0.025 * redness

    lmk = model.landmark_vertices(v)
    up = np.array([0.0, 1.0, 0.0])
    cheeks = [(lmk[2] + lmk[31]) / 2 + 0.01 * up, (lmk[14] + lmk[35]) / 2 + 0.01 * up]
    blush = sum(np.exp(-((v - c) ** 2).sum(1) / (2 * 0.018 ** 2)) for c in cheeks)
    albedo *= (1 - rng.uniform(0.03, 0.08) * blush[:, None] * np.array([0.0, 1.0, 0.8]))

    lips = M.smooth(np.isin(np.arange(V), model.masks["lips"]).astype(float), op, 2)
    lips = np.clip((lips - 0.2) / 0.6, 0, 1)
    lip_tint = np.array([0.86, 0.62, 0.63]) * rng.uniform(0.88, 1.04)
    albedo *= 1 - lips[:, None] * (1 - lip_tint)[None, :]

    not_eye = ~np.isin(np.arange(V), model.masks["eyes"])
    density = rng.uniform(0.5, 0.85)
    brow_rgb = np.minimum(np.minimum(hair_rgb, 0.3), 0.5 * skin) * 0.9  # always darker than hair and skin
    fibres = np.clip(1 + 0.35 * smooth_field(v, rng, (0.002, 0.005), terms=12), 0, 1.3)
    for brow in (lmk[17:22], lmk[22:27][::-1]):  # both polylines run from the outer end inwards
        d, s = _brow_distance(v, brow, up)
        half = 0.0018 + 0.0028 * s  # thin tail, thicker head
        w = np.clip(density * fibres * np.clip((half + 0.0012 - d) / 0.0024, 0, 1), 0, 1) * not_eye
        albedo = albedo * (1 - w[:, None]) + w[:, None] * brow_rgb[None, :]

    if hair and "scalp" in model.masks:
        w = M.smooth(np.isin(np.arange(V), model.masks["scalp"]).astype(float), op, 4)
        w = np.clip(1.6 * w - 0.3, 0, 1)
        streaks = 1 + 0.08 * smooth_field(v, rng, (0.005, 0.02))
        albedo = albedo * (1 - w[:, None]) + (w * streaks)[:, None] * hair_rgb[None, :]

    eyes = _eye_colors(model, v, iris_rgb, rng)
    if eyes is not None:
        idx, rgb = eyes
        albedo[idx] = rgb
    info = {"skin_tone": tone, "skin_rgb": skin.tolist(), "hair": hair, "hair_rgb": hair_rgb.tolist(),
            "iris_rgb": iris_rgb.tolist()}
    return np.clip(albedo, 0, 1).astype(np.float32), info


def _eye_colors(model: HeadModel, v: np.ndarray, iris_rgb: np.ndarray, rng: np.random.Generator):
    """Sclera / iris / pupil colours for the eyeball vertices around the two eye joints."""
    if "left_eyeball" in model.masks and "right_eyeball" in model.masks:
        idx = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    else:
        idx = np.asarray(model.masks["eyes"])
    if idx.size == 0 or model.n_joints < len(JOINT_NAMES):
        return None
    eyes = [JOINT_NAMES.index("left_eye"), JOINT_NAMES.index("right_eye")]
    centres = model.j_regressor[eyes].astype(np.float64) @ v  # left, right eye joints (template)
    p = v[idx]
    which = np.argmin(((p[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    rel = p - centres[which]
    r = np.linalg.norm(rel, axis=1)
    radius = np.median(r)
    gaze = np.stack(gaze_directions(model))  # rest gaze of the left and right eye
    cos_to_front = np.einsum("nc,nc->n", rel, gaze[which]) / np.maximum(r, 1e-9)
    iris_cos = np.cos(np.arcsin(min(IRIS_RADIUS / radius, 1.0)))
    pupil_cos = np.cos(np.arcsin(min(PUPIL_RADIUS / radius, 1.0)))
    sclera = np.array([0.90, 0.87, 0.83]) * rng.uniform(0.92, 1.0)
    rgb = np.tile(sclera, (len(idx), 1))
    iris = cos_to_front > iris_cos
    ring = iris & (cos_to_front < iris_cos + 0.25 * (1 - iris_cos))  # darker limbal ring
    rgb[iris] = iris_rgb * (1 + 0.15 * smooth_field(rel[iris], rng, (0.001, 0.004)))[:, None]
    rgb[ring] *= 0.6
    rgb[cos_to_front > pupil_cos] = 0.03
    return idx, np.clip(rgb, 0, 1)


def random_lighting(rng: np.random.Generator) -> np.ndarray:
    """SH lighting (9, 3): grey-ish ambient plus a key light from the front upper hemisphere.

    Ambient 0.45-0.65 and key 0.3-0.55 (irradiance units, slightly tinted), the key light within
    55 degrees left or right and -5..45 degrees up: surfaces facing the camera get 0.6-1.2, so skin
    albedo maps to colours without clipping in most pixels.
    """
    tint = 1 + rng.uniform(-0.06, 0.06, 3)
    ambient = rng.uniform(0.45, 0.65)
    key = rng.uniform(0.3, 0.55)
    az, el = np.deg2rad(rng.uniform(-55, 55)), np.deg2rad(rng.uniform(-5, 45))
    d = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])  # view frame
    return sh_ambient(ambient * tint) + sh_directional(d, key * tint)
