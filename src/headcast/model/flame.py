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
- texture coordinates: a FLAME ``head_template.obj`` (same vertices and triangles), optional: without
  it the model has none and only texturing is refused (:func:`add_uv` adds them later);
- region masks: ``FLAME_masks.pkl``; without it, masks come from the geometry
  (:func:`headcast.model.flame_geometry.geometric_masks`).

Without a contour (only the static 51 points), :func:`headcast.model.flame_geometry.derive_contour`
traces it on the template. :mod:`headcast.model.flame_landmarks` reads the landmark files.
Side files not named are looked for next to the pickle under their usual names.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file
from headcast.io.mesh import read_obj
from headcast.io.validate import finite_array
from headcast.model.flame_geometry import embedded_points, geometric_masks
from headcast.model.flame_landmarks import landmark_embedding, read_landmark_file
from headcast.model.head_model import HeadModel
from headcast.model.safe_pickle import MAX_FILE_BYTES, load_safe, to_array

logger = logging.getLogger(__name__)

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
GEOMETRIC_MASKS = "geometric (headcast.model.flame_geometry.geometric_masks)"


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
            a = to_array(data[key])
        except HeadcastError as e:  # a chumpy object without its array
            raise HeadcastError(f"{path}: {key}: {e}") from None
        return finite_array(a, f"{path}: {key}", (None,) * ndim, dtype=dtype)

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
        (f.shape[1] == 3 and f.size > 0 and f.min() >= 0 and f.max() < V,
         f"f has shape {f.shape} or indexes missing vertices"),
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


# side files ------------------------------------------------------------------------------------
def flame_masks(path: str | Path, n_vertices: int) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl as headcast masks: its own names kept, plus eyes = both eyeballs."""
    path = Path(path)
    d = load_safe(path, "masks file")
    if not isinstance(d, dict) or not {"face", "lips", "scalp", "neck"} <= set(d):
        raise HeadcastError(f"{path} is not FLAME_masks.pkl (no face, lips, scalp and neck regions)")
    out = {}
    for k, idx in d.items():
        try:
            a = np.unique(np.asarray(to_array(idx)).astype(np.int64).reshape(-1))
        except (TypeError, ValueError, OverflowError):
            raise HeadcastError(f"{path}: mask {str(k)[:40]!r} is not a list of vertex indices") from None
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
                            f"the model has {n_vertices} and {len(faces)}")
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


def add_uv(model: HeadModel, template_obj: str | Path) -> HeadModel:
    """``model`` with the texture coordinates of a FLAME ``head_template.obj`` (same vertices and triangles)."""
    template_obj = Path(template_obj)
    uv, uv_faces = template_uvs(template_obj, model.faces, model.n_vertices)
    meta = dict(model.meta, sources=dict(model.meta.get("sources") or {}, uv=template_obj.name))
    return replace(model, uv=uv, uv_faces=uv_faces, meta=meta)


def _side_file(pkl: Path, group: str) -> list[Path]:
    return [pkl.parent / n for n in SIDE_FILE_NAMES[group] if (pkl.parent / n).is_file()]


# the import -------------------------------------------------------------------------------------
def import_flame(pkl_path: str | Path, landmark_paths=(), masks_path: str | Path | None = None,
                 name: str | None = None, template_obj: str | Path | None = None) -> HeadModel:
    """Build a :class:`HeadModel` from an official FLAME pickle and its side files.

    Args:
        pkl_path: generic_model.pkl (FLAME 2020), flame2023.pkl or flame2023_Open.pkl.
        landmark_paths: any of flame_static_embedding.pkl, DECA's landmark_embedding.npy,
            flame_dynamic_embedding.npy, mediapipe_landmark_embedding.npz (recognised by content;
            how they combine: :func:`headcast.model.flame_landmarks.landmark_embedding`).
        masks_path: FLAME_masks.pkl; without it masks come from :func:`geometric_masks`.
        name: model name (default flame2020, flame2023, flame2023_open, or flame if the name does not say).
        template_obj: a FLAME head_template.obj for the UV layout (FLAME pickles have none); without it
            the model has no texture coordinates (everything but texturing works; :func:`add_uv` adds them).

    Side files not given are looked for next to ``pkl_path`` under their usual names.
    """
    pkl_path = Path(pkl_path)
    check_input_file(pkl_path, "FLAME model file", MAX_FILE_BYTES)
    version = flame_version(pkl_path)
    name = name or (f"flame{version}" if version else "flame")
    landmark_paths = [Path(p) for p in landmark_paths] or _side_file(pkl_path, "landmarks")
    landmark_files = [read_landmark_file(p) for p in landmark_paths]  # small files first: fail fast
    logger.info(f"reading FLAME {version or '(version not in the file name)'} from {pkl_path}")
    m = read_flame_pickle(pkl_path)
    v, f = m["v_template"], m["faces"]
    V = len(v)
    if not landmark_files:
        raise HeadcastError("no landmark embedding: pass DECA's landmark_embedding.npy or "
                            "flame_static_embedding.pkl with --landmarks")
    lmk = landmark_embedding(landmark_files, v, f)

    sources = dict(lmk.sources)
    template_obj = Path(template_obj) if template_obj else next(iter(_side_file(pkl_path, "template")), None)
    uv = uv_faces = None
    if template_obj is not None:
        uv, uv_faces = template_uvs(template_obj, f, V)
        sources["uv"] = template_obj.name
        logger.info(f"texture coordinates: {len(uv)} from {template_obj.name}")
    else:
        sources["uv"] = None
        logger.info("no texture coordinates (FLAME pickles have none): everything but texturing works; add them "
                    "later with 'headcast model add-uv NAME head_template.obj'")
    masks_path = Path(masks_path) if masks_path else next(iter(_side_file(pkl_path, "masks")), None)
    if masks_path is not None:
        masks = flame_masks(masks_path, V)
        sources["masks"] = masks_path.name
    else:
        masks = geometric_masks(v, f, embedded_points(v, f, lmk.lmk_faces, lmk.lmk_bary), m["weights"])
        sources["masks"] = GEOMETRIC_MASKS
    logger.info(f"masks: {', '.join(f'{k} {len(i)}' for k, i in sorted(masks.items()))}")

    meta = {
        "name": name, "version": version or "unknown", "family": "FLAME", "licence": LICENCE,
        "attribution": ATTRIBUTION, "units": "m", "source_file": pkl_path.name, "sources": sources,
        "n_identity": N_IDENTITY, "n_expression": N_EXPRESSION, "notes": lmk.notes,
    }
    return HeadModel(
        v_template=v, faces=f, shapedirs=m["shapedirs"], exprdirs=m["exprdirs"], posedirs=m["posedirs"],
        j_regressor=m["j_regressor"], parents=m["parents"], lbs_weights=m["weights"], uv=uv,
        uv_faces=uv_faces, lmk_faces=lmk.lmk_faces, lmk_bary=lmk.lmk_bary, masks=masks, meta=meta,
        dyn_lmk_faces=lmk.dyn_faces, dyn_lmk_bary=lmk.dyn_bary)
