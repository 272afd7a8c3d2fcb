"""Official FLAME (2020 ``generic_model.pkl``, 2023 ``flame2023.pkl`` / ``flame2023_Open.pkl``) as a HeadModel.

Every FLAME file is read through :mod:`headcast.model.safe_pickle` (no chumpy, no code run).
The pickle gives the template, triangles, the 400 shape components (300 identity then 100
expression), pose correctives, joint regressor, skinning weights and the kinematic tree.
What FLAME's pickle lacks comes from side files, recognised by content:

- landmarks: ``flame_static_embedding.pkl`` (iBUG points 18..68), DECA's ``landmark_embedding.npy``
  (static 51, the 17 contour points at yaw 0 and the contour by yaw), FLAME_PyTorch's
  ``flame_dynamic_embedding.npy`` (contour by yaw) and metrical-tracker's
  ``mediapipe_landmark_embedding.npz`` (recognised and not needed: headcast maps MediaPipe to
  iBUG-68 in the detector, so every model needs only its 68-point embedding);
- texture coordinates: a FLAME ``head_template.obj`` (same vertices and triangles);
- region masks: ``FLAME_masks.pkl``; without it, masks come from the geometry (:func:`geometric_masks`).

Without a contour (only the static 51 points), :func:`derive_contour` traces it on the template.
Side files not named are looked for next to the pickle under their usual names.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.geometry import points_in_polygon, vertex_normals
from headcast.core.scene import MeshScene
from headcast.io.mesh import read_obj
from headcast.model.head_model import DYN_YAW_MAX_DEG, N_CONTOUR, HeadModel
from headcast.model.safe_pickle import load_npy_safe, load_safe, to_array

N_IDENTITY, N_EXPRESSION = 300, 100
FLAME_PARENTS = (-1, 0, 1, 1, 1)  # root, neck, jaw, left eye, right eye
LICENCE = "FLAME licence (non-commercial research; see flame.is.tue.mpg.de)"
ATTRIBUTION = ("FLAME by T. Li, T. Bolkart, M. J. Black, H. Li and J. Romero, 'Learning a model of facial "
               "shape and expression from 4D scans', ACM Transactions on Graphics 36(6), 2017; "
               "Max Planck Institute for Intelligent Systems, flame.is.tue.mpg.de.")
SIDE_FILE_NAMES = {
    "landmarks": ("landmark_embedding.npy", "flame_static_embedding.pkl", "flame_dynamic_embedding.npy"),
    "masks": ("FLAME_masks.pkl",),
    "template": ("head_template.obj", "head_template_mesh.obj"),
}
_SOURCES = {
    "static": "flame_static_embedding.pkl (FLAME / flame-fitting)",
    "deca": "landmark_embedding.npy (DECA, Feng et al. 2021)",
    "dynamic": "flame_dynamic_embedding.npy (FLAME_PyTorch / RingNet)",
    "mediapipe": "mediapipe_landmark_embedding.npz (metrical-tracker)",
}


# the model pickle ------------------------------------------------------------------------------
def flame_version(path: str | Path) -> str | None:
    """'2020', '2023' or '2023_open' from a FLAME file's name (or its folder's); None if it does not say."""
    for part in (Path(path).stem.lower(), Path(path).parent.name.lower()):
        if "2023" in part:
            return "2023_open" if "open" in part else "2023"
        if "2020" in part or part in ("generic_model", "male_model", "female_model",
                                     "flame_neutral", "flame_male", "flame_female"):
            return "2020"
    return None


def read_flame_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a FLAME model pickle, cast and shape-checked.

    Returns v_template (V, 3) float64 metres, faces (F, 3) int64, shapedirs (V, 3, 300),
    exprdirs (V, 3, 100), posedirs (V, 3, 36), j_regressor (5, V) dense, weights (V, 5),
    parents (5,) int64.
    """
    path = Path(path)
    data = load_safe(path)
    if not isinstance(data, dict):
        raise HeadcastError(f"{path} is not a FLAME model: it holds a {type(data).__name__}, not a dict")
    need = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
    missing = [k for k in need if k not in data]
    if missing:
        raise HeadcastError(f"{path} is not a FLAME model: it lacks {', '.join(missing)}")

    def arr(key: str, dtype, ndim: int) -> np.ndarray:
        try:
            a = np.asarray(to_array(data[key]), dtype=dtype)
        except (TypeError, ValueError) as e:
            raise HeadcastError(f"{path}: {key} is not numeric ({e})") from None
        if a.ndim != ndim or (a.dtype.kind == "f" and not np.isfinite(a).all()):
            raise HeadcastError(f"{path}: {key} has shape {a.shape}; expected {ndim} dimensions of finite numbers")
        return a

    v = arr("v_template", np.float64, 2)
    V = v.shape[0]
    f = arr("f", np.int64, 2)
    shapedirs = arr("shapedirs", np.float64, 3)
    posedirs = arr("posedirs", np.float64, 3)
    jreg = arr("J_regressor", np.float64, 2)
    weights = arr("weights", np.float64, 2)
    kin = arr("kintree_table", np.int64, 2)
    J = len(FLAME_PARENTS)
    checks = (
        (v.shape[1] == 3, f"v_template has shape {v.shape}; expected (V, 3)"),
        (f.shape[1] == 3 and f.min() >= 0 and f.max() < V, f"f has shape {f.shape} or indexes missing vertices"),
        (shapedirs.shape == (V, 3, N_IDENTITY + N_EXPRESSION),
         f"shapedirs has shape {shapedirs.shape}; expected ({V}, 3, {N_IDENTITY + N_EXPRESSION})"),
        (posedirs.shape == (V, 3, 9 * (J - 1)), f"posedirs has shape {posedirs.shape}; expected ({V}, 3, 36)"),
        (jreg.shape == (J, V), f"J_regressor has shape {jreg.shape}; expected ({J}, {V})"),
        (weights.shape == (V, J), f"weights has shape {weights.shape}; expected ({V}, {J})"),
        (kin.shape == (2, J), f"kintree_table has shape {kin.shape}; expected (2, {J})"),
    )
    for ok, msg in checks:
        if not ok:
            raise HeadcastError(f"{path} is not a FLAME model: {msg}")
    col = {int(i): c for c, i in enumerate(kin[1])}
    try:
        parents = np.array([-1] + [col[int(p)] for p in kin[0, 1:]], dtype=np.int64)
    except KeyError:
        raise HeadcastError(f"{path}: kintree_table names a parent that is not a joint") from None
    if tuple(parents) != FLAME_PARENTS:
        raise HeadcastError(f"{path}: the kinematic tree {parents.tolist()} is not FLAME's "
                            f"{list(FLAME_PARENTS)} (root, neck, jaw, left eye, right eye)")
    return {"v_template": v, "faces": f, "shapedirs": shapedirs[:, :, :N_IDENTITY],
            "exprdirs": shapedirs[:, :, N_IDENTITY:], "posedirs": posedirs, "j_regressor": jreg,
            "weights": weights, "parents": parents}


