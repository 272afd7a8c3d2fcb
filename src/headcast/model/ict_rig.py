"""The rig designed for the ICT-FaceKit head, from its geometry: joints, skinning weights, the
dynamic landmark contour and the region masks. Vertices (V, 3) in metres on the kept mesh.

Joints. Each is an affine combination (weights summing to 1, minimum norm) of anchor vertices
that reproduces the chosen point on the template, so the joints follow beta and psi linearly:

- jaw (2): the lower teeth move rigidly in ``jawOpen`` (about 25 degrees about x). A Kabsch fit
  of that motion gives the opening rotation; its fixed point on the mid-sagittal plane is the
  pivot, in front of the ears near the temporomandibular joints. Anchors: the skin vertices
  nearest the pivot's x axis that no expression moves more than 2 mm.
- left eye (3, +x) and right eye (4): the centre of a least-squares sphere through the sclera;
  anchors: all the eyeball's vertices.
- neck (1, the head's rotation pivot): the midpoint of the nape (the most forward point of the
  back profile) and the cervicomental point (the deepest point of the chin-throat angle), i.e.
  the top of the neck column; anchors as for the jaw.
- root (0): the centroid of the neck's open bottom rim (uniform weights on the rim).

Skinning weights. Eyeballs are rigid on their eye joint. The jaw weight w of a vertex is the
least-squares value for which linear blend skinning's ``v + w (T_jaw v - v)`` reproduces its
``jawOpen`` offset, in [0, 1], regularised by the strain the jaw rotation puts on each edge (no
edge stretches or shrinks more than 2.5x at the full jawOpen angle, on the mean head and on 8
random identities), and 0 on the upper lip and above. The rest, ``1 - w``, is rigid on the neck
joint above the plane through the nape and the cervicomental point and fades (smoothstep) to the
root at the bottom rim. No pose correctives (posedirs are zero); parents ``[-1, 0, 1, 1, 1]``.

Dynamic contour (rows are yaw -39..39 degrees; positive yaw turns the face towards +x, as
``lbs.head_yaw_degrees``): on the side turning away, each contour point slides along the
horizontal slice of the face at its own height to the point outermost along x after the yaw, but
never behind its frontal point (so the points beside the chin, which sit inside the frontal
silhouette, move only once the silhouette reaches them); the near side and the chin keep their
frontal points.

Masks: face (upstream's narrow face area), eyes (sockets and eyeballs), lips (inside the outer
lip landmarks grown by 3 mm), nose, forehead, scalp (above the neck, outside the face area,
without the ears), neck (below the head/neck plane), left_eyeball, right_eyeball.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from headcast.core.errors import HeadcastError
from headcast.core.geometry import points_in_polygon
from headcast.core.rigid import rigid_fit
from headcast.model.head_model import DYN_YAW_MAX_DEG, N_CONTOUR
from headcast.model.mesh_geometry import (
    affine_weights,
    boundary_loops,
    edge_stretch,
    fit_sphere,
    geodesic_nearer,
    loop_order,
    mesh_edges,
    rotation_x,
    sagittal_pivot,
    slice_points,
    smoothstep,
)

N_ANCHORS = 96  # skin anchor vertices of the jaw and neck joints
STILL = 2e-3  # m: those anchors move less than this under every expression
MAX_JAW_STRETCH = 2.5  # edge length ratio allowed at the full jawOpen angle (mean head and variants)
CHIN, NOSE_BASE = 8, 33  # iBUG-68 indices


def jaw_motion(rest: np.ndarray, opened: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Opening angle (radians about +x), pivot (3,) on the mid-sagittal plane and fit residual (m)
    of points (K, 3) that move rigidly with the jaw (the lower teeth) from ``rest`` to ``opened``."""
    R, t = rigid_fit(rest, opened)
    angle = float(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))
    angle *= np.sign(R[2, 1] - R[1, 2]) or 1.0  # the sign of the axis' x component
    residual = float(np.linalg.norm(rest @ R.T + t - opened, axis=1).max())
    return angle, sagittal_pivot(R, t), residual


