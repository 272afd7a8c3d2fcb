"""ICT-FaceKit Light as a FLAME-format :class:`HeadModel`: the open default head (``ict``).

:func:`build_ict_model` reads upstream's files (:mod:`headcast.model.ict_source`), keeps the face,
head and neck, eye sockets and eyeballs (not lashes or helper meshes), converts to metres and adds
the rig designed from the geometry (:mod:`headcast.model.ict_rig`: joints, skinning weights, dynamic
contour, region masks). The mouth socket, gums and tongue and teeth become the model's render-only
interior (:mod:`headcast.model.interior`): upstream's identity and expression shapes, skinned to the
neck (upper teeth) and the jaw (lower teeth, tongue) by how far ``jawOpen`` moves each vertex along
the jaw's rotation.

Landmarks: upstream's 68 vertices (iBUG-68 order) as barycentric corners.

UV: upstream's tiles packed into one [0, 1] atlas: face top-left, back of head and eye sockets
top-right, left eyeball bottom-left, right eyeball bottom-right (``meta["uv_layout"]``: u0, v0,
u1, v1 per region).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.model.head_model import HeadModel
from headcast.model.ict_rig import Rig, design_rig, dynamic_contour_table, region_masks, upper_face
from headcast.model.ict_source import (
    EYE_SOCKET_L,
    EYE_SOCKET_R,
    EYEBALL_L,
    EYEBALL_R,
    FACE,
    FACE_NARROW,
    GUMS_TONGUE,
    HEAD_NECK,
    MOUTH_SOCKET,
    N_SOURCE_VERTICES,
    TEETH,
    UPSTREAM,
    IctSource,
    find_source,
    read_source,
    span,
)
from headcast.model.ict_version import COMMIT, VERSION
from headcast.model.interior import CAVITY_RGB, GUMS_RGB, TEETH_RGB, Interior, concat, decimate, depth_shade
from headcast.model.mesh_geometry import pack_uv, rotation_x, submesh, vertex_embedding

logger = logging.getLogger(__name__)

KEEP = (FACE, HEAD_NECK, EYE_SOCKET_L, EYE_SOCKET_R, EYEBALL_L, EYEBALL_R)

# Upstream UV is UDIM-like (face in u 0..1, back of head and eye sockets in 1..2, each eyeball its
# own 0..1); the model packs them into quadrants (column, row) of one [0, 1] atlas, v up.
UV_QUADRANTS = {"M_Face": (0, 1), "M_BackHead": (1, 1), "M_ScleraLeft": (0, 0), "M_IrisLeft": (0, 0),
                "M_ScleraRight": (1, 0), "M_IrisRight": (1, 0)}
UV_LAYOUT = {"face": [0, 0.5, 0.5, 1], "back_of_head_and_eye_sockets": [0.5, 0.5, 1, 1],
             "left_eyeball": [0, 0, 0.5, 0.5], "right_eyeball": [0.5, 0, 1, 0.5]}
CM = 0.01  # upstream centimetres -> metres
N_VARIANTS = 8  # random identities (seed 0) the jaw weights must not tear either
INTERIOR_KEEP = 1 / 3  # share of the mouth interior's triangles kept (18520 upstream)


def _kept_mesh(s: IctSource) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kept part of upstream's mesh: keep (N,) bool, remap (N,) new index or -1, faces (F, 3),
    packed uv (T, 2) and uv_faces (F, 3)."""
    keep = np.zeros(N_SOURCE_VERTICES, bool)
    for r in KEEP:
        keep[span(r)] = True
    remap, face_ids, faces = submesh(s.faces, keep)
    materials = [s.material_names[i] for i in s.face_material[face_ids]]
    unknown = sorted(set(materials) - set(UV_QUADRANTS))
    if unknown:
        raise HeadcastError(f"{s.root}: unexpected materials {unknown} on the kept head (not ICT-FaceKit Light?)")
    uv, uv_faces = pack_uv(s.uv, s.uv_faces[face_ids], np.array([UV_QUADRANTS[m] for m in materials]))
    loose = np.setdiff1d(np.flatnonzero(keep), s.faces[face_ids])
    if len(loose):
        raise HeadcastError(f"{s.root}: {len(loose)} kept vertices lie on no kept triangle (not ICT-FaceKit Light?)")
    return keep, remap, faces, uv, uv_faces


