"""Geometry on a FLAME template for what its side files may lack: the face contour traced from the
front, and region masks from the shape and the 68 landmarks. Vertices (V, 3) in metres, model frame
(face towards +z, y up); triangles (F, 3).
"""

from __future__ import annotations

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.geometry import points_in_polygon, vertex_normals
from headcast.core.scene import MeshScene
from headcast.model.head_model import N_CONTOUR


def _raycast_front(v: np.ndarray, f: np.ndarray, xy: np.ndarray):
    """Cast rays along -z through points ``xy`` (N, 2): hit z (N,) (nan = miss), triangle (N,), bary (N, 3)."""
    top = float(v[:, 2].max()) + 1.0
    n = len(xy)
    rays = np.concatenate([xy, np.full((n, 1), top), np.zeros((n, 2)), -np.ones((n, 1))], 1)
    ans = MeshScene([(v, f)]).cast(rays)
    t = ans["t"]
    hit = np.isfinite(t)
    tri, bary = np.maximum(ans["tri"], 0), ans["bary"]
    return np.where(hit, top - t, np.nan), tri, bary


def embedded_points(v, f, faces, bary) -> np.ndarray:
    return np.einsum("lk,lkc->lc", bary, v[f[faces]])


# iBUG-68 indices (0-based) used below, within the static 51 (point i of the 68 is i - 17 there)
_EYE_CORNERS = (36, 39, 42, 45)
_NOSE_TIP = 30


