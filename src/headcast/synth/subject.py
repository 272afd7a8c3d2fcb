"""A synthetic subject: model parameters, placement in front of the camera, albedo and lighting."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from headcast.core.camera import to_camera
from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, pose_slice
from headcast.io.validate import check_number
from headcast.model.head_model import HeadModel
from headcast.model.rig import PointSet, yaw_degrees
from headcast.model.skinning import FixedShape, rodrigues
from headcast.synth.appearance import random_lighting, skin_albedo

N_STREAMS = 7  # independent random streams: beta, expression, pose, placement, albedo, light, scene


@dataclass
class SynthSubject:
    """Ground truth of one synthetic subject.

    Attributes:
        beta: (S,) identity coefficients.
        psi: (E,) expression coefficients.
        theta: (N_POSE,) axis-angle pose ``[root | neck | jaw | left eye | right eye]``, radians.
        s: scale of the model->camera map ``X_cam = s * FLIP @ X_model + t``.
        t: (3,) translation of that map, camera frame, metres.
        albedo: (V, 3) float32 per-vertex RGB reflectance in [0, 1].
        lighting: (9, 3) SH light coefficients (see :mod:`headcast.core.sh`).
        seed: the seed the subject was drawn with; the scene around it (wall, torso) derives from it.
        info: what was drawn (yaw/pitch/roll in degrees, expressions by name, skin tone, ...).
    """

    beta: np.ndarray
    psi: np.ndarray
    theta: np.ndarray
    s: float
    t: np.ndarray
    albedo: np.ndarray
    lighting: np.ndarray
    seed: int
    info: dict = field(default_factory=dict)


def expression_names(model: HeadModel) -> list[str] | None:
    """Names of the expression components when the model's metadata lists them."""
    for key in ("expr_names", "expression_names", "expressions"):
        names = model.meta.get(key)
        if isinstance(names, (list, tuple)) and len(names) == model.n_expr:
            return [str(n) for n in names]
    return None


def active_expressions(model: HeadModel, psi: np.ndarray) -> dict[str, float]:
    """The non-zero components of psi (E,) by name (by index when the model names none)."""
    names = expression_names(model)
    return {(names[i] if names else str(i)): round(float(psi[i]), 4) for i in np.flatnonzero(psi)}


def streams(seed: int) -> list[np.random.Generator]:
    """The subject's independent random generators; overriding one quantity leaves the others as drawn."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(N_STREAMS)]


def _truncated_normal(rng: np.random.Generator, n: int, bound: float) -> np.ndarray:
    x = rng.normal(size=n)
    while (bad := np.abs(x) > bound).any():
        x[bad] = rng.normal(size=int(bad.sum()))
    return x


def random_expression(model: HeadModel, rng: np.random.Generator, scale: float, max_active: int):
    """Sparse expression: a few components (paired _L/_R when named so) for bounded bases such as
    ICT's [0, 1] weights; a truncated normal over the first 10 components otherwise."""
    E = model.n_expr
    psi = np.zeros(E)
    rng_ = model.meta.get("expr_range")
    if rng_ is None:
        k = min(10, E)
        psi[:k] = scale * _truncated_normal(rng, k, 2.0)
        return psi
    lo, hi = float(rng_[0]), float(rng_[1])
    names = expression_names(model)
    n_active = min(int(rng.poisson(1.5)), max_active)
    for _ in range(n_active):
        i = int(rng.integers(E))
        w = lo + (hi - lo) * scale * rng.uniform(0.15, 1.0)
        psi[i] = w
        if names and names[i][-2:] in ("_L", "_R") and rng.random() < 0.7:
            twin = names[i][:-1] + ("R" if names[i].endswith("L") else "L")
            if twin in names:
                psi[names.index(twin)] = np.clip(w * rng.uniform(0.8, 1.2), lo, hi)
    return psi


def _expression_from_dict(model: HeadModel, expression: dict) -> np.ndarray:
    names = expression_names(model)
    psi = np.zeros(model.n_expr)
    for key, w in expression.items():
        if isinstance(key, str) and not key.isdigit():
            if not names or key not in names:
                known = f"; known: {', '.join(names)}" if names else " (the model names no expressions)"
                raise HeadcastError(f"unknown expression {key!r} for model {model.name!r}{known}")
            i = names.index(key)
        else:
            i = int(key)
            if not 0 <= i < model.n_expr:
                raise HeadcastError(f"expression index {i} is outside 0..{model.n_expr - 1}")
        psi[i] = float(w)
    return psi


