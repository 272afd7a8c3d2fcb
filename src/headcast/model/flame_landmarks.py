"""FLAME's landmark side files, recognised by content, and the 68-point embedding made of them.

- ``flame_static_embedding.pkl`` (FLAME / flame-fitting): iBUG points 18..68 (the static 51);
- DECA's ``landmark_embedding.npy``: the static 51, the 17 contour points at yaw 0 and the contour by yaw;
- FLAME_PyTorch's ``flame_dynamic_embedding.npy``: the contour by yaw;
- metrical-tracker's ``mediapipe_landmark_embedding.npz``: recognised and not needed (headcast maps
  MediaPipe to iBUG-68 in the detector, so every model needs only its 68-point embedding).

Embeddings are triangle indices with barycentric coordinates on the FLAME mesh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file
from headcast.io.arrays import read_npz
from headcast.io.validate import finite_array
from headcast.model.flame_geometry import derive_contour
from headcast.model.head_model import DYN_YAW_MAX_DEG, N_CONTOUR
from headcast.model.safe_pickle import MAX_FILE_BYTES, load_npy_safe, load_safe, to_array

logger = logging.getLogger(__name__)

SOURCES = {
    "static": "flame_static_embedding.pkl (FLAME / flame-fitting)",
    "deca": "landmark_embedding.npy (DECA, Feng et al. 2021)",
    "dynamic": "flame_dynamic_embedding.npy (FLAME_PyTorch / RingNet)",
    "mediapipe": "mediapipe_landmark_embedding.npz (metrical-tracker)",
}
MAX_NPZ_BYTES = 16 << 20  # the metrical-tracker file is 5 KB


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


def _numbers(path: Path, x, dtype, what: str) -> np.ndarray:
    try:
        a = to_array(x)
    except HeadcastError as e:  # a chumpy object without its array
        raise HeadcastError(f"{path}: {what} is not numbers ({str(e)[:80]})") from None
    return finite_array(a, f"{path}: {what}", dtype=dtype)


def _embedding(path: Path, faces, bary, n: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    faces = _numbers(path, faces, np.int64, what).reshape(-1)
    bary = _numbers(path, bary, np.float64, what)
    if bary.size % 3:
        raise HeadcastError(f"{path}: {what} barycentric coordinates are not triples")
    bary = bary.reshape(-1, 3)
    if faces.shape[0] != bary.shape[0] or (n is not None and faces.shape[0] != n):
        raise HeadcastError(f"{path}: {what} has {faces.shape[0]} triangles and {bary.shape[0]} "
                            f"barycentric rows; expected {n}")
    if bary.size and np.abs(bary.sum(1) - 1).max() > 1e-3:
        raise HeadcastError(f"{path}: {what} barycentric coordinates do not sum to 1")
    return faces, bary


def read_landmark_file(path: str | Path) -> LandmarkFile:
    """Read and recognise one landmark file by its content (not its name), within bounds: a plain .npz
    through :func:`headcast.io.arrays.read_npz`, a .npy or pickle through the restricted unpickler."""
    path = Path(path)
    what = "landmark file"
    check_input_file(path, what, MAX_FILE_BYTES)
    kind = _sniff(path)
    if kind == "npz":
        d = read_npz(path, what, max_bytes=MAX_NPZ_BYTES)
    elif kind == "npy":
        d = load_npy_safe(path, what)
    else:
        d = load_safe(path, what)
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
        ids = _numbers(path, d["landmark_indices"], np.int64, "landmark_indices").reshape(-1)
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


@dataclass
class Embedding:
    """The model's landmarks: lmk_faces (68,), lmk_bary (68, 3), the contour by yaw dyn_faces (79, 17)
    and dyn_bary (79, 17, 3) or None, where each part came from (sources) and notes for the metadata."""

    lmk_faces: np.ndarray
    lmk_bary: np.ndarray
    dyn_faces: np.ndarray | None
    dyn_bary: np.ndarray | None
    sources: dict[str, str]
    notes: list[str]


def landmark_embedding(files: list[LandmarkFile], v: np.ndarray, f: np.ndarray) -> Embedding:
    """The 68-point embedding on the template (v, f) from the landmark files read by
    :func:`read_landmark_file`.

    Static 51 points: flame_static_embedding.pkl when given, else DECA's. Contour: DECA's yaw-0
    points, else the yaw-0 row of a table by yaw, else traced with :func:`derive_contour`; the
    table by yaw from DECA's file or flame_dynamic_embedding.npy.
    """
    for lf in files:
        logger.info(f"landmarks: {lf.path.name} is {SOURCES[lf.kind]}")
        for key in ("faces", "contour_faces", "dyn_faces"):
            if key in lf.arrays and (lf.arrays[key].min() < 0 or lf.arrays[key].max() >= len(f)):
                raise HeadcastError(f"{lf.path}: landmark triangles outside this {len(f)}-triangle model")
    by_kind = {lf.kind: lf for lf in files}
    notes = []
    if "mediapipe" in by_kind:
        notes.append(f"{by_kind['mediapipe'].path.name} ignored: headcast maps MediaPipe FaceMesh to "
                     "iBUG-68 in the detector and needs only the 68-point embedding")
        logger.info("landmarks: " + notes[-1])
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
        logger.info("landmarks: no contour points given; tracing the face outline on the template")
        cf, cb = derive_contour(v, f, sf, sb)
        sources["contour"] = "traced on the template (headcast.model.flame_geometry.derive_contour)"
    if dyn:
        sources["dynamic_contour"] = dyn.path.name
    return Embedding(np.concatenate([cf, sf]), np.concatenate([cb, sb]), dyn_faces, dyn_bary, sources, notes)
