"""Binary glTF 2.0 (.glb) export of a reconstructed head: identity baked, expressions as morph targets,
the five FLAME joints as a skin, the albedo as base colour and, optionally, an animation.

Scene layout (glTF: metres, y up, a camera looks along -z)::

    scene
    +- "placement"      the fitted similarity X_cam = s * FLIP @ X_model + t, re-expressed in glTF axes:
    |  |                scale s and translation FLIP @ (t - t0); t0 is the first (or only) frame's t, so the
    |  |                head sits near the origin in the FLAME model frame (which is already y-up, face +z)
    |  +- "root" > "neck" > "jaw", "left_eye", "right_eye"      joints, local rotations from theta
    +- "head"           the skinned mesh (rest pose: v_template + shapedirs @ beta; morph targets: exprdirs)
    +- "camera"         the capture camera at -FLIP @ t0 looking along -z (vertical field of view from fy;
                        glTF cannot express an off-centre principal point)

Node-local joint transforms are FLAME's ``[R(theta_j) | J_j - J_parent]``, and the inverse bind matrices
translate by ``-J_j``, so glTF skinning reproduces :func:`headcast.model.lbs.lbs` exactly for a neutral
expression. Not representable in glTF: the joints' dependence on psi (the jaw pivot moves by well under a
millimetre) and FLAME's pose correctives (posedirs; ICT has none).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.camera import FLIP, Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.geometry import vertex_normals
from headcast.model.head_model import JOINT_NAMES, HeadModel

_FLOAT, _UINT16, _UINT32, _UINT8 = 5126, 5123, 5125, 5121
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_CLAY = [0.82, 0.74, 0.68, 1.0]


@dataclass
class Animation:
    """Per-frame head parameters: times (N,) seconds (increasing), theta (N, 15) axis-angle radians,
    psi (N, E), and the head's motion relative to the reconstruction's placement: scale (N,) multiplies its
    scale and translation (N, 3) metres (OpenCV camera frame) is added to its translation."""

    times: np.ndarray
    theta: np.ndarray
    psi: np.ndarray
    scale: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).ravel()
        N = len(self.times)
        self.theta = np.asarray(self.theta, dtype=np.float64).reshape(N, -1)
        self.psi = np.asarray(self.psi, dtype=np.float64).reshape(N, -1)
        self.scale = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (N,)).copy()
        self.translation = np.broadcast_to(np.asarray(self.translation, dtype=np.float64), (N, 3)).copy()
        if N < 2:
            raise HeadcastError(f"an animation needs at least 2 frames, got {N}")
        if self.theta.shape[1] != 15:
            raise HeadcastError(f"animation theta must be (N, 15), got {self.theta.shape}")
        if not np.all(np.diff(self.times) > 0) or not np.all(np.isfinite(self.times)):
            raise HeadcastError("animation times must be finite and strictly increasing")
        if not (np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.psi)) and np.all(self.scale > 0)):
            raise HeadcastError("animation parameters must be finite with a positive scale")


def keyframe_animation(n_expr: int, expression_names: list[str] | None = None, seconds: float = 4.0,
                       fps: float = 25.0, seed: int = 0) -> Animation:
    """A short demo animation from a few keyframes: head turn and nod, jaw open/close, eye glances, and
    expressions (smile and blink when the names are known, otherwise random components), smoothly
    interpolated; translation zero and scale 1 (so the reconstruction's placement stays)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fps)) + 1) / fps
    u = t / seconds
    theta = np.zeros((len(t), 15))
    theta[:, 1] = 0.45 * np.sin(2 * np.pi * u)                    # root yaw (about y), radians
    theta[:, 3] = 0.15 * np.sin(4 * np.pi * u)                    # neck pitch
    theta[:, 6] = 0.25 * np.clip(np.sin(3 * np.pi * u), 0, None)  # jaw opens (about x)
    glance = 0.3 * np.sin(2 * np.pi * 2 * u + 1.0)
    theta[:, 10] = theta[:, 13] = glance                           # both eyes about y
    psi = np.zeros((len(t), n_expr))
    names = [n.lower() for n in (expression_names or [])]
    pick = lambda key: [i for i, n in enumerate(names) if key in n]  # noqa: E731
    smile, blink = pick("smile"), pick("blink")
    if smile or blink:
        psi[:, smile] = np.clip(np.sin(2 * np.pi * u - 0.5), 0, None)[:, None]
        psi[:, blink] = np.exp(-((u[:, None] - np.array([0.3, 0.8])) / 0.03) ** 2).sum(1, keepdims=True)
    else:
        comps = rng.choice(n_expr, size=min(3, n_expr), replace=False)
        for k, c in enumerate(comps):
            psi[:, c] = 1.5 * np.sin(2 * np.pi * (k + 1) * u + rng.uniform(0, 2 * np.pi))
    return Animation(t, theta, psi, np.ones(len(t)), np.zeros((len(t), 3)))


def read_animation(anim_dir: str | Path, fps: float = 25.0) -> Animation:
    """The params.npz of a ``headcast animate`` folder: theta (N, 15), psi (N, E), ``time`` (N,) seconds (or
    ``times``; default frame / ``fps``) and a placement: ``scale`` (N,) + ``translation`` (N, 3) metres,
    ``placement`` (N, 4) ``[s, tx, ty, tz]`` metres, or the paper's orthographic ``eta`` (or ``placement``)
    (N, 3) ``[s px/m, tx px, ty px]``. Each becomes motion relative to the first frame (scale s / s0; metres
    t - t0, or (t - t0) / s0 for eta, image u, v along camera x, y), which the export applies on top of the
    reconstruction's placement. Frames without a fit (non-finite values) repeat the previous frame."""
    p = Path(anim_dir) / "params.npz"
    if not p.is_file():
        raise HeadcastError(f"{anim_dir} has no params.npz (is it an animation folder from 'headcast animate'?)")
    with np.load(p, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    if "theta" not in d or "psi" not in d:
        raise HeadcastError(f"{p} lacks theta or psi")
    N = len(d["theta"])
    times = d.get("time", d.get("times", np.arange(N) / float(d.get("fps", fps))))
    if "scale" in d and "translation" in d:
        pl = np.concatenate([np.reshape(d["scale"], (N, 1)), np.reshape(d["translation"], (N, 3))], axis=1)
    else:
        pl = d.get("placement", d.get("eta", np.tile([1.0, 0.0, 0.0, 0.0], (N, 1))))
    if pl.shape not in ((N, 3), (N, 4)):
        raise HeadcastError(f"{p}: placement must be (N, 3) eta or (N, 4) [s, t], got {pl.shape}")
    rows = np.concatenate([d["theta"].reshape(N, -1), d["psi"].reshape(N, -1), pl], axis=1).astype(np.float64)
    ok = np.all(np.isfinite(rows), axis=1)
    if not ok.any():
        raise HeadcastError(f"{p} has no frame with finite parameters")
    first = int(np.argmax(ok))
    for i in range(N):  # hold the last good frame (the first good one before it)
        if not ok[i]:
            rows[i] = rows[i - 1] if i > first else rows[first]
    theta, psi, pl = rows[:, :15], rows[:, 15:-pl.shape[1]], rows[:, -pl.shape[1]:]
    s = pl[:, 0] / pl[0, 0]
    t = np.zeros((N, 3))
    if pl.shape[1] == 4:
        t = pl[:, 1:] - pl[0, 1:]
    else:
        t[:, :2] = (pl[:, 1:] - pl[0, 1:]) / pl[0, 0]
    return Animation(times, theta, psi, s, t)


# ---------------------------------------------------------------------------------------------------
def split_seams(faces: np.ndarray, uv_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One glTF vertex per distinct (vertex, uv) corner pair.

    Returns ``vertex_ids`` (V',) and ``uv_ids`` (V',) of each new vertex and the new faces (F, 3)."""
    pairs = np.stack([np.asarray(faces).ravel(), np.asarray(uv_faces).ravel()], axis=1).astype(np.int64)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1], inverse.reshape(-1, 3).astype(np.int64)


def axis_angle_to_quat(r: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) radians -> unit quaternions (..., 4) in glTF order (x, y, z, w)."""
    r = np.asarray(r, dtype=np.float64)
    a = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * a
    k = np.where(a > 1e-12, np.sin(half) / np.maximum(a, 1e-300), 0.5 - a * a / 48)  # sin(a/2)/a near 0
    return np.concatenate([r * k, np.cos(half)], axis=-1)


def continuous_quats(q: np.ndarray) -> np.ndarray:
    """Flip signs along a (N, 4) track so neighbours lie in the same hemisphere (shortest interpolation)."""
    q = np.array(q, dtype=np.float64)
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


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


class _Builder:
    """Accumulates the binary chunk, buffer views and accessors of one GLB."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.offset) % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.offset += pad
        v = {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        self.chunks.append(data)
        self.offset += len(data)
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, a: np.ndarray, kind: str, target: int | None = None, bounds: bool = False,
                 normalized: bool = False) -> int:
        ctype = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _UINT16, np.dtype(np.uint32): _UINT32,
                 np.dtype(np.uint8): _UINT8}[a.dtype]
        a = np.ascontiguousarray(a)
        acc = {"bufferView": self.view(a.tobytes(), target), "componentType": ctype,
               "count": int(a.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if bounds:
            flat = a.reshape(a.shape[0], -1)
            acc["min"] = flat.min(0).tolist()
            acc["max"] = flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def blob(self) -> bytes:
        data = b"".join(self.chunks)
        return data + b"\0" * ((-len(data)) % 4)


def build_glb(model: HeadModel, beta: np.ndarray, scale: float = 1.0, translation=(0.0, 0.0, 0.0),
              uv: np.ndarray | None = None, uv_faces: np.ndarray | None = None, texture_png: bytes | None = None,
              animation: Animation | None = None, K: Intrinsics | None = None, name: str = "head",
              theta: np.ndarray | None = None, psi: np.ndarray | None = None) -> bytes:
    """The GLB bytes of ``model`` with identity ``beta`` (S,) and placement (``scale``, ``translation`` (3,)
    metres, OpenCV camera frame); see the module docstring for the layout.

    ``uv`` (T, 2) / ``uv_faces`` (F, 3) (OBJ convention) default to the model's; ``texture_png`` is a PNG
    file's bytes used as base colour; ``animation`` adds one glTF animation; ``K`` adds the capture camera.
    The nodes' initial pose and morph weights are ``theta`` (15,) and ``psi`` (E,) (default neutral), or the
    animation's first frame.
    """
    beta = np.asarray(beta, dtype=np.float64)
    if beta.shape != (model.n_shape,):
        raise HeadcastError(f"beta has {beta.size} values; model {model.name!r} has {model.n_shape}")
    uv = model.uv if uv is None else np.asarray(uv)
    uv_faces = model.uv_faces if uv_faces is None else np.asarray(uv_faces)
    if uv_faces.shape != model.faces.shape:
        raise HeadcastError("uv_faces must have one row per model triangle")
    E, J = model.n_expr, model.n_joints
    vid, tid, faces = split_seams(model.faces, uv_faces)

    v_shaped = model.v_template.astype(np.float64) + model.shapedirs.astype(np.float64) @ beta
    joints = model.j_regressor.astype(np.float64) @ v_shaped
    b = _Builder()

    pos = v_shaped[vid]
    attrs = {
        "POSITION": b.accessor(pos.astype(np.float32), "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": b.accessor(vertex_normals(v_shaped, model.faces)[vid].astype(np.float32), "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor((np.asarray(uv, np.float64)[tid] * [1, -1] + [0, 1]).astype(np.float32), "VEC2",
                                 _ARRAY_BUFFER),
    }
    jidx, jw = skin_weights(model.lbs_weights[vid])
    attrs["JOINTS_0"] = b.accessor(jidx, "VEC4", _ARRAY_BUFFER)
    attrs["WEIGHTS_0"] = b.accessor(jw, "VEC4", _ARRAY_BUFFER)
    idx_dtype = np.uint16 if len(vid) < 65535 else np.uint32
    indices = b.accessor(faces.astype(idx_dtype).ravel(), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": b.accessor(model.exprdirs[vid, :, e].astype(np.float32), "VEC3", _ARRAY_BUFFER,
                                       bounds=True)} for e in range(E)]
    names = list(model.meta.get("expression_names") or [f"psi{e}" for e in range(E)])[:E]
    names += [f"psi{e}" for e in range(len(names), E)]

    material: dict = {"name": "albedo" if texture_png else "clay", "pbrMetallicRoughness":
                      {"baseColorFactor": [1.0, 1.0, 1.0, 1.0] if texture_png else _CLAY,
                       "metallicFactor": 0.0, "roughnessFactor": 0.85}}
    gltf: dict = {"asset": {"version": "2.0", "generator": "headcast"}}
    if texture_png:
        gltf["images"] = [{"bufferView": b.view(texture_png), "mimeType": "image/png", "name": "albedo"}]
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}

    # nodes: 0 placement, 1..J joints, J+1 mesh, J+2 camera
    t0 = np.asarray(translation, dtype=np.float64)
    jnames = list(model.meta.get("joint_names") or JOINT_NAMES)
    nodes: list[dict] = [{"name": "placement", "scale": [float(scale)] * 3, "children": [1]}]
    for j in range(J):
        p = int(model.parents[j])
        local = joints[j] - (joints[p] if p >= 0 else 0.0)
        nodes.append({"name": jnames[j] if j < len(jnames) else f"joint{j}", "translation": local.tolist()})
    for j in range(1, J):
        nodes[int(model.parents[j]) + 1].setdefault("children", []).append(j + 1)
    ibm = np.tile(np.eye(4), (J, 1, 1))
    ibm[:, :3, 3] = -joints
    skin = {"name": "flame_joints", "skeleton": 0, "joints": list(range(1, J + 1)),
            "inverseBindMatrices": b.accessor(ibm.transpose(0, 2, 1).reshape(J, 16).astype(np.float32), "MAT4")}
    mesh_node = J + 1
    nodes.append({"name": name, "mesh": 0, "skin": 0})
    scene_nodes = [0, mesh_node]
    if K is not None:
        gltf["cameras"] = [{"name": "capture", "type": "perspective", "perspective": {
            "yfov": float(2 * np.arctan(K.height / (2 * K.fy))), "aspectRatio": K.width / K.height,
            "znear": 0.01, "zfar": 100.0}}]
        nodes.append({"name": "camera", "camera": 0, "translation": (-(FLIP @ t0)).tolist()})
        scene_nodes.append(len(nodes) - 1)

    if animation is not None:
        A = animation
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
        channel(0, "translation", A.translation @ FLIP.T, "VEC3")
        channel(0, "scale", np.repeat(A.scale[:, None] * scale, 3, axis=1), "VEC3")
        gltf["animations"] = [{"name": "performance", "samplers": samplers, "channels": channels}]
        theta0, psi0 = A.theta[0], A.psi[0]
    else:
        theta0 = np.zeros(3 * J) if theta is None else np.asarray(theta, dtype=np.float64).ravel()
        psi0 = np.zeros(E) if psi is None else np.asarray(psi, dtype=np.float64).ravel()
        if theta0.shape != (3 * J,) or psi0.shape != (E,):
            raise HeadcastError(f"pose must have {3 * J} values and expression {E}")
    for j in range(J):
        q = axis_angle_to_quat(np.asarray(theta0[3 * j:3 * j + 3]))
        if not np.allclose(q, [0, 0, 0, 1]):
            nodes[j + 1]["rotation"] = q.tolist()

    gltf.update({
        "scene": 0, "scenes": [{"name": "headcast", "nodes": scene_nodes}], "nodes": nodes,
        "meshes": [{"name": name, "primitives": [{"attributes": attrs, "indices": indices, "material": 0,
                                                  "mode": 4, "targets": targets}],
                    "weights": [float(x) for x in psi0], "extras": {"targetNames": names}}],
        "materials": [material], "skins": [skin],
        "accessors": b.accessors, "bufferViews": b.views,
    })
    binary = b.blob()
    gltf["buffers"] = [{"byteLength": len(binary)}]
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def export_glb(result_dir: str | Path, anim_dir: str | Path | None = None, out: str | Path = "head.glb",
               model: HeadModel | None = None, animation: Animation | None = None) -> Path:
    """Write the GLB of a reconstruction folder (params.npz; albedo.png + mesh_textured.obj when textured;
    intrinsics.json for the camera) to ``out``, animated by ``anim_dir`` or an :class:`Animation`. Without an
    animation the file rests in the fitted pose and expression (theta, psi), as the camera saw the head."""
    from headcast.core.params import HeadParams
    from headcast.io.mesh import read_obj
    from headcast.model.registry import resolve_model

    d = Path(result_dir)
    if not d.is_dir():
        raise HeadcastError(f"reconstruction folder {d} does not exist")
    params = HeadParams.load(d)
    m = model if model is not None else resolve_model(params.model)
    if m.name != params.model:
        raise HeadcastError(f"{d} was reconstructed with model {params.model!r}, not {m.name!r}")
    uv = uv_faces = png = None
    if (d / "albedo.png").is_file() and (d / "mesh_textured.obj").is_file():
        obj = read_obj(d / "mesh_textured.obj")
        if obj.uv is None or not np.array_equal(obj.faces, m.faces):
            raise HeadcastError(f"{d / 'mesh_textured.obj'} does not match model {m.name!r}'s triangles")
        uv, uv_faces, png = obj.uv, obj.uv_faces, (d / "albedo.png").read_bytes()
    K = Intrinsics.from_json(d / "intrinsics.json") if (d / "intrinsics.json").is_file() else None
    if animation is None and anim_dir is not None:
        animation = read_animation(anim_dir)
    data = build_glb(m, params.beta, params.scale, params.translation, uv, uv_faces, png, animation, K,
                     theta=params.theta, psi=params.psi)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