def random_subject(model: HeadModel, seed: int = 0, *, yaw_range_deg: float = 30.0,
                   pitch_range_deg: float = 12.0, roll_range_deg: float = 8.0, expr_scale: float = 0.6,
                   max_expressions: int = 4, shape_scale: float = 1.0,
                   body_yaw_range_deg: float = 10.0, distance_range: tuple[float, float] = (0.35, 0.6),
                   jaw_max_rad: float = 0.1,
                   gaze_max_rad: float = 0.1, beta: np.ndarray | None = None,
                   expression: dict | np.ndarray | None = None, yaw_deg: float | None = None,
                   pitch_deg: float | None = None, roll_deg: float | None = None,
                   distance: float | None = None, skin_tone: float | None = None) -> SynthSubject:
    """Draw a random subject facing the camera.

    Identity: beta ~ N(0, 1) truncated at +-2, times ``shape_scale`` (ICT and FLAME modes are one
    standard deviation per unit). Expression: for bounded bases (``model.meta['expr_range']``, ICT's
    [0, 1]) up to ``max_expressions`` active components of weight up to ``expr_scale`` of the range,
    mirrored _L/_R pairs; else N(0, expr_scale) on the first 10. Head pose relative to the camera:
    yaw (turn towards the subject's left is positive), pitch (positive looks down) and roll uniform
    within their ranges, composed as R = Rz(roll) Ry(yaw) Rx(pitch); the root joint (body and
    shoulders) takes a yaw within ``body_yaw_range_deg`` and the neck the rest, so root then neck
    give R and :func:`headcast.model.lbs.head_yaw_degrees` returns the yaw. Jaw opened by
    0..``jaw_max_rad`` (closed in 40 % of subjects); both eyes turned by the same small gaze.
    Placement: the centre of the inner 51 landmarks at a depth uniform in ``distance_range`` metres,
    within a few centimetres of the optical axis; s = 1.

    Any of beta, expression (dict name-or-index -> weight, or a full (E,) array), yaw/pitch/roll
    (degrees), distance (metres) and skin_tone (0 light .. 1 dark) overrides the random draw
    without changing the other draws.
    """
    if not 0 <= yaw_range_deg <= 90:
        raise HeadcastError(f"yaw range must be 0..90 degrees, not {yaw_range_deg}")
    if skin_tone is not None:
        check_number(skin_tone, "--skin-tone", 0, 1)
    r_beta, r_expr, r_pose, r_place, r_albedo, r_light, _ = streams(seed)

    b = shape_scale * _truncated_normal(r_beta, model.n_shape, 2.0)
    if beta is not None:
        given = np.asarray(beta, dtype=np.float64).ravel()
        if given.size > model.n_shape:
            raise HeadcastError(f"beta has {given.size} values; model {model.name!r} has {model.n_shape}")
        b = np.zeros(model.n_shape)
        b[: given.size] = given

    psi = random_expression(model, r_expr, expr_scale, max_expressions)
    if isinstance(expression, dict):
        psi = _expression_from_dict(model, expression)
    elif expression is not None:
        psi = np.asarray(expression, dtype=np.float64).ravel()
        if psi.size != model.n_expr:
            raise HeadcastError(f"expression has {psi.size} values; model {model.name!r} has {model.n_expr}")

    angles = r_pose.uniform(-1, 1, 3) * np.array([yaw_range_deg, pitch_range_deg, roll_range_deg])
    body_yaw = float(r_pose.uniform(-1, 1) * min(body_yaw_range_deg, yaw_range_deg))
    jaw = r_pose.uniform(0, jaw_max_rad) if r_pose.random() < 0.6 else 0.0
    gaze = r_pose.uniform(-1, 1, 2) * gaze_max_rad
    yaw, pitch, roll = [float(a if o is None else o) for a, o in zip(angles, (yaw_deg, pitch_deg, roll_deg))]
    theta = np.zeros(N_POSE)
    head = Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True)
    body = Rotation.from_euler("Y", body_yaw, degrees=True)
    theta[pose_slice("root")] = body.as_rotvec()
    theta[pose_slice("neck")] = (body.inv() * head).as_rotvec()  # root then neck compose to the head rotation
    theta[pose_slice("jaw")] = [jaw, 0.0, 0.0]
    theta[pose_slice("left_eye")] = theta[pose_slice("right_eye")] = [gaze[0], gaze[1], 0.0]

    z = float(r_place.uniform(*distance_range)) if distance is None else float(distance)
    if not 0.05 < z < 20:
        raise HeadcastError(f"subject distance {z} m is outside 0.05..20 m")
    offset = np.array([r_place.uniform(-0.02, 0.02), r_place.uniform(-0.03, 0.01)]) * z / 0.45
    s = 1.0
    lmk = _posed(model, b, psi, theta)["landmarks"]
    centre = to_camera(lmk[17:].mean(0), s, np.zeros(3))
    t = np.array([offset[0], offset[1], z]) - centre

    albedo, look = skin_albedo(model, r_albedo, tone=skin_tone)
    light = random_lighting(r_light)
    info = dict(yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll, body_yaw_deg=body_yaw, jaw_rad=float(jaw),
                gaze_rad=gaze.tolist(), distance_m=z, expressions=active_expressions(model, psi), **look)
    return SynthSubject(beta=b, psi=psi, theta=theta, s=s, t=t, albedo=albedo, lighting=light,
                        seed=int(seed), info=info)