def derive_contour(v: np.ndarray, f: np.ndarray, static_faces: np.ndarray, static_bary: np.ndarray,
                   pitch_deg: float = 25.0, depth_band: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Trace iBUG points 1..17 (the face oval) on a template facing +z; returns faces (17,), bary (17, 3).

    The iBUG contour follows the jaw line from beside one eye round the chin to the other. Here it
    is the outline of the front of the face as seen from 25 degrees above (so the jaw's lower edge
    is a silhouette, as it is from a camera at eye level on a slightly lowered head): from a centre
    at the height of the eye corners, rays in the image plane run outward from the convex hull of
    the 51 inner landmarks, over the surface seen along -z, until the surface turns away from that
    pitched view, the visible depth jumps by more than 5 mm, or it lies deeper than ``depth_band``
    outer-eye-corner distances behind the nose tip (that stops the trace at the ears). Each half of
    the outline (180 to 270 degrees, 270 to 360) is cut into 8 equal lengths; point 9 is the chin
    straight below the centre. On FLAME's mean head this lands within about 1 cm of DECA's contour
    (see the tests).
    """
    from scipy.spatial import Delaunay

    lm = np.full((68, 3), np.nan)
    lm[17:] = embedded_points(v, f, static_faces, static_bary)
    corners = lm[list(_EYE_CORNERS)]
    eye_w = float(np.linalg.norm(lm[45] - lm[36]))
    centre = np.array([lm[27:36, 0].mean(), corners[:, 1].mean()])
    z_min = lm[_NOSE_TIP, 2] - depth_band * eye_w
    angles = np.deg2rad(np.arange(180.0, 360.01, 0.5))
    radii = np.arange(0.0, 2.0 * eye_w, eye_w / 200)
    dirs = np.stack([np.cos(angles), np.sin(angles)], 1)
    xy = centre + dirs[:, None, :] * radii[None, :, None]  # (A, R, 2)
    A, R = xy.shape[:2]
    z, tri, bary = _raycast_front(v, f, xy.reshape(-1, 2))
    vn = vertex_normals(v, f)
    view = np.array([0.0, np.sin(np.deg2rad(pitch_deg)), np.cos(np.deg2rad(pitch_deg))])
    facing = np.einsum("nk,nk->n", bary, vn[f[tri]] @ view).reshape(A, R)
    z = z.reshape(A, R)
    tri, bary = tri.reshape(A, R), bary.reshape(A, R, 3)
    inside = (Delaunay(lm[17:, :2]).find_simplex(xy.reshape(-1, 2)) >= 0).reshape(A, R)
    good = np.isfinite(z) & (facing >= 0) & (z >= z_min)
    good[:, 1:] &= ~(z[:, :-1] - z[:, 1:] > 0.005)  # a depth jump ends the face
    stop = np.empty(A, dtype=np.int64)
    for a in range(A):
        k = int(np.nonzero(inside[a])[0].max()) + 1 if inside[a].any() else 0
        bad = np.nonzero(~good[a, k + 1:])[0]
        stop[a] = k + (int(bad[0]) if bad.size else R - 1 - k)
    rows = np.arange(A)
    if not np.isfinite(z[rows, stop]).all():
        raise HeadcastError("cannot trace the face contour on this template: it does not face +z")
    pts = xy[rows, stop]
    half = N_CONTOUR // 2  # each side from beside the eye to the chin (270 degrees), 8 equal lengths
    pick = []
    for side in (rows[: A // 2 + 1], rows[A // 2:][::-1]):
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts[side], axis=0), axis=1))]
        pick.append(side[np.clip(np.searchsorted(arc, np.linspace(0.0, arc[-1], half + 1)), 0, len(side) - 1)])
    pick = np.r_[pick[0], pick[1][::-1][1:]]
    return tri[pick, stop[pick]], bary[pick, stop[pick]]


def _components(f: np.ndarray, n: int) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    adj = sp.coo_matrix((np.ones(f.size), (f.ravel(), np.roll(f, 1, axis=1).ravel())), shape=(n, n))
    return connected_components(adj, directed=False)[1]


def geometric_masks(v: np.ndarray, f: np.ndarray, lmk: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Region masks from the template's geometry and its 68 landmarks (used without FLAME_masks.pkl).

    - eyes: the closed eyeball meshes (connected components centred within a quarter eye width of
      an eye's landmarks); if there are none, vertices skinned mostly to the eye joints;
    - face: vertices seen from the front inside the outline made of the 17 contour points and the
      brows raised by 0.45 outer-eye-corner distances, eyeballs excluded;
    - lips: vertices inside the outer lip outline (points 49..60) grown by 4 mm, in front of the
      lip corners' depth less 0.1 eye distances (the inner lips too);
    - neck: vertices below the chin (point 9) that are not face;
    - scalp: vertices above the raised brows or behind the ears (deeper than 1.6 outer-eye-corner
      distances behind the nose tip), neither face nor neck nor eyes.
    Vertices in metres, model frame (face towards +z, y up).
    """
    V = len(v)
    eye_w = float(np.linalg.norm(lmk[45] - lmk[36]))
    comp = _components(f, V)
    eye_centres = (lmk[36:42].mean(0), lmk[42:48].mean(0))
    eyes = np.zeros(V, bool)
    for c in np.unique(comp):
        members = comp == c
        if members.sum() > V // 4:
            continue
        centre = v[members].mean(0)
        if min(np.linalg.norm(centre - e) for e in eye_centres) < 0.25 * eye_w:
            eyes |= members
    if not eyes.any():
        eyes = weights[:, 3:5].sum(1) > 0.5
    z_hit, _, _ = _raycast_front(v, f, v[:, :2])
    visible = np.abs(z_hit - v[:, 2]) < 1e-3
    brows_up = lmk[26:16:-1, :2] + np.array([0.0, 0.45 * eye_w])
    outline = np.concatenate([lmk[:17, :2], brows_up])
    z_side = lmk[[0, 16], 2].mean() - 0.1 * eye_w
    face = visible & points_in_polygon(v[:, :2], outline) & (v[:, 2] > z_side) & ~eyes
    lips_poly = lmk[48:60, :2]
    c = lips_poly.mean(0)
    radius = np.maximum(np.linalg.norm(lips_poly - c, axis=1, keepdims=True), 1e-9)
    lips_poly = c + (lips_poly - c) * (1 + 0.004 / radius)
    lips = points_in_polygon(v[:, :2], lips_poly) & (v[:, 2] > lmk[48:60, 2].min() - 0.1 * eye_w) & ~eyes
    neck = (v[:, 1] < lmk[8, 1]) & ~face
    behind = v[:, 2] < lmk[_NOSE_TIP, 2] - 1.6 * eye_w
    above = v[:, 1] > brows_up[:, 1].max()
    scalp = (above | behind) & ~face & ~neck & ~eyes
    return {k: np.nonzero(m)[0].astype(np.int32) for k, m in
            (("face", face), ("eyes", eyes), ("lips", lips), ("scalp", scalp), ("neck", neck))}