# landmark files ------------------------------------------------------------------------------
@dataclass
class LandmarkFile:
    """A landmark file's content: ``kind`` is static, deca, dynamic or mediapipe.

    static: faces (51,), bary (51, 3) for iBUG points 18..68.
    deca: the static 51, plus contour_faces (17,), contour_bary (17, 3) at yaw 0 and the
    contour by yaw dyn_faces (79, 17), dyn_bary (79, 17, 3) in headcast's row order (row i = yaw i - 39).
    dynamic: dyn_faces, dyn_bary only. mediapipe: faces (N,), bary (N, 3), mediapipe_ids (N,).
    """

    path: Path
    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def deca_rows_to_yaw_rows(table: np.ndarray) -> np.ndarray:
    """Reorder a DECA / FLAME_PyTorch dynamic contour table (79, ...) to headcast's rows (row i = yaw i - 39).

    DECA's row j is for the angle a = j when j <= 39 and a = 39 - j when j >= 40. DECA's code looks
    rows up with a = minus the Euler-y angle of R_root @ R_neck, but on FLAME's mesh that puts the
    yaw-moved points on the side turned towards the camera, where they are not needed, and leaves the
    turned-away side behind the cheek. The table's content fits a = +yaw (headcast's yaw,
    :func:`headcast.model.lbs.head_yaw_degrees`, positive = face towards +x): then the turned-away
    side's points sit on the visible outline (see tests/test_flame.py). So ours[i] = deca[i - 39]
    for i >= 39 and deca[78 - i] for i < 39.
    """
    n = DYN_YAW_MAX_DEG
    yaw = np.arange(-n, n + 1)
    order = np.where(yaw >= 0, yaw, n - yaw)
    return np.asarray(table)[order]


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "npz"
    return "pickle"