_SHAPE: list = []  # (model, beta bytes, FixedShape): a subject is posed two or three times (placement, render)


def _shape(model: HeadModel, beta: np.ndarray) -> FixedShape:
    """The model with identity ``beta`` folded in, float64, with its mouth interior (when it has one)."""
    from headcast.model.cavity import interior_of

    key = np.asarray(beta, dtype=np.float64).tobytes()
    if not _SHAPE or _SHAPE[0] is not model or _SHAPE[1] != key:
        _SHAPE[:] = [model, key, FixedShape(model, beta, interior_of(model), dtype=np.float64)]
    return _SHAPE[2]


def _posed(model: HeadModel, beta, psi, theta) -> dict[str, np.ndarray | None]:
    """The posed head, model frame, float64 (NumPy: :class:`headcast.model.skinning.FixedShape`, as the
    float64 HeadLayer): ``vertices`` (V, 3), ``landmarks`` (68, 3) with the contour of the head's yaw
    (root then neck, as :func:`headcast.model.lbs.head_yaw_degrees`), ``joints`` (J, 3) and ``interior``
    (P, 3) the mouth interior's vertices (None without one)."""
    theta = np.asarray(theta, dtype=np.float64)
    verts, joints = _shape(model, beta).posed(theta, psi)
    head = verts[0, : model.n_vertices]
    R = rodrigues(theta[:6].reshape(2, 3))
    points = PointSet.from_model(model)
    rows = points.rows_for(yaw_degrees(R[0] @ R[1]), pupils=False)
    lmk = np.einsum("lk,lkc->lc", points.bary[rows], head[points.vids[rows]])
    return {"vertices": head, "landmarks": lmk, "joints": joints[0],
            "interior": verts[0, model.n_vertices:] if verts.shape[1] > model.n_vertices else None}


def subject_geometry(model: HeadModel, subject: SynthSubject) -> dict[str, np.ndarray]:
    """The posed head in the camera frame (metres, float64): ``vertices`` (V, 3), ``landmarks``
    (68, 3) (contour chosen by yaw when the model has a dynamic embedding), ``joints`` (J, 3) and ``interior``
    (P, 3) the mouth interior (None when the model has none)."""
    if subject.beta.shape != (model.n_shape,) or subject.psi.shape != (model.n_expr,):
        raise HeadcastError(f"subject parameters do not match model {model.name!r} "
                            f"({model.n_shape} identity, {model.n_expr} expression components)")
    out = _posed(model, subject.beta, subject.psi, subject.theta)
    t = np.asarray(subject.t, dtype=np.float64)
    return {k: None if v is None else to_camera(v, subject.s, t) for k, v in out.items()}
