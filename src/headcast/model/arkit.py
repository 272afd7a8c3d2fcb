"""ARKit's 52 blendshapes and the 9 Live Link Face angles to and from a head model's parameters.

Two kinds of model:

- **named** (``ict``): the model's expressions are ARKit's own, matched by name (``eyeBlink_L`` is
  ``EyeBlinkLeft``; ICT's ``browInnerUp_L``/``_R`` and ``cheekPuff_L``/``_R`` are ARKit's one
  ``BrowInnerUp`` and ``CheekPuff``: their mean out, the value to both in; ICT has no tongue, so
  ``TongueOut`` is 0 out and ignored in).
- **linear** (FLAME-format models, whose expressions have no names): a linear map derived once per model
  from the ICT model's ARKit shapes (:func:`derive_linear_map`): ICT's neutral head is aligned to the
  model's by a similarity on the 68 landmarks; each face vertex of the model takes the displacement of
  the closest point of ICT's surface (shapes of ``_L``/``_R`` halves summed); the model's expression
  coefficients that reproduce each ARKit shape are a ridge least-squares solve over the face vertices
  (the columns of ``from_arkit``, ``psi = A w``); ``to_arkit`` is its left inverse in vertex space
  (``w = pinv(X A) X psi``, X the model's expression basis on the face), so ARKit -> model -> ARKit
  gives the same curves back. The fit error (how well the model's expression space holds each ARKit
  shape) is in :attr:`ArkitMap.report`.

The jaw: ``JawOpen`` is the jaw joint's rotation about the model's x axis, ``JawOpen = angle / A`` with A
the ICT rig's full-open angle (``meta['rig']['jaw_open_angle_rad']``, 0.442 rad), for both kinds
(ICT's own ``jawOpen`` expression is replaced by its jaw joint, as in tracking).

Angles: the head rotation is root then neck (the neck is 0 coming in); yaw, pitch, roll are intrinsic
Y-X-Z Euler angles in the model frame (x to the subject's left, y up, z out of the face):
``R = Ry(yaw) Rx(pitch) Rz(roll)``; positive yaw turns the face to the subject's left, positive pitch
tips it down. Each eye's rotation is its own joint's local rotation, same convention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, pose_slice
from headcast.core.rigid import similarity_fit
from headcast.io.livelink import ARKIT_NAMES
from headcast.model.head_model import HeadModel

logger = logging.getLogger(__name__)

JAW_OPEN = ARKIT_NAMES.index("JawOpen")
CORRESPONDENCE_MM = 5.0  # a model face vertex further than this from ICT's aligned surface is left out
RIDGE = 1e-4  # relative ridge weight of the least-squares solve (a fraction of the mean basis energy)


def arkit_key(name: str) -> str:
    """A spelling-free key: ``eyeBlink_L``, ``eyeBlinkLeft`` and ``EyeBlinkLeft`` all give ``eyeblinkleft``."""
    n = name.lower()
    if n.endswith("_l"):
        n = n[:-2] + "left"
    elif n.endswith("_r"):
        n = n[:-2] + "right"
    return n.replace("_", "")


@dataclass
class ArkitMap:
    """to_arkit (52, E): curves = psi @ to_arkit.T (before the jaw); from_arkit (E, 52): psi = curves @
    from_arkit.T; jaw_angle: radians of jaw rotation at JawOpen = 1; kind 'named' or 'linear'; report."""

    to_arkit: np.ndarray
    from_arkit: np.ndarray
    jaw_angle: float
    kind: str
    report: dict = field(default_factory=dict)

    def curves(self, theta: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ARKit curves (N, 52) in [0, 1] and the 9 angles (N, 9) radians of theta (N, N_POSE), psi (N, E)."""
        from scipy.spatial.transform import Rotation

        theta = np.asarray(theta, dtype=np.float64)
        w = np.asarray(psi, dtype=np.float64) @ self.to_arkit.T
        w[:, JAW_OPEN] += theta[:, pose_slice("jaw").start] / self.jaw_angle
        head = Rotation.from_rotvec(theta[:, pose_slice("root")]) * Rotation.from_rotvec(theta[:, pose_slice("neck")])
        angles = [head.as_euler("YXZ")]
        for eye in ("left_eye", "right_eye"):
            angles.append(Rotation.from_rotvec(theta[:, pose_slice(eye)]).as_euler("YXZ"))
        return np.clip(w, 0.0, 1.0), np.concatenate(angles, axis=1)

    def params(self, curves: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """theta (N, N_POSE) and psi (E,) per frame (N, E) of ARKit curves (N, 52) and angles (N, 9)."""
        from scipy.spatial.transform import Rotation

        curves = np.asarray(curves, dtype=np.float64)
        rotations = np.asarray(rotations, dtype=np.float64)
        theta = np.zeros((len(curves), N_POSE))
        theta[:, pose_slice("root")] = Rotation.from_euler("YXZ", rotations[:, 0:3]).as_rotvec()
        theta[:, pose_slice("left_eye")] = Rotation.from_euler("YXZ", rotations[:, 3:6]).as_rotvec()
        theta[:, pose_slice("right_eye")] = Rotation.from_euler("YXZ", rotations[:, 6:9]).as_rotvec()
        theta[:, pose_slice("jaw").start] = curves[:, JAW_OPEN] * self.jaw_angle
        return theta, curves @ self.from_arkit.T


def _jaw_angle(model: HeadModel) -> float | None:
    angle = (model.meta.get("rig") or {}).get("jaw_open_angle_rad")
    return float(angle) if angle else None


def named_map(model: HeadModel) -> ArkitMap | None:
    """The by-name map of a model whose expressions are ARKit's (None when fewer than 40 match)."""
    names = list(model.meta.get("expression_names") or [])
    keys = [arkit_key(n) for n in names]
    to = np.zeros((len(ARKIT_NAMES), model.n_expr))
    back = np.zeros((model.n_expr, len(ARKIT_NAMES)))
    for k, name in enumerate(ARKIT_NAMES):
        key = arkit_key(name)
        group = [keys.index(key)] if key in keys else [keys.index(key + s) for s in ("left", "right")
                                                        if key + s in keys]
        for e in group:
            to[k, e] = 1.0 / len(group)
            back[e, k] = 1.0
    angle = _jaw_angle(model)
    if (to.sum(1) > 0).sum() < 40 or angle is None:
        return None
    to[JAW_OPEN] = 0.0  # the jaw joint carries JawOpen
    back[:, JAW_OPEN] = 0.0
    unmatched = [n for k, n in enumerate(ARKIT_NAMES) if not to[k].any() and k != JAW_OPEN]
    return ArkitMap(to, back, angle, "named", {"kind": "named", "unmatched": unmatched})


def derive_linear_map(model: HeadModel, ict: HeadModel) -> ArkitMap:
    """The linear map between ``model``'s expressions and ARKit's, from ``ict``'s ARKit shapes (see the
    module docstring); the report gives the fit error per shape (RMS over the face vertices, mm, and
    relative to the shape's own RMS)."""
    from headcast.core.scene import closest_points_on_mesh

    ref = named_map(ict)
    if ref is None:
        raise HeadcastError(f"model {ict.name!r} has no ARKit-named expressions to derive the map from")
    s, R, t = similarity_fit(ict.landmark_vertices()[17:], model.landmark_vertices()[17:])
    src = s * ict.v_template.astype(np.float64) @ R.T + t
    face = model.masks["face"]
    tri, bary, dist = closest_points_on_mesh(src, ict.faces, model.v_template[face])
    ok = dist < CORRESPONDENCE_MM / 1000
    face, tri, bary = face[ok], tri[ok], bary[ok]
    corners = ict.faces[tri]  # (n, 3)
    keep = [k for k in range(len(ARKIT_NAMES)) if k != JAW_OPEN and ref.to_arkit[k].any()]
    D = np.empty((3 * len(face), len(keep)))
    for c, k in enumerate(keep):
        d = ict.exprdirs[:, :, ref.to_arkit[k] > 0].astype(np.float64).sum(2)  # halves summed
        D[:, c] = (s * np.einsum("nk,nkc->nc", bary, d[corners]) @ R.T).ravel()
    X = model.exprdirs[face].astype(np.float64).reshape(-1, model.n_expr)
    XtX = X.T @ X
    lam = RIDGE * np.trace(XtX) / model.n_expr
    A = np.linalg.solve(XtX + lam * np.eye(model.n_expr), X.T @ D)  # (E, K)
    resid = X @ A - D
    rms = np.sqrt((resid ** 2).reshape(len(face), 3, -1).sum(1).mean(0))
    own = np.sqrt((D ** 2).reshape(len(face), 3, -1).sum(1).mean(0))
    M = np.linalg.pinv(X @ A) @ X  # (K, E)
    to = np.zeros((len(ARKIT_NAMES), model.n_expr))
    back = np.zeros((model.n_expr, len(ARKIT_NAMES)))
    to[keep], back[:, keep] = M, A
    names = [ARKIT_NAMES[k] for k in keep]
    report = {"kind": "linear", "from": ict.name, "face_vertices": int(len(face)),
              "landmark_alignment_scale": float(s),
              "fit_rms_mm": {n: round(1000 * float(r), 4) for n, r in zip(names, rms)},
              "fit_relative": {n: round(float(r / max(o, 1e-12)), 4) for n, r, o in zip(names, rms, own)},
              "fit_relative_mean": float(np.mean(rms / np.maximum(own, 1e-12))),
              "unmatched": [n for k, n in enumerate(ARKIT_NAMES) if k not in keep and k != JAW_OPEN]}
    logger.info(f"ARKit map for {model.name!r}: derived from {ict.name!r} over {len(face)} face vertices; "
                f"fit error {np.mean(1000 * rms):.2f} mm RMS on average ({100 * report['fit_relative_mean']:.0f} % "
                "of the shapes' own size)")
    return ArkitMap(to, back, ref.jaw_angle, "linear", report)


_CACHE: dict[tuple, ArkitMap] = {}


def arkit_map(model: HeadModel) -> ArkitMap:
    """The model's ARKit map: by name when its expressions are ARKit's, else derived from the ICT model
    (once per model content and process)."""
    m = named_map(model)
    if m is not None:
        return m
    key = (model.name, model.n_vertices, model.n_expr, float(np.abs(model.exprdirs).sum()))
    if key not in _CACHE:
        from headcast.model.registry import resolve_model

        _CACHE[key] = derive_linear_map(model, resolve_model("ict"))
    return _CACHE[key]