def _jaw_and_sclera(s: IctSource) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """The lower teeth at rest and in jawOpen ((K, 3) each) and the sclera points per eye, metres."""
    jaw_full = s.expressions[s.expression_names.index("jawOpen")]
    teeth = span(TEETH)
    lower = teeth[np.linalg.norm(jaw_full[teeth], axis=1) > 0.1]  # moves > 1 mm: the lower teeth
    if len(lower) < 10:
        raise HeadcastError(f"{s.root}: jawOpen does not move the lower teeth (not ICT-FaceKit Light?)")
    sclera = {}
    for side, r, material in (("left", EYEBALL_L, "M_ScleraLeft"), ("right", EYEBALL_R, "M_ScleraRight")):
        ids = span(r)
        if material in s.material_names:
            ids = np.intersect1d(ids, s.faces[s.face_material == s.material_names.index(material)])
        sclera[side] = s.vertices[ids] * CM
    return (s.vertices[lower] * CM, (s.vertices[lower] + jaw_full[lower]) * CM), sclera


def _decimated(s: IctSource, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upstream's triangles within each vertex group, decimated group by group (so no new vertex takes
    the shapes of another group's vertex): vertices (K, 3) m, faces and each vertex's source vertex."""
    vs, fs, srcs, n = [], [], [], 0
    for ids in groups:
        keep = np.zeros(N_SOURCE_VERTICES, bool)
        keep[ids] = True
        _, _, faces = submesh(s.faces, keep)
        if len(faces) == 0:
            continue
        v, faces, near = decimate(s.vertices[ids] * CM, faces, INTERIOR_KEEP)
        vs.append(v)
        fs.append(faces + n)
        srcs.append(ids[near])
        n += len(v)
    return np.concatenate(vs), np.concatenate(fs), np.concatenate(srcs)


def _interior(s: IctSource, rig: Rig, n_joints: int, lips_z: float) -> Interior:
    """Upstream's mouth socket, gums and tongue and teeth as the render-only interior (metres), each
    decimated to :data:`INTERIOR_KEEP` of its triangles (the preview draws it every frame).

    Jaw weight of a vertex: the share of the jaw rotation's displacement d that its ``jawOpen``
    offset o carries, clip(o . d / |d|^2, 0, 1) (the teeth: 1 for those ``jawOpen`` moves > 1 mm,
    else 0); the rest is on the neck joint, as the skull above the neck plane."""
    jaw_open = s.expressions[s.expression_names.index("jawOpen")] * CM
    angle, pivot = rig.info["jaw_open_angle_rad"], rig.joints[2]
    pieces = []
    for name, r, base in (("socket", MOUTH_SOCKET, CAVITY_RGB), ("gums_tongue", GUMS_TONGUE, GUMS_RGB),
                          ("teeth", TEETH, TEETH_RGB)):
        ids = span(r)
        moves = np.linalg.norm(jaw_open[ids], axis=1) > 1e-3
        groups = [ids] if name == "socket" else [ids[moves], ids[~moves]]  # lower and upper decimated apart
        v, faces, src = _decimated(s, groups)
        d = (v - pivot) @ rotation_x(angle).T + pivot - v
        if name == "teeth":
            w = (np.linalg.norm(jaw_open[src], axis=1) > 1e-3).astype(np.float64)
        else:
            w = np.clip((jaw_open[src] * d).sum(1) / ((d * d).sum(1) + 1e-12), 0.0, 1.0)
        W = np.zeros((len(src), n_joints))
        W[:, 1], W[:, 2] = 1.0 - w, w
        pieces.append((name, {
            "v_template": v, "faces": faces,
            "shapedirs": s.identity[:, src].transpose(1, 2, 0) * CM,
            "exprdirs": s.expressions[:, src].transpose(1, 2, 0) * CM, "lbs_weights": W,
            "colors": depth_shade(v, base, lips_z, 0.05, 0.55 if name == "teeth" else 0.3)}))
    return concat(pieces)


def _meta(s: IctSource, rig: Rig) -> dict:
    return {
        "name": "ict",
        "version": VERSION,
        "licence": "MIT",
        "attribution": (f"Derived from ICT-FaceKit (FaceXModel), https://github.com/{UPSTREAM}, commit "
                        f"{COMMIT}; converted and rigged by headcast. Its licence:\n\n{s.licence.strip()}\n"),
        "source": f"https://github.com/{UPSTREAM}",
        "source_commit": COMMIT,
        "source_vertex_ranges": [list(r) for r in KEEP],
        "units": "m",
        "shape_prior": "beta ~ N(0, 1), one unit = one standard deviation",
        "expression_names": list(s.expression_names),
        "expr_range": [0, 1],
        "uv_layout": UV_LAYOUT,
        "rig": rig.info,
    }


def build_ict_model(src: Path | str | None = None, n_shape: int = 100, *, url: str | None = None) -> HeadModel:
    """Convert ICT-FaceKit Light into the FLAME-format :class:`HeadModel` named ``ict``.

    Args:
        src: the ICT-FaceKit folder (holding ``FaceXModel/`` with ``.obj`` or ``.obj.xz`` files);
            ``None``: ``$HEADCAST_ICT_SRC``, else download the pinned commit (from ``url`` if given).
        n_shape: identity components to keep (1..100).
    """
    t0 = time.perf_counter()
    s = read_source(find_source(src, url=url), n_shape)
    t_read = time.perf_counter() - t0

    keep, remap, faces, uv, uv_faces = _kept_mesh(s)
    part = lambda r: remap[span(r)]  # noqa: E731
    v = s.vertices[keep] * CM
    shape = s.identity[:, keep] * CM  # (S, V, 3)
    expr = s.expressions[:, keep] * CM  # (E, V, 3)

    lm_ids = remap[s.landmarks]
    if (lm_ids < 0).any():
        raise HeadcastError(f"{s.root}: landmark vertices {s.landmarks[lm_ids < 0].tolist()} are not on the head")
    lmk_faces, lmk_bary = vertex_embedding(faces, lm_ids)
    landmarks = v[lm_ids]

    teeth, sclera = _jaw_and_sclera(s)
    skin = np.concatenate([part(FACE), part(HEAD_NECK)])
    eyeballs = {"left_eyeball": part(EYEBALL_L), "right_eyeball": part(EYEBALL_R)}
    sockets = np.concatenate([part(EYE_SOCKET_L), part(EYE_SOCKET_R)])
    upper = upper_face(v, faces, np.concatenate([skin, sockets]), landmarks)
    variants = v + np.einsum("ks,svc->kvc", np.random.default_rng(0).normal(size=(N_VARIANTS, n_shape)), shape)
    rig = design_rig(v, faces, {"skin": skin, "upper": upper, **eyeballs},
                     expr[s.expression_names.index("jawOpen")], expr, teeth, sclera, landmarks, variants=variants)
    face_tris = np.flatnonzero((faces <= part(FACE_NARROW).max()).all(1))
    dyn_faces, dyn_bary = dynamic_contour_table(v, faces, lmk_faces, lmk_bary, face_tris)
    masks = region_masks(v, {"face": part(FACE_NARROW), "skin": skin,
                             "band": np.setdiff1d(part(FACE), part(FACE_NARROW)),
                             "eye_socket_left": part(EYE_SOCKET_L), "eye_socket_right": part(EYE_SOCKET_R),
                             **eyeballs}, landmarks, rig.neck_height)

    V = len(v)
    model = HeadModel(
        v_template=v, faces=faces,
        shapedirs=shape.transpose(1, 2, 0), exprdirs=expr.transpose(1, 2, 0),
        posedirs=np.zeros((V, 3, 36), np.float32), j_regressor=rig.j_regressor,
        parents=np.array([-1, 0, 1, 1, 1]), lbs_weights=rig.lbs_weights,
        uv=uv, uv_faces=uv_faces, lmk_faces=lmk_faces, lmk_bary=lmk_bary,
        dyn_lmk_faces=dyn_faces, dyn_lmk_bary=dyn_bary, masks=masks, meta=_meta(s, rig),
        interior=_interior(s, rig, 5, float(landmarks[[62, 66], 2].mean())))
    eye_mm = np.linalg.norm(rig.joints[3] - rig.joints[4]) * 1e3
    jaw_deg = np.rad2deg(rig.info["jaw_open_angle_rad"])
    logger.info(f"ICT-FaceKit: built model 'ict' ({V} vertices, {len(faces)} triangles, {n_shape} identity and "
                f"{len(s.expression_names)} expression components; jawOpen = {jaw_deg:.1f} deg, eyes "
                f"{eye_mm:.1f} mm apart) in {time.perf_counter() - t0:.1f} s (reading {t_read:.1f} s)")
    return model
