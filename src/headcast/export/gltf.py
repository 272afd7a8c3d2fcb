"""Binary glTF 2.0 (.glb) export of a reconstructed head: identity baked, expressions as morph targets,
the five FLAME joints as a skin, the albedo as base colour and, optionally, an animation.

Scene layout (glTF: metres, y up, a camera looks along -z)::

    scene
    +- "placement"      the fitted similarity X_cam = s * FLIP @ X_model + t, re-expressed in glTF axes:
    |  |                scale s and translation FLIP @ (t - t0); t0 is the first (or only) frame's t, so the
    |  |                head sits near the origin in the FLAME model frame (which is already y-up, face +z)
    |  +- "root" > "neck" > "jaw", "left_eye", "right_eye"      joints, local rotations from theta
    +- "head"           the skinned mesh (rest pose: v_template + shapedirs @ beta; morph targets: exprdirs);
    |                   primitive 0 the head, then one primitive per mouth-interior part (socket, teeth...,
    |                   :mod:`headcast.model.interior`) with vertex colours, the same skin and morph targets
    +- "camera"         the capture camera at -FLIP @ t0 looking along -z (vertical field of view from fy;
                        glTF cannot express an off-centre principal point)

Node-local joint transforms are FLAME's ``[R(theta_j) | J_j - J_parent]``, and the inverse bind matrices
translate by ``-J_j``, so glTF skinning reproduces :func:`headcast.model.lbs.lbs` exactly for a neutral
expression. Not representable in glTF: the joints' dependence on psi (the jaw pivot moves by well under a
millimetre) and FLAME's pose correctives (posedirs; ICT has none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics, to_camera
from headcast.core.errors import HeadcastError
from headcast.core.geometry import vertex_normals
from headcast.core.params import JOINT_NAMES
from headcast.export.motion import Motion, axis_angle_to_quat, continuous_quats, motion_from
from headcast.io import anim as anim_io
from headcast.io import recon
from headcast.io.anim import read_animation
from headcast.io.gltf import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GlbBuffer, write_glb
from headcast.io.outputs import check_output_file, staged_file
from headcast.io.recon import check_model, read_intrinsics, read_lighting, read_texture
from headcast.model.head_model import HeadModel

logger = logging.getLogger(__name__)

_CLAY = [0.82, 0.74, 0.68, 1.0]


# ---------------------------------------------------------------------------------------------------
def split_seams(faces: np.ndarray, uv_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One glTF vertex per distinct (vertex, uv) corner pair.

    Returns ``vertex_ids`` (V',) and ``uv_ids`` (V',) of each new vertex and the new faces (F, 3)."""
    pairs = np.stack([np.asarray(faces).ravel(), np.asarray(uv_faces).ravel()], axis=1).astype(np.int64)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1], inverse.reshape(-1, 3).astype(np.int64)


