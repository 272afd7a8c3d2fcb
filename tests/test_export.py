"""glTF export: Khronos validator (npm) with zero errors, and the file's skinning + morphs re-evaluated
here reproduce the head model's own vertices."""

import json
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from headcast.core.camera import FLIP, Intrinsics, to_camera
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.export.gltf import export_glb, skin_weights, split_seams
from headcast.export.motion import Motion, axis_angle_to_quat, keyframe_animation, motion_from
from headcast.io.anim import read_animation
from headcast.io.gltf import read_accessor as accessor
from headcast.io.gltf import read_glb
from headcast.io.mesh import write_obj
from headcast.io.recon import write_params
from headcast.model import lbs as L
from headcast.model.layer import HeadLayer

REPO = Path(__file__).resolve().parents[1]
VALIDATE_JS = """const v = require('gltf-validator'); const fs = require('fs');
v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])), {maxIssues: 100})
  .then(r => console.log(JSON.stringify(r))).catch(e => { console.error(String(e)); process.exit(3); });"""


def khronos_validate(path: Path) -> dict:
    if shutil.which("node") is None or not (REPO / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("needs node and node_modules/gltf-validator: run scripts/setup.sh ('npm ci' in the repository)")
    r = subprocess.run(["node", "-e", VALIDATE_JS, str(path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def quat_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def evaluate(gltf: dict, binary: bytes, frame: int) -> np.ndarray:
    """World-space vertices of the skinned, morphed mesh at animation keyframe ``frame``, by glTF's rules."""
    nodes = [dict(n) for n in gltf["nodes"]]
    weights = np.array(gltf["meshes"][0]["weights"])
    for ch in (gltf["animations"][0]["channels"] if "animations" in gltf else []):
        s = gltf["animations"][0]["samplers"][ch["sampler"]]
        out = accessor(gltf, binary, s["output"]).astype(np.float64)
        node, path = ch["target"]["node"], ch["target"]["path"]
        if path == "weights":
            weights = out.reshape(len(accessor(gltf, binary, s["input"])), -1)[frame]
        else:
            nodes[node][path] = out[frame].tolist()

    def local(n):
        M = np.eye(4)
        M[:3, :3] = quat_matrix(np.array(n.get("rotation", [0, 0, 0, 1]))) * np.array(n.get("scale", [1, 1, 1]))
        M[:3, 3] = n.get("translation", [0, 0, 0])
        return M

    world = {}

    def visit(i, parent):
        world[i] = parent @ local(nodes[i])
        for c in nodes[i].get("children", []):
            visit(c, world[i])

    for r in gltf["scenes"][0]["nodes"]:
        visit(r, np.eye(4))
    prim = gltf["meshes"][0]["primitives"][0]
    att = prim["attributes"]
    pos = accessor(gltf, binary, att["POSITION"]).astype(np.float64)
    for w, t in zip(weights, prim["targets"]):
        pos = pos + w * accessor(gltf, binary, t["POSITION"])
    skin = gltf["skins"][0]
    ibm = accessor(gltf, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    jm = np.stack([world[j] @ ibm[k] for k, j in enumerate(skin["joints"])])
    joints, w = accessor(gltf, binary, att["JOINTS_0"]), accessor(gltf, binary, att["WEIGHTS_0"])
    M = np.einsum("vk,vkrc->vrc", w, jm[joints.astype(int)])
    return np.einsum("vrc,vc->vr", M[:, :3, :3], pos) + M[:, :3, 3]


@pytest.fixture(scope="module")
def result_dir(ict_model, tmp_path_factory):
    """A reconstruction folder as `headcast reconstruct` + `headcast texture` leave it (random identity)."""
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("result")
    m = ict_model
    p = HeadParams(rng.normal(0, 1, m.n_shape), np.zeros(m.n_expr), np.zeros(15), 1.03,
                   np.array([0.01, -0.02, 0.48]), m.name)
    K = Intrinsics(fx=500, fy=500, cx=160, cy=120, width=320, height=240)
    write_params(d, p, K)
    K.to_json(d / "intrinsics.json")
    v = p.vertices(HeadLayer(m, dtype=torch.float64))
    write_obj(d / "mesh_textured.obj", v, m.faces, m.uv * 0.5, m.uv_faces)  # ICT's u spans 0..2
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[..., 0] = np.arange(64)[None] * 4
    tex[..., 1] = 200
    iio.imwrite(d / "albedo.png", tex, extension=".png")
    return d, p


@pytest.fixture(scope="module")
def animated(ict_model, result_dir, tmp_path_factory):
    d, _ = result_dir
    a = keyframe_animation(ict_model.n_expr, ict_model.meta.get("expression_names"), seconds=1.0, fps=10)
    a.translation[:, 0] = np.linspace(0, 0.05, len(a.times))  # moves 5 cm to the camera's right
    a.scale[:] = np.linspace(1.0, 1.1, len(a.times))
    out = export_glb(d, out=tmp_path_factory.mktemp("glb") / "head.glb", model=ict_model, animation=a)
    return out, a


def test_khronos_validator_reports_no_errors_or_warnings(animated):
    report = khronos_validate(animated[0])
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    info = report["info"]
    assert info["hasMorphTargets"] and info["hasSkins"] and info["hasTextures"] and info["animationCount"] == 1


def test_file_reproduces_model_vertices(ict_model, result_dir, animated):
    """Re-evaluating skin + morph targets of the file at keyframes gives the model's LBS vertices (the camera
    placement mapped back with X_cam = FLIP @ X_gltf + t0). glTF joints cannot follow psi, so the exact
    reference is LBS with the joints' expression dependence removed; the full model differs by < 1 mm."""
    (_, p), (path, a) = result_dir, animated
    gltf, binary = read_glb(path)
    assert gltf["meshes"][0]["extras"]["targetNames"] == list(ict_model.meta["expression_names"])
    assert [n["name"] for n in gltf["nodes"][1:6]] == ["root", "neck", "jaw", "left_eye", "right_eye"]
    layer = HeadLayer(ict_model, dtype=torch.float64)
    vid, _, _ = split_seams(ict_model.faces, ict_model.uv_faces)
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))[None]  # noqa: E731
    exact, full = [], []
    for k in range(0, len(a.times), 3):
        got = evaluate(gltf, binary, k) @ FLIP.T + p.translation
        s, tr = p.scale * a.scale[k], p.translation + a.translation[k]
        with torch.no_grad():
            v = L.lbs(t(p.beta), t(a.psi[k]), t(a.theta[k]), layer.v_template, layer.shapedirs, layer.exprdirs,
                      None, layer.j_template, layer.j_shapedirs, torch.zeros_like(layer.j_exprdirs), layer.parents,
                      layer.lbs_weights)[0][0].numpy()
        exact.append(np.abs(got - to_camera(v, s, tr)[vid]).max())
        want = HeadParams(p.beta, a.psi[k], a.theta[k], s, tr).vertices(layer)[vid]
        full.append(np.abs(got - want).max())
    assert max(exact) < 2e-5  # metres: float32 storage only
    assert max(full) < 1e-3
    assert np.abs(a.theta).max() > 0.2 and np.abs(a.psi).max() > 0.5  # the frames were posed and expressive


def test_camera_and_texture(result_dir, animated):
    (d, p), (path, _) = result_dir, animated
    gltf, binary = read_glb(path)
    cam = next(n for n in gltf["nodes"] if n.get("name") == "camera")
    np.testing.assert_allclose(cam["translation"], -(FLIP @ p.translation))
    assert gltf["cameras"][0]["perspective"]["yfov"] == pytest.approx(2 * np.arctan(120 / 500))
    img = gltf["images"][0]
    v = gltf["bufferViews"][img["bufferView"]]
    assert binary[v["byteOffset"]:v["byteOffset"] + v["byteLength"]] == (d / "albedo.png").read_bytes()
    uv = accessor(gltf, binary, gltf["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"])
    assert uv.min() >= 0 and uv.max() <= 1  # the textured OBJ's atlas UVs, flipped to glTF's top-left origin


def test_untextured_static_export_rests_in_fitted_pose(ict_model, result_dir, tmp_path):
    d, p = result_dir
    rng = np.random.default_rng(4)
    q = HeadParams(p.beta, np.clip(rng.normal(0, 0.3, ict_model.n_expr), 0, 1), rng.normal(0, 0.1, 15), p.scale,
                   p.translation, p.model)
    write_params(tmp_path, q)  # params only: no texture, no intrinsics
    out = export_glb(tmp_path, out=tmp_path / "static.glb", model=ict_model)
    gltf, binary = read_glb(out)
    assert "animations" not in gltf and "images" not in gltf and "cameras" not in gltf
    assert khronos_validate(out)["issues"]["numErrors"] == 0
    vid, _, _ = split_seams(ict_model.faces, ict_model.uv_faces)
    got = evaluate(gltf, binary, 0) @ FLIP.T + q.translation
    want = q.vertices(HeadLayer(ict_model, dtype=torch.float64))[vid]
    assert np.abs(got - want).max() < 1e-3  # the fitted head as the camera saw it (up to the psi-joint term)


def test_split_seams_keeps_every_corner():
    faces = np.array([[0, 1, 2], [2, 1, 3]])
    uv_faces = np.array([[0, 1, 2], [4, 1, 3]])  # vertex 2 has two uvs
    vid, tid, f = split_seams(faces, uv_faces)
    assert len(vid) == 5
    np.testing.assert_array_equal(vid[f], faces)
    np.testing.assert_array_equal(tid[f], uv_faces)


def test_skin_weights_and_quaternions():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(5), size=100)
    j, ww = skin_weights(w)
    assert np.all(np.abs(ww.sum(1, dtype=np.float32) - 1) < 3e-7)
    back = np.zeros_like(w)
    np.put_along_axis(back, j.astype(int), ww, axis=1)
    top4 = np.where(w > np.sort(w, 1)[:, :1], w, 0)  # the smallest of five joints is dropped
    np.testing.assert_allclose(back, top4 / top4.sum(1, keepdims=True), atol=1e-6)
    r = rng.normal(size=(20, 3))
    from scipy.spatial.transform import Rotation
    np.testing.assert_allclose(np.abs(axis_angle_to_quat(r)), np.abs(Rotation.from_rotvec(r).as_quat()), atol=1e-12)


def test_read_animation_and_bad_input(tmp_path):
    """The `headcast animate` layout: time, theta, psi, eta in pixels; a frame without a face holds the last."""
    N = 5
    psi = np.zeros((N, 3))
    psi[3] = np.nan
    np.savez(tmp_path / "params.npz", time=np.arange(N) / 30, theta=np.zeros((N, 15)), psi=psi, fps=30.0,
             eta=np.array([[1000.0, 100, 50], [1000, 110, 50], [2000, 100, 40], [np.nan] * 3, [1000, 100, 50]]))
    a = motion_from(read_animation(tmp_path))
    np.testing.assert_allclose(a.scale, [1, 1, 2, 2, 1])
    np.testing.assert_allclose(a.translation[1], [0.01, 0, 0])
    np.testing.assert_allclose(a.translation[3], [0, -0.01, 0])
    np.testing.assert_allclose(a.times, np.arange(N) / 30)
    with pytest.raises(HeadcastError):
        Motion(np.array([0.0, 0.0]), np.zeros((2, 15)), np.zeros((2, 3)), 1.0, np.zeros(3))
    with pytest.raises(HeadcastError):
        export_glb(tmp_path / "missing", out=tmp_path / "x.glb")
    with pytest.raises(HeadcastError):
        read_animation(tmp_path / "missing")