def mouth_rim(v: np.ndarray, faces: np.ndarray, lip_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mouth opening (the boundary loop nearest ``lip_point``) split at its corners, the
    loop's extreme-x vertices: the upper arc (corners included) and the lower arc (excluded)."""
    loop = min(boundary_loops(faces, len(v)), key=lambda b: np.linalg.norm(v[b].mean(0) - lip_point))
    order = loop_order(faces, loop)
    order = np.roll(order, -int(np.argmin(v[order, 0])))
    k = int(np.argmax(v[order, 0]))
    a, b = order[: k + 1], np.append(order[k:], order[0])
    upper, lower = (a, b) if v[a, 1].mean() > v[b, 1].mean() else (b, a)
    return upper, lower[1:-1]


def upper_face(v: np.ndarray, faces: np.ndarray, skin: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Skin vertices on the upper lip or above (the jaw leaves them alone): the mouth rim's upper
    arc and corners, the vertices between and above the corners geodesically nearer that arc than
    the lower one (within 2 cm), and everything from the nose base (iBUG 33) up."""
    upper_arc, lower_arc = mouth_rim(v, faces, landmarks[[62, 66]].mean(0))
    near = geodesic_nearer(v, mesh_edges(faces), upper_arc[1:-1], lower_arc, 0.02)
    corners = v[upper_arc[[0, -1]]]
    near = near[(np.abs(v[near, 0]) <= np.abs(corners[:, 0]).max()) & (v[near, 1] >= corners[:, 1].mean())]
    above = skin[v[skin, 1] >= landmarks[NOSE_BASE, 1]]
    return np.unique(np.concatenate([upper_arc, near, above]))


def _strain(ratio: np.ndarray) -> np.ndarray:
    """Length ratios as a stretch factor >= 1: shrinking counts like stretching."""
    return np.maximum(ratio, 1.0 / np.maximum(ratio, 1e-9))


def jaw_weights(v: np.ndarray, faces: np.ndarray, jaw_open: np.ndarray, pivot: np.ndarray, angle: float,
                zero: np.ndarray, max_stretch: float = MAX_JAW_STRETCH,
                variants: np.ndarray | None = None) -> np.ndarray:
    """Jaw skinning weights (V,) in [0, 1] that reproduce ``jaw_open`` without tearing.

    Rotating by ``angle`` about x through ``pivot`` moves vertex i by d_i; LBS with jaw weight
    w_i moves it by w_i d_i. Minimise sum_i |w_i d_i - jaw_open_i|^2 plus the strain penalty
    sum_edges h^2 |d_e|^2 (w_a - w_b)^2 / |e|^2 (h = 2 mm), with w = 0 on ``zero``. Edges that the
    full rotation stretches or shrinks more than ``max_stretch`` times, on ``v`` or on any of the
    ``variants`` (K, V, 3) (other identities), get heavier penalties until none does.

    Args:
        v: (V, 3) rest vertices, metres; faces (F, 3); jaw_open (V, 3) blendshape offsets.
        pivot: (3,) rotation centre; angle: the rotation (radians) ``jaw_open`` corresponds to.
        zero: vertex indices held at weight 0.
    """
    shapes = [v] if variants is None else [v, *variants]
    R = rotation_x(angle)
    V = len(v)
    d = (v - pivot) @ R.T + pivot - v
    d2 = (d * d).sum(1)
    target = np.clip((jaw_open * d).sum(1) / (d2 + 1e-12), 0.0, 1.0)
    edges = mesh_edges(faces)
    length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
    c = (2e-3) ** 2 * 0.5 * (d2[edges[:, 0]] + d2[edges[:, 1]]) / np.maximum(length, 1e-6) ** 2
    free = np.ones(V, bool)
    free[zero] = False
    w = np.zeros(V)
    for _ in range(50):
        A = sp.coo_matrix((c, (edges[:, 0], edges[:, 1])), shape=(V, V))
        A = A + A.T
        M = (sp.diags(d2 + np.asarray(A.sum(1)).ravel()) - A).tocsr()
        w[free] = spl.spsolve(M[free][:, free].tocsc(), (d2 * target)[free])
        w = np.clip(w, 0.0, 1.0)
        s = np.max([_strain(edge_stretch(x, x + w[:, None] * ((x - pivot) @ R.T + pivot - x), edges))
                    for x in shapes], axis=0)
        if s.max() <= max_stretch:
            break
        bad = s > 0.95 * max_stretch
        c[bad] *= 2 * (s[bad] / (0.95 * max_stretch)) ** 2
    return w


def neck_points(v: np.ndarray, skin: np.ndarray, below: float, chin_y: float) -> tuple[np.ndarray, np.ndarray]:
    """The nape and the cervicomental point on the mid-sagittal profile of the skin.

    The nape is the most forward (max z) back-profile point below height ``below``; the
    cervicomental point the front-profile point below the chin deepest in the chin-throat angle
    (min z - y).
    """
    strip = skin[np.abs(v[skin, 0]) < 2e-3]
    back = strip[(v[strip, 2] < 0) & (v[strip, 1] < below)]
    front = strip[(v[strip, 2] > 0) & (v[strip, 1] < chin_y)]
    if len(back) == 0 or len(front) == 0:
        raise HeadcastError("the head mesh has no mid-sagittal neck profile (not ICT-FaceKit Light?)")
    return v[back[np.argmax(v[back, 2])]], v[front[np.argmin(v[front, 2] - v[front, 1])]]


@dataclass
class Rig:
    """joints (5, 3) m, j_regressor (5, V), lbs_weights (V, 5), neck_height (V,) m above the
    head/neck plane (negative on the neck) and the measured numbers (info)."""

    joints: np.ndarray
    j_regressor: np.ndarray
    lbs_weights: np.ndarray
    neck_height: np.ndarray
    info: dict


def design_rig(v: np.ndarray, faces: np.ndarray, parts: dict[str, np.ndarray], jaw_open: np.ndarray,
               expressions: np.ndarray, teeth: tuple[np.ndarray, np.ndarray],
               sclera: dict[str, np.ndarray], landmarks: np.ndarray, variants: np.ndarray | None = None) -> Rig:
    """Joints, regressor and skinning weights of the kept mesh (see the module docstring).

    Args:
        v: (V, 3) template, metres; faces (F, 3).
        parts: vertex indices "skin" (face, head and neck), "left_eyeball", "right_eyeball" and
            "upper" (upper lip and above: jaw weight 0).
        jaw_open: (V, 3) the jawOpen offsets; expressions (E, V, 3) all expression offsets.
        teeth: rest and jawOpen positions (K, 3) of the lower teeth (not part of the mesh).
        sclera: "left"/"right" -> (K, 3) sclera points.
        landmarks: (68, 3) iBUG-68 points of the template.
        variants: (K, V, 3) other identities the jaw weights must not tear either.
    """
    V = len(v)
    open_angle, jaw, teeth_residual = jaw_motion(*teeth)
    eyes = {s: fit_sphere(sclera[s]) for s in ("left", "right")}
    skin = parts["skin"]
    nape, throat = neck_points(v, skin, jaw[1], landmarks[CHIN, 1])
    rim = min(boundary_loops(faces, V), key=lambda b: v[b, 1].mean())
    joints = np.stack([v[rim].mean(0), 0.5 * (nape + throat), jaw, eyes["left"][0], eyes["right"][0]])

    jr = np.zeros((5, V))
    jr[0, rim] = 1.0 / len(rim)
    still = skin[np.linalg.norm(expressions[:, skin], axis=2).max(0) < STILL]
    for j in (1, 2):  # the still skin nearest the joint's x axis: patches on both sides around it
        near = still[np.argsort(np.linalg.norm(v[still, 1:] - joints[j, 1:], axis=1))[:N_ANCHORS]]
        jr[j, near] = affine_weights(v[near], joints[j])
    for j, s in ((3, "left_eyeball"), (4, "right_eyeball")):
        jr[j, parts[s]] = affine_weights(v[parts[s]], joints[j])

    eyeballs = np.concatenate([parts["left_eyeball"], parts["right_eyeball"]])
    w_jaw = jaw_weights(v, faces, jaw_open, jaw, open_angle, np.concatenate([eyeballs, parts["upper"]]),
                        variants=variants)
    normal = np.cross([1.0, 0.0, 0.0], throat - nape)
    normal *= np.sign(normal[1]) / np.linalg.norm(normal)  # up, into the head
    height = (v - nape) @ normal
    head = smoothstep(1.0 - height / height[rim].max())  # 1 above the plane, 0 on the bottom rim
    W = np.zeros((V, 5))
    W[:, 0] = (1 - w_jaw) * (1 - head)
    W[:, 1] = (1 - w_jaw) * head
    W[:, 2] = w_jaw
    W[eyeballs] = 0.0
    W[parts["left_eyeball"], 3] = 1.0
    W[parts["right_eyeball"], 4] = 1.0
    info = {"joints_m": joints.round(5).tolist(), "jaw_open_angle_rad": round(float(open_angle), 5),
            "jaw_teeth_fit_residual_mm": round(teeth_residual * 1e3, 3),
            "eye_radius_mm": [round(eyes[s][1] * 1e3, 2) for s in ("left", "right")],
            "nape_m": nape.round(5).tolist(), "cervicomental_m": throat.round(5).tolist(),
            "regressor_abs_sum": np.abs(jr).sum(1).round(3).tolist()}
    return Rig(joints=joints, j_regressor=jr, lbs_weights=W, neck_height=height, info=info)


# ---------------------------------------------------------------------------------------------
# landmarks and masks



def dynamic_contour_table(v: np.ndarray, faces: np.ndarray, lmk_faces: np.ndarray, lmk_bary: np.ndarray,
                          face_ids: np.ndarray, fixed: tuple[int, ...] = (CHIN,)):
    """Contour embedding by yaw (see the module docstring).

    Args:
        v: (V, 3) template; faces (F, 3); lmk_faces (68,), lmk_bary (68, 3): the static embedding.
        face_ids: triangles the contour may slide on (the face area).
        fixed: contour points that never move.

    Returns:
        dyn_faces (79, 17) and dyn_bary (79, 17, 3); row i is yaw i - 39 degrees.
    """
    yaws = np.deg2rad(np.arange(-DYN_YAW_MAX_DEG, DYN_YAW_MAX_DEG + 1))
    dyn_f = np.tile(lmk_faces[:N_CONTOUR], (len(yaws), 1))
    dyn_b = np.tile(lmk_bary[:N_CONTOUR], (len(yaws), 1, 1))
    frontal = np.einsum("lk,lkc->lc", lmk_bary[:N_CONTOUR], v[faces[lmk_faces[:N_CONTOUR]]])
    for k in range(N_CONTOUR):
        side = np.sign(frontal[k, 0])
        if k in fixed or side == 0:
            continue
        p, tri, bary = slice_points(v, faces, face_ids, frontal[k, 1])
        ok = (side * p[:, 0] >= 0) & (p[:, 2] >= frontal[k, 2])  # same side, never behind the frontal point
        p, tri, bary = p[ok], tri[ok], bary[ok]
        for row, a in enumerate(yaws):
            if np.sign(a) != side or len(p) == 0:
                continue  # the near side keeps its frontal point
            out = side * (p[:, 0] * np.cos(a) + p[:, 2] * np.sin(a))
            best = int(np.argmax(out))
            if out[best] > side * (frontal[k, 0] * np.cos(a) + frontal[k, 2] * np.sin(a)):
                dyn_f[row, k], dyn_b[row, k] = tri[best], bary[best]
    return dyn_f, dyn_b


def region_masks(v: np.ndarray, parts: dict[str, np.ndarray], landmarks: np.ndarray,
                 neck_height: np.ndarray) -> dict[str, np.ndarray]:
    """Region masks (sorted int32 vertex indices) of the kept mesh.

    Args:
        v: (V, 3) template, metres.
        parts: vertex indices "face" (upstream's narrow face area), "skin" (face and head-and-neck
            ranges), "band" (the face range outside the narrow face: hairline, temples, ears, throat),
            "eye_socket_left", "eye_socket_right", "left_eyeball", "right_eyeball".
        landmarks: (68, 3) iBUG-68 points.
        neck_height: (V,) m above the head/neck plane (negative on the neck).
    """
    V = len(v)
    mask = lambda ids: np.isin(np.arange(V), ids)  # noqa: E731
    face, skin, band = mask(parts["face"]), mask(parts["skin"]), mask(parts["band"])
    lm = landmarks
    outer = lm[48:60, :2]  # outer lip contour, grown by 3 mm
    c = outer.mean(0)
    grown = c + (outer - c) * (1 + 0.003 / np.linalg.norm(outer - c, axis=1, keepdims=True))
    lips = face & points_in_polygon(v[:, :2], grown) & (v[:, 2] > lm[[48, 54], 2].min() - 0.01)
    half = 0.5 * (lm[42, 0] - lm[39, 0])  # nose: bridge between the inner eye corners, alae round 31..35
    wing = lm[35, 0] - lm[33, 0]
    nose_poly = np.array([
        [lm[27, 0] - 0.45 * half, lm[27, 1]], [lm[27, 0] + 0.45 * half, lm[27, 1]],
        [lm[35, 0] + 0.6 * wing, lm[35, 1] + 0.6 * wing], [lm[35, 0] + 0.5 * wing, lm[33, 1] - 0.002],
        [lm[31, 0] - 0.5 * wing, lm[33, 1] - 0.002], [lm[31, 0] - 0.6 * wing, lm[31, 1] + 0.6 * wing]])
    nose = face & points_in_polygon(v[:, :2], nose_poly) & (v[:, 2] > lm[[39, 42], 2].mean())
    brow_top = lm[17:27, 1].max()
    forehead = face & (v[:, 1] > brow_top + 0.005) & (np.abs(v[:, 0]) <= np.abs(lm[[17, 26], 0]).max())
    top_band = band & (v[:, 1] > brow_top + 0.03)  # the band's ears and temples stay out of the scalp
    scalp = ((skin & ~face & ~band) | top_band) & (neck_height > 0)
    neck = skin & ~face & (neck_height < 0)
    idx = lambda m: np.flatnonzero(m).astype(np.int32)  # noqa: E731
    eyes = np.concatenate([parts[k] for k in ("eye_socket_left", "eye_socket_right", "left_eyeball",
                                             "right_eyeball")])
    return {"face": idx(face), "eyes": np.sort(eyes).astype(np.int32), "lips": idx(lips),
            "scalp": idx(scalp), "neck": idx(neck), "nose": idx(nose), "forehead": idx(forehead),
            "left_eyeball": np.sort(parts["left_eyeball"]).astype(np.int32),
            "right_eyeball": np.sort(parts["right_eyeball"]).astype(np.int32)}


# ---------------------------------------------------------------------------------------------