def _embedding(path: Path, faces, bary, n: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    faces = np.asarray(to_array(faces)).reshape(-1).astype(np.int64)
    bary = np.asarray(to_array(bary), dtype=np.float64).reshape(-1, 3)
    if faces.shape[0] != bary.shape[0] or (n is not None and faces.shape[0] != n):
        raise HeadcastError(f"{path}: {what} has {faces.shape[0]} triangles and {bary.shape[0]} "
                            f"barycentric rows; expected {n}")
    if not np.isfinite(bary).all() or np.abs(bary.sum(1) - 1).max() > 1e-3:
        raise HeadcastError(f"{path}: {what} barycentric coordinates do not sum to 1")
    return faces, bary


def read_landmark_file(path: str | Path) -> LandmarkFile:
    """Read and recognise one landmark file by its content (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"landmark file {path} does not exist")
    kind = _sniff(path)
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise HeadcastError(f"cannot read {path}: {str(e)[:80]}") from None
    elif kind == "npy":
        d = load_npy_safe(path)
    else:
        d = load_safe(path)
    if not isinstance(d, dict):
        raise HeadcastError(f"{path} is not a FLAME landmark file (it holds a {type(d).__name__})")
    keys = set(d)
    if {"static_lmk_faces_idx", "dynamic_lmk_faces_idx", "full_lmk_faces_idx"} <= keys:
        sf, sb = _embedding(path, d["static_lmk_faces_idx"], d["static_lmk_bary_coords"], 51, "static_lmk")
        ff, fb = _embedding(path, d["full_lmk_faces_idx"], d["full_lmk_bary_coords"], 68, "full_lmk")
        df, db = _embedding(path, d["dynamic_lmk_faces_idx"], d["dynamic_lmk_bary_coords"],
                            (2 * DYN_YAW_MAX_DEG + 1) * N_CONTOUR, "dynamic_lmk")
        return LandmarkFile(path, "deca", {
            "faces": sf, "bary": sb, "contour_faces": ff[:N_CONTOUR], "contour_bary": fb[:N_CONTOUR],
            "dyn_faces": deca_rows_to_yaw_rows(df.reshape(-1, N_CONTOUR)),
            "dyn_bary": deca_rows_to_yaw_rows(db.reshape(-1, N_CONTOUR, 3))})
    if {"lmk_face_idx", "lmk_b_coords", "landmark_indices"} <= keys:
        mf, mb = _embedding(path, d["lmk_face_idx"], d["lmk_b_coords"], None, "lmk_face_idx")
        ids = np.asarray(d["landmark_indices"]).astype(np.int64).reshape(-1)
        if ids.shape != mf.shape:
            raise HeadcastError(f"{path}: landmark_indices does not match lmk_face_idx")
        return LandmarkFile(path, "mediapipe", {"faces": mf, "bary": mb, "mediapipe_ids": ids})
    if {"lmk_face_idx", "lmk_b_coords"} <= keys:
        n = np.asarray(to_array(d["lmk_face_idx"])).size
        if n == (2 * DYN_YAW_MAX_DEG + 1) * N_CONTOUR:
            df, db = _embedding(path, d["lmk_face_idx"], d["lmk_b_coords"], n, "lmk_face_idx")
            return LandmarkFile(path, "dynamic", {
                "dyn_faces": deca_rows_to_yaw_rows(df.reshape(-1, N_CONTOUR)),
                "dyn_bary": deca_rows_to_yaw_rows(db.reshape(-1, N_CONTOUR, 3))})
        sf, sb = _embedding(path, d["lmk_face_idx"], d["lmk_b_coords"], 51, "lmk_face_idx")
        return LandmarkFile(path, "static", {"faces": sf, "bary": sb})
    if {"face", "scalp"} <= keys:
        raise HeadcastError(f"{path} holds region masks, not landmarks: pass it as the masks file")
    raise HeadcastError(f"{path} is not a FLAME landmark file I know (keys: {', '.join(sorted(map(str, keys))[:8])})")


# geometry on the template ------------------------------------------------------------------
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


def _points(v, f, faces, bary) -> np.ndarray:
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
    lm[17:] = _points(v, f, static_faces, static_bary)
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


def flame_masks(path: str | Path, n_vertices: int) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl as headcast masks: its own names kept, plus eyes = both eyeballs."""
    path = Path(path)
    d = load_safe(path)
    if not isinstance(d, dict) or not {"face", "lips", "scalp", "neck"} <= set(d):
        raise HeadcastError(f"{path} is not FLAME_masks.pkl (no face, lips, scalp and neck regions)")
    out = {}
    for k, idx in d.items():
        a = np.unique(np.asarray(to_array(idx)).astype(np.int64).reshape(-1))
        if a.size and (a.min() < 0 or a.max() >= n_vertices):
            raise HeadcastError(f"{path}: mask {k!r} indexes vertices outside this {n_vertices}-vertex model")
        out[str(k)] = a.astype(np.int32)
    if "eyes" not in out:
        balls = [out[k] for k in ("left_eyeball", "right_eyeball") if k in out]
        out["eyes"] = np.unique(np.concatenate(balls)) if balls else out.get("eye_region", np.zeros(0, np.int32))
    return out


# UVs ----------------------------------------------------------------------------------------------
def template_uvs(obj_path: str | Path, faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """uv (T, 2) and uv_faces (F, 3) from a FLAME head template OBJ, matched to the pickle's triangles."""
    obj_path = Path(obj_path)
    mesh = read_obj(obj_path)
    if mesh.uv is None or mesh.uv_faces is None:
        raise HeadcastError(f"{obj_path} has no texture coordinates")
    if len(mesh.vertices) != n_vertices or len(mesh.faces) != len(faces):
        raise HeadcastError(f"{obj_path} has {len(mesh.vertices)} vertices and {len(mesh.faces)} triangles; "
                            f"the FLAME model has {n_vertices} and {len(faces)}")
    if np.array_equal(mesh.faces, faces):
        return mesh.uv, mesh.uv_faces
    # same triangles in another order or starting corner: match each by its sorted corners
    key = lambda t: np.sort(t, axis=1) @ np.array([n_vertices ** 2, n_vertices, 1], dtype=np.int64)  # noqa: E731
    lookup = {k: i for i, k in enumerate(key(mesh.faces.astype(np.int64)))}
    uv_faces = np.empty_like(faces)
    for i, (t, k) in enumerate(zip(faces, key(faces))):
        j = lookup.get(k)
        if j is None:
            raise HeadcastError(f"{obj_path} does not have the FLAME model's triangles (triangle {i} is missing)")
        src = mesh.faces[j]
        uv_faces[i] = [mesh.uv_faces[j][int(np.nonzero(src == c)[0][0])] for c in t]
    return mesh.uv, uv_faces


def _side_file(pkl: Path, group: str) -> list[Path]:
    return [pkl.parent / n for n in SIDE_FILE_NAMES[group] if (pkl.parent / n).is_file()]


# the import -------------------------------------------------------------------------------------
def import_flame(pkl_path: str | Path, landmark_paths=(), masks_path: str | Path | None = None,
                 name: str | None = None, template_obj: str | Path | None = None,
                 progress=print) -> HeadModel:
    """Build a :class:`HeadModel` from an official FLAME pickle and its side files.

    Args:
        pkl_path: generic_model.pkl (FLAME 2020), flame2023.pkl or flame2023_Open.pkl.
        landmark_paths: any of flame_static_embedding.pkl, DECA's landmark_embedding.npy,
            flame_dynamic_embedding.npy, mediapipe_landmark_embedding.npz (recognised by content).
            Static 51 points: flame_static_embedding.pkl when given, else DECA's. Contour: DECA's
            yaw-0 points, else the yaw-0 row of a table by yaw, else traced with :func:`derive_contour`;
            the table by yaw from DECA's file or flame_dynamic_embedding.npy.
        masks_path: FLAME_masks.pkl; without it masks come from :func:`geometric_masks`.
        name: model name (default flame2020, flame2023, flame2023_open, or flame if the name does not say).
        template_obj: a FLAME head_template.obj for the UV layout (FLAME pickles have none).
        progress: called with one line per step.

    Side files not given are looked for next to ``pkl_path`` under their usual names.
    """
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise HeadcastError(f"FLAME model file {pkl_path} does not exist")
    version = flame_version(pkl_path)
    name = name or (f"flame{version}" if version else "flame")
    progress(f"reading FLAME {version or '(version not in the file name)'} from {pkl_path}")
    m = read_flame_pickle(pkl_path)
    v, f = m["v_template"], m["faces"]
    V, F = len(v), len(f)
    notes = []

    landmark_paths = [Path(p) for p in landmark_paths] or _side_file(pkl_path, "landmarks")
    if not landmark_paths:
        raise HeadcastError("no landmark embedding: pass DECA's landmark_embedding.npy or "
                            "flame_static_embedding.pkl with --landmarks")
    files = [read_landmark_file(p) for p in landmark_paths]
    for lf in files:
        progress(f"landmarks: {lf.path.name} is {_SOURCES[lf.kind]}")
        for key in ("faces", "contour_faces", "dyn_faces"):
            if key in lf.arrays and (lf.arrays[key].min() < 0 or lf.arrays[key].max() >= F):
                raise HeadcastError(f"{lf.path}: landmark triangles outside this {F}-triangle model")
    by_kind = {lf.kind: lf for lf in files}
    if "mediapipe" in by_kind:
        notes.append(f"{by_kind['mediapipe'].path.name} ignored: headcast maps MediaPipe FaceMesh to "
                     "iBUG-68 in the detector and needs only the 68-point embedding")
        progress("landmarks: " + notes[-1])
    static = by_kind.get("static") or by_kind.get("deca")
    if static is None:
        raise HeadcastError("the landmark files give no static landmarks: add flame_static_embedding.pkl "
                            "or DECA's landmark_embedding.npy")
    sf, sb = static.arrays["faces"], static.arrays["bary"]
    sources = {"static_51": static.path.name}
    dyn = by_kind.get("deca") or by_kind.get("dynamic")
    dyn_faces = dyn.arrays["dyn_faces"] if dyn else None
    dyn_bary = dyn.arrays["dyn_bary"] if dyn else None
    if "deca" in by_kind:
        cf, cb = by_kind["deca"].arrays["contour_faces"], by_kind["deca"].arrays["contour_bary"]
        sources["contour"] = by_kind["deca"].path.name
    elif dyn:
        cf, cb = dyn_faces[DYN_YAW_MAX_DEG], dyn_bary[DYN_YAW_MAX_DEG]  # the yaw-0 row
        sources["contour"] = f"{dyn.path.name} (yaw 0)"
    else:
        progress("landmarks: no contour points given; tracing the face outline on the template")
        cf, cb = derive_contour(v, f, sf, sb)
        sources["contour"] = "traced on the template (headcast.model.flame.derive_contour)"
    if dyn:
        sources["dynamic_contour"] = dyn.path.name
    lmk_faces = np.concatenate([cf, sf])
    lmk_bary = np.concatenate([cb, sb])

    template_obj = Path(template_obj) if template_obj else next(iter(_side_file(pkl_path, "template")), None)
    if template_obj is None:
        raise HeadcastError("FLAME pickles have no texture coordinates: pass a FLAME head_template.obj "
                            "(e.g. DECA's data/head_template.obj) with --template-obj")
    uv, uv_faces = template_uvs(template_obj, f, V)
    progress(f"texture coordinates: {len(uv)} from {template_obj.name}")

    masks_path = Path(masks_path) if masks_path else next(iter(_side_file(pkl_path, "masks")), None)
    if masks_path is not None:
        masks = flame_masks(masks_path, V)
        sources["masks"] = masks_path.name
    else:
        masks = geometric_masks(v, f, _points(v, f, lmk_faces, lmk_bary), m["weights"])
        sources["masks"] = "geometric (headcast.model.flame.geometric_masks)"
    progress(f"masks: {', '.join(f'{k} {len(i)}' for k, i in sorted(masks.items()))}")

    meta = {
        "name": name, "version": version or "unknown", "family": "FLAME", "licence": LICENCE,
        "attribution": ATTRIBUTION, "units": "m", "source_file": pkl_path.name, "sources": sources,
        "n_identity": N_IDENTITY, "n_expression": N_EXPRESSION, "notes": notes,
    }
    return HeadModel(
        v_template=v, faces=f, shapedirs=m["shapedirs"], exprdirs=m["exprdirs"], posedirs=m["posedirs"],
        j_regressor=m["j_regressor"], parents=m["parents"], lbs_weights=m["weights"], uv=uv,
        uv_faces=uv_faces, lmk_faces=lmk_faces, lmk_bary=lmk_bary, masks=masks, meta=meta,
        dyn_lmk_faces=dyn_faces, dyn_lmk_bary=dyn_bary)