def skin_weights(lbs_weights: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` joints (V, k) uint8 and their weights (V, k) float32 summing to 1 (glTF's JOINTS_0/WEIGHTS_0)."""
    w = np.asarray(lbs_weights, dtype=np.float64)
    k = min(k, w.shape[1])
    idx = np.argsort(-w, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(w, idx, axis=1)
    top /= top.sum(1, keepdims=True)
    idx = np.where(top > 0, idx, 0)  # unused slots: joint 0 with weight 0
    top = top.astype(np.float32)
    top[:, 0] += 1.0 - top.sum(1, dtype=np.float32)  # exact float32 sum for the validator
    if k < 4:
        idx = np.pad(idx, ((0, 0), (0, 4 - k)))
        top = np.pad(top, ((0, 0), (0, 4 - k)))
    return idx.astype(np.uint8), top


@dataclass
class GlbHead:
    """What a GLB bakes: ``model`` with identity beta (S,), placed by ``scale`` and ``translation`` (3,)
    metres (OpenCV camera frame); ``uv`` (T, 2) / ``uv_faces`` (F, 3) (OBJ convention; default the
    model's) and ``texture_png`` (a PNG file's bytes) for the base colour; ``K`` adds the capture camera;
    the nodes' rest pose and morph weights are ``theta`` (N_POSE,) and ``psi`` (E,) (default neutral)
    unless an animation gives its first frame. ``light``: the texture stage's SH light (27 numbers,
    :mod:`headcast.core.sh`), carried in the scene's extras for the viewer (:func:`light_extras`)."""

    model: HeadModel
    beta: np.ndarray
    scale: float = 1.0
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    texture_png: bytes | None = None
    K: Intrinsics | None = None
    name: str = "head"
    theta: np.ndarray | None = None
    psi: np.ndarray | None = None
    light: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = self.model
        E, J = m.n_expr, m.n_joints
        self.beta = np.asarray(self.beta, dtype=np.float64)
        if self.beta.shape != (m.n_shape,):
            raise HeadcastError(f"beta has {self.beta.size} values; model {m.name!r} has {m.n_shape}")
        self.uv = m.uv if self.uv is None else np.asarray(self.uv)
        self.uv_faces = m.uv_faces if self.uv_faces is None else np.asarray(self.uv_faces)
        if self.uv_faces is not None and self.uv_faces.shape != m.faces.shape:
            raise HeadcastError("uv_faces must have one row per model triangle")
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(3)
        self.theta = np.zeros(3 * J) if self.theta is None else np.asarray(self.theta, dtype=np.float64).ravel()
        self.psi = np.zeros(E) if self.psi is None else np.asarray(self.psi, dtype=np.float64).ravel()
        if self.theta.shape != (3 * J,) or self.psi.shape != (E,):
            raise HeadcastError(f"pose must have {3 * J} values and expression {E}")
        values = np.r_[self.beta, self.scale, self.translation, self.theta, self.psi]
        if not np.all(np.isfinite(values)) or not self.scale > 0:
            raise HeadcastError("the head's parameters must be finite with a positive scale")


def build_glb(head: GlbHead, motion: Motion | None = None) -> bytes:
    """The GLB bytes of ``head`` (see the module docstring for the layout), animated by ``motion``."""
    return write_glb(None, *glb_document(head, motion))


def glb_document(head: GlbHead, motion: Motion | None = None) -> tuple[dict, bytes]:
    """The glTF document and its binary buffer for :func:`headcast.io.gltf.write_glb`."""
    m = head.model
    J = m.n_joints
    b = GlbBuffer()
    v_shaped = m.v_template.astype(np.float64) + m.shapedirs.astype(np.float64) @ head.beta
    joints = m.j_regressor.astype(np.float64) @ v_shaped
    primitive, target_names = _primitive(b, head, v_shaped)
    doc: dict = {"asset": {"version": "2.0", "generator": "headcast"}}
    material = _material(b, head.texture_png, doc)
    inner, inner_materials = _interior_primitives(b, head, first_material=1)
    nodes, skin = _skeleton(b, head, joints)  # nodes: 0 placement, 1..J joints, J+1 mesh, J+2 camera
    mesh_node = J + 1
    nodes.append({"name": head.name, "mesh": 0, "skin": 0})
    scene_nodes = [0, mesh_node]
    if head.K is not None:
        K = head.K
        doc["cameras"] = [{"name": "capture", "type": "perspective", "perspective": {
            "yfov": float(2 * np.arctan(K.height / (2 * K.fy))), "aspectRatio": K.width / K.height,
            "znear": 0.01, "zfar": 100.0}}]
        # FLIP is its own inverse: to_camera's axis change also maps camera axes to glTF's
        nodes.append({"name": "camera", "camera": 0, "translation": (-to_camera(head.translation, 1.0, 0.0)).tolist()})
        scene_nodes.append(len(nodes) - 1)
    theta0, psi0 = head.theta, head.psi
    if motion is not None:
        doc["animations"] = [_animation(b, motion, head, mesh_node)]
        theta0, psi0 = motion.theta[0], motion.psi[0]
    for j in range(J):
        q = axis_angle_to_quat(np.asarray(theta0[3 * j:3 * j + 3]))
        if not np.allclose(q, [0, 0, 0, 1]):
            nodes[j + 1]["rotation"] = q.tolist()
    doc.update({
        "scene": 0, "scenes": [{"name": "headcast", "nodes": scene_nodes, "extras": light_extras(head.light)}],
        "nodes": nodes,
        "meshes": [{"name": head.name, "primitives": [primitive, *inner],
                    "weights": [float(x) for x in psi0], "extras": {"targetNames": target_names}}],
        "materials": [material, *inner_materials], "skins": [skin],
        "accessors": b.accessors, "bufferViews": b.views,
    })
    return doc, b.blob()


def light_extras(light: np.ndarray | None) -> dict:
    """The scene's extras for the viewer: ``sh_light``, 27 numbers (9 SH terms x RGB, row-major) in
    headcast's convention (:mod:`headcast.core.sh`; the glTF axes are its view frame: the capture
    camera's x right, y up, z towards it); ``sh_threejs``: the same light as three.js ``LightProbe``
    coefficients (:func:`headcast.core.sh.sh_threejs`), and ``light``: ``fitted`` (the texture stage's)
    or ``neutral`` (:func:`headcast.render.gl.preview_light`'s, when there is none)."""
    from headcast.core.sh import sh_threejs
    from headcast.render.gl import preview_light

    sh = preview_light(light)
    return {"sh_light": [round(float(x), 6) for x in sh.ravel()],
            "sh_threejs": [round(float(x), 6) for x in sh_threejs(sh).ravel()],
            "light": "neutral" if light is None else "fitted"}


def _primitive(b: GlbBuffer, head: GlbHead, v_shaped: np.ndarray) -> tuple[dict, list[str]]:
    """The mesh primitive (one glTF vertex per (vertex, uv) pair; expressions as morph targets) and the
    targets' names."""
    m = head.model
    E = m.n_expr
    vid, tid, faces = split_seams(m.faces, m.faces if head.uv_faces is None else head.uv_faces)
    attrs = {
        "POSITION": b.accessor(v_shaped[vid].astype(np.float32), "VEC3", ARRAY_BUFFER, bounds=True),
        "NORMAL": b.accessor(vertex_normals(v_shaped, m.faces)[vid].astype(np.float32), "VEC3", ARRAY_BUFFER),
    }
    if head.uv is not None:  # a model without texture coordinates gives an untextured GLB
        attrs["TEXCOORD_0"] = b.accessor((np.asarray(head.uv, np.float64)[tid] * [1, -1] + [0, 1]).astype(np.float32),
                                         "VEC2", ARRAY_BUFFER)
    jidx, jw = skin_weights(m.lbs_weights[vid])
    attrs["JOINTS_0"] = b.accessor(jidx, "VEC4", ARRAY_BUFFER)
    attrs["WEIGHTS_0"] = b.accessor(jw, "VEC4", ARRAY_BUFFER)
    idx_dtype = np.uint16 if len(vid) < 65535 else np.uint32
    indices = b.accessor(faces.astype(idx_dtype).ravel(), "SCALAR", ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": b.accessor(m.exprdirs[vid, :, e].astype(np.float32), "VEC3", ARRAY_BUFFER,
                                       bounds=True)} for e in range(E)]
    names = list(m.meta.get("expression_names") or [f"psi{e}" for e in range(E)])[:E]
    names += [f"psi{e}" for e in range(len(names), E)]
    return {"attributes": attrs, "indices": indices, "material": 0, "mode": 4, "targets": targets}, names


def _interior_primitives(b: GlbBuffer, head: GlbHead, first_material: int) -> tuple[list[dict], list[dict]]:
    """One primitive per part of the model's mouth interior (its own or the FLAME proxy): identity baked,
    expressions as morph targets, skinned on the head's joints, vertex colours (COLOR_0) under a white
    double-sided material; and those materials. Nothing when the model has no interior."""
    from headcast.model.cavity import interior_of

    interior = interior_of(head.model)
    if interior is None:
        return [], []
    v_all = interior.v_template.astype(np.float64) + interior.shapedirs.astype(np.float64) @ head.beta
    prims, materials = [], []
    for k, name in enumerate(interior.names):
        tri = interior.part_faces(k)
        if len(tri) == 0:
            continue
        ids, faces = np.unique(tri, return_inverse=True)
        faces = faces.reshape(-1, 3)
        nrm = vertex_normals(v_all[ids], faces)
        nrm[np.linalg.norm(nrm, axis=1) < 0.5] = (0.0, 0.0, 1.0)  # unit length everywhere (degenerate corners)
        jidx, jw = skin_weights(interior.lbs_weights[ids])
        attrs = {"POSITION": b.accessor(v_all[ids].astype(np.float32), "VEC3", ARRAY_BUFFER, bounds=True),
                 "NORMAL": b.accessor(nrm.astype(np.float32), "VEC3", ARRAY_BUFFER),
                 "COLOR_0": b.accessor(interior.colors[ids].astype(np.float32), "VEC3", ARRAY_BUFFER),
                 "JOINTS_0": b.accessor(jidx, "VEC4", ARRAY_BUFFER), "WEIGHTS_0": b.accessor(jw, "VEC4", ARRAY_BUFFER)}
        idx_dtype = np.uint16 if len(ids) < 65535 else np.uint32
        targets = [{"POSITION": b.accessor(interior.exprdirs[ids, :, e].astype(np.float32), "VEC3", ARRAY_BUFFER,
                                           bounds=True)} for e in range(head.model.n_expr)]
        prims.append({"attributes": attrs, "mode": 4, "material": first_material + len(materials), "targets": targets,
                      "indices": b.accessor(faces.astype(idx_dtype).ravel(), "SCALAR", ELEMENT_ARRAY_BUFFER)})
        materials.append({"name": f"interior_{name}", "doubleSided": True, "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.9}})
    return prims, materials


def _material(b: GlbBuffer, png: bytes | None, doc: dict) -> dict:
    """The one material: the albedo texture (added to ``doc``) or clay."""
    material: dict = {"name": "albedo" if png else "clay", "pbrMetallicRoughness":
                      {"baseColorFactor": [1.0, 1.0, 1.0, 1.0] if png else _CLAY,
                       "metallicFactor": 0.0, "roughnessFactor": 0.85}}
    if png:
        doc["images"] = [{"bufferView": b.view(png), "mimeType": "image/png", "name": "albedo"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
    return material


def _skeleton(b: GlbBuffer, head: GlbHead, joints: np.ndarray) -> tuple[list[dict], dict]:
    """The placement node and the joint nodes ([R | J_j - J_parent]) with their skin (inverse binds -J_j)."""
    m = head.model
    J = m.n_joints
    jnames = list(m.meta.get("joint_names") or JOINT_NAMES)
    nodes: list[dict] = [{"name": "placement", "scale": [float(head.scale)] * 3, "children": [1]}]
    for j in range(J):
        p = int(m.parents[j])
        local = joints[j] - (joints[p] if p >= 0 else 0.0)
        nodes.append({"name": jnames[j] if j < len(jnames) else f"joint{j}", "translation": local.tolist()})
    for j in range(1, J):
        nodes[int(m.parents[j]) + 1].setdefault("children", []).append(j + 1)
    ibm = np.tile(np.eye(4), (J, 1, 1))
    ibm[:, :3, 3] = -joints
    skin = {"name": "flame_joints", "skeleton": 0, "joints": list(range(1, J + 1)),
            "inverseBindMatrices": b.accessor(ibm.transpose(0, 2, 1).reshape(J, 16).astype(np.float32), "MAT4")}
    return nodes, skin


def _animation(b: GlbBuffer, A: Motion, head: GlbHead, mesh_node: int) -> dict:
    """One glTF animation: joint rotations, morph weights, and the placement's translation and scale."""
    E, J = head.model.n_expr, head.model.n_joints
    if A.psi.shape[1] != E:
        raise HeadcastError(f"the animation has {A.psi.shape[1]} expression values; the model has {E}")
    time_acc = b.accessor(A.times.astype(np.float32), "SCALAR", bounds=True)
    samplers, channels = [], []

    def channel(node: int, path: str, values: np.ndarray, kind: str) -> None:
        samplers.append({"input": time_acc, "output": b.accessor(values.astype(np.float32), kind),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    for j in range(J):
        channel(j + 1, "rotation", continuous_quats(axis_angle_to_quat(A.theta[:, 3 * j:3 * j + 3])), "VEC4")
    channel(mesh_node, "weights", A.psi.reshape(-1), "SCALAR")
    channel(0, "translation", to_camera(A.translation, 1.0, 0.0), "VEC3")  # camera -> glTF axes (FLIP = FLIP^-1)
    channel(0, "scale", np.repeat(A.scale[:, None] * head.scale, 3, axis=1), "VEC3")
    # glTF keys in seconds; Blender turns them into frames at its scene rate (24 by default): the rate to set
    fps = float(np.round(1.0 / np.median(np.diff(A.times)), 6))
    return {"name": "performance", "samplers": samplers, "channels": channels, "extras": {"fps": fps}}


# ---------------------------------------------------------------------------------------------------
def export_glb(result_dir: str | Path, anim_dir: str | Path | None = None, out: str | Path = "head.glb",
               model: HeadModel | None = None, animation: Motion | None = None, force: bool = False) -> Path:
    """Write the GLB of a reconstruction folder (params.npz; albedo.png + mesh_textured.obj when textured;
    intrinsics.json for the camera) to ``out``, animated by the animation folder ``anim_dir`` or a
    :class:`Motion`. Without an animation the file rests in the fitted pose and expression (theta, psi),
    as the camera saw the head. ``out`` is written whole or not at all (:func:`staged_file`; ``force``
    replaces an existing file)."""
    from headcast.model.registry import resolve_model

    read = [Path(result_dir) / n for n in (recon.PARAMS, recon.ALBEDO, recon.TEXTURED_OBJ, recon.INTRINSICS,
                                                 recon.LIGHTING)]
    inputs = read + ([Path(anim_dir) / anim_io.PARAMS] if anim_dir is not None else [])
    check_output_file(out, force=force, inputs=inputs)  # refuse before the work
    d, params = recon.read_checked(result_dir)
    m = model if model is not None else resolve_model(params.model)
    check_model(d, params, m)
    m = recon.with_offsets(m, recon.read_offsets(d, m.n_vertices))  # the detail layer, when the folder has one
    tex = read_texture(d, m.faces)
    if tex is not None:
        m.require_uv("a textured export")
    lighting = read_lighting(d)
    if animation is None and anim_dir is not None:
        animation = motion_from(read_animation(anim_dir, n_expr=m.n_expr))
    head = GlbHead(m, params.beta, params.scale, params.translation, None if tex is None else tex.uv,
                   None if tex is None else tex.uv_faces, None if tex is None else tex.png, read_intrinsics(d),
                   theta=params.theta, psi=params.psi, light=None if lighting is None else lighting.sh)
    out = Path(out)
    data = write_glb(None, *glb_document(head, animation))
    with staged_file(out, force=force, inputs=inputs) as tmp:
        tmp.write_bytes(data)
    logger.debug("export: wrote %s (%s, %s)", out, "textured" if tex else "clay",
                 f"{len(animation.times)} frames" if animation is not None else "static")
    return out
