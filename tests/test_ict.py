"""ICT-FaceKit conversion: the default head model, built once from ../shared/models/ict-facekit."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headcast.core.errors import HeadcastError
from headcast.io.mesh import read_obj_vertices
from headcast.model import HeadLayer, ict, ict_source, load_model, save_model
from headcast.model.head_model import DYN_YAW_MAX_DEG, REQUIRED_MASKS
from headcast.model.mesh_geometry import edge_stretch, mesh_edges

SRC = ("models", "ict-facekit")


@pytest.fixture(scope="module")
def src():
    from conftest import shared_path

    return shared_path(*SRC)


@pytest.fixture(scope="module")
def model(ict_model):
    return ict_model


@pytest.fixture(scope="module")
def layer(model):
    return HeadLayer(model, dtype=torch.float64)


@pytest.fixture(scope="module")
def index(src):
    return json.loads((src / "FaceXModel" / "vertex_indices.json").read_text())


def _pose(layer, **joints):
    """theta (1, 15) with the named joints' axis-angle vectors set."""
    theta = layer.zeros(1)["theta"]
    for name, rotvec in joints.items():
        j = ("root", "neck", "jaw", "left_eye", "right_eye").index(name)
        theta[0, 3 * j: 3 * j + 3] = torch.as_tensor(rotvec, dtype=theta.dtype)
    return theta


def _verts(layer, theta=None, psi=None, beta=None):
    p = layer.zeros(1)
    with torch.no_grad():
        out = layer(p["beta"] if beta is None else beta, p["psi"] if psi is None else psi,
                    p["theta"] if theta is None else theta)
    return out.vertices[0].numpy(), out.landmarks[0].numpy()


def test_shapes_metadata_and_licence(model, src, index):
    V = sum(b - a + 1 for a, b in ict.KEEP)
    assert model.n_vertices == V == 15156
    assert model.shapedirs.shape == (V, 3, 100) and model.exprdirs.shape == (V, 3, 53)
    assert model.posedirs.shape == (V, 3, 36) and not model.posedirs.any()
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    assert model.dyn_lmk_faces.shape == (2 * DYN_YAW_MAX_DEG + 1, 17)
    assert np.allclose(model.lbs_weights.sum(1), 1) and model.lbs_weights.min() >= 0
    assert model.uv_faces.max() < len(model.uv)
    meta = model.meta
    assert (meta["name"], meta["licence"], meta["units"], meta["source_commit"]) == ("ict", "MIT", "m", "da5f95a")
    assert meta["version"].startswith("ict-facekit-da5f95a/")
    assert (src / "LICENSE").read_text().strip() in meta["attribution"]
    assert meta["expression_names"] == index["expressions"] and meta["expr_range"] == [0, 1]


def test_template_is_upstream_in_metres(model, src, index):
    neutral = read_obj_vertices(src / "FaceXModel" / "generic_neutral_mesh.obj.xz")
    lmk = model.landmark_vertices()
    assert np.allclose(lmk, neutral[index["idx_to_landmark_verts"]] * 0.01, atol=1e-6)
    jaw = read_obj_vertices(src / "FaceXModel" / "jawOpen.obj.xz")
    k = index["expressions"].index("jawOpen")
    ids = np.asarray(index["idx_to_landmark_verts"])
    assert np.allclose(model.landmark_vertices(model.v_template + model.exprdirs[:, :, k]),
                       jaw[ids] * 0.01, atol=1e-6)
    v = model.v_template
    chin_to_crown = v[:, 1].max() - lmk[8, 1]
    assert 0.18 < chin_to_crown < 0.26, chin_to_crown  # an adult head, in metres
    assert 0.12 < 2 * np.abs(v[:, 0]).max() < 0.30
    sd = np.linalg.norm(model.shapedirs, axis=1).max(0)
    assert sd[0] > 0.005 and (sd > 0).all() and sd.max() < 0.05  # one standard deviation: millimetres


def test_landmarks_follow_the_ibug_layout(model):
    p = model.landmark_vertices()
    for i in (8, 30, 33, 36, 39, 42, 45, 48, 54):
        print(f"landmark {i:2d}: {np.round(p[i] * 1000, 1)} mm")
    assert np.argmax(p[:, 2]) == 30  # nose tip frontmost
    assert p[36, 0] < p[39, 0] < 0 < p[42, 0] < p[45, 0]  # subject's right eye on -x, outer corners outside
    assert abs(p[36, 0] + p[45, 0]) < 1e-3 and abs(p[0, 0] + p[16, 0]) < 1e-3
    assert np.argmin(p[:17, 1]) == 8 and p[8, 1] < p[57, 1] < p[51, 1] < p[33, 1] < p[30, 1]
    assert p[17:27, 1].min() > p[36:48, 1].max()  # brows above the eyes
    assert p[48, 0] < p[33, 0] < p[54, 0]


def test_dynamic_contour_slides_to_the_silhouette(model, layer):
    static_rows = model.dyn_lmk_faces[DYN_YAW_MAX_DEG]
    assert (static_rows == model.lmk_faces[:17]).all()
    face = model.masks["face"]
    for yaw_deg, far in ((30, range(9, 17)), (-30, range(0, 8))):  # the side turning away
        theta = _pose(layer, root=[0, np.deg2rad(yaw_deg), 0])
        v, lmk = _verts(layer, theta)
        static = np.einsum("lk,lkc->lc", model.lmk_bary, v[model.faces[model.lmk_faces]])
        near = [k for k in range(17) if k not in far]
        assert np.allclose(lmk[near], static[near], atol=1e-9)
        side = np.sign(yaw_deg)
        for k in far:
            if k in (7, 9):
                continue  # beside the chin the frontal point is inside the silhouette: it may lag
            band = face[np.abs(v[face, 1] - lmk[k, 1]) < 2e-3]
            outermost = (side * v[band, 0]).max()
            assert side * lmk[k, 0] > outermost - 2e-3, (yaw_deg, k)
            assert side * lmk[k, 0] >= side * static[k, 0] - 1e-9  # never moves inwards


def test_jaw_rotation_opens_the_mouth_cleanly(model, layer):
    v0, l0 = _verts(layer)
    v1, l1 = _verts(layer, _pose(layer, jaw=[0.3, 0, 0]))
    gap0, gap1 = (np.linalg.norm(l[66] - l[62]) for l in (l0, l1))
    assert gap0 < 0.002 and gap1 > 0.015, (gap0, gap1)
    stretch = edge_stretch(v0, v1, mesh_edges(model.faces))
    assert stretch.max() < 3.0 and stretch.min() > 1 / 3.0, (stretch.min(), stretch.max())
    assert np.abs(l1[17:48] - l0[17:48]).max() < 1e-9  # brows, nose and eyes stay
    # against the jawOpen blendshape at the same opening, over the face below the nose
    k = model.meta["expression_names"].index("jawOpen")
    psi = layer.zeros(1)["psi"]
    psi[0, k] = 0.3 / model.meta["rig"]["jaw_open_angle_rad"]
    v2, _ = _verts(layer, psi=psi)
    face = model.masks["face"]
    lower = face[v0[face, 1] < l0[33, 1]]
    dist = np.linalg.norm(v1[lower] - v2[lower], axis=1)
    moved = np.linalg.norm(v2[lower] - v0[lower], axis=1)
    print(f"jaw 0.3 rad vs jawOpen x{psi[0, k]:.2f}: mean {dist.mean() * 1e3:.2f} mm "
          f"(blendshape moves {moved.mean() * 1e3:.2f} mm), max stretch {stretch.max():.2f}")
    assert dist.mean() < 0.5 * moved.mean()


def test_eyeballs_rotate_rigidly_about_their_joints(model, layer):
    rl, rr = [0.3, 0.2, 0.0], [-0.2, 0.25, 0.1]
    v0, _ = _verts(layer)
    v1, _ = _verts(layer, _pose(layer, left_eye=rl, right_eye=rr))
    joints = model.j_regressor @ model.v_template
    for name, j, rv in (("left_eyeball", 3, rl), ("right_eyeball", 4, rr)):
        ids = model.masks[name]
        R = Rotation.from_rotvec(rv).as_matrix()
        assert np.abs((v0[ids] - joints[j]) @ R.T + joints[j] - v1[ids]).max() < 1e-6
    rest = np.setdiff1d(np.arange(model.n_vertices), np.concatenate(
        [model.masks["left_eyeball"], model.masks["right_eyeball"]]))
    assert np.abs(v1[rest] - v0[rest]).max() < 1e-12


def test_joints_are_placed_and_follow_identity(model):
    J = model.j_regressor.astype(np.float64) @ model.v_template
    assert np.allclose(model.j_regressor.sum(1), 1, atol=1e-4)  # affine: translating the head moves them along
    assert J[0, 1] < J[1, 1] < J[2, 1] < J[3, 1]  # root < neck < jaw < eyes (heights)
    assert 0.055 < np.linalg.norm(J[3] - J[4]) < 0.070 and J[3, 0] > 0 > J[4, 0]
    lmk = model.landmark_vertices()
    assert lmk[8, 2] - 0.12 < J[2, 2] < lmk[8, 2] - 0.05  # jaw pivot 5-12 cm behind the chin
    rng = np.random.default_rng(0)
    beta = rng.normal(size=model.n_shape)
    v = model.v_template + model.shapedirs @ beta
    for name, j in (("left_eyeball", 3), ("right_eyeball", 4)):
        ids = model.masks[name]
        before = J[j] - model.v_template[ids].mean(0)
        after = model.j_regressor[j] @ v - v[ids].mean(0)
        assert np.linalg.norm(after - before) < 1e-3  # stays inside the (moved) eyeball


def test_region_masks(model):
    m = {k: set(v.tolist()) for k, v in model.masks.items()}
    for k in (*REQUIRED_MASKS, "nose", "forehead", "left_eyeball", "right_eyeball"):
        assert m[k], k
    for a, b in (("face", "scalp"), ("face", "neck"), ("scalp", "neck"), ("lips", "eyes"), ("face", "eyes"),
                 ("nose", "lips"), ("left_eyeball", "right_eyeball")):
        assert not m[a] & m[b], (a, b)
    assert m["lips"] | m["nose"] | m["forehead"] <= m["face"]
    assert m["left_eyeball"] | m["right_eyeball"] <= m["eyes"]
    lmk_vertex = model.faces[model.lmk_faces, np.argmax(model.lmk_bary, axis=1)]
    assert set(lmk_vertex[48:68].tolist()) <= m["lips"] and lmk_vertex[30] in m["nose"]
    v = model.v_template
    assert int(np.argmax(v[:, 1])) in m["scalp"]  # crown
    assert int(np.argmin(v[:, 1])) in m["neck"]
    assert v[list(m["scalp"]), 2].mean() < 0 < v[list(m["face"]), 2].mean()
    assert (v[model.masks["left_eyeball"], 0] > 0).all()


def test_save_load_round_trip(model, tmp_path):
    back = load_model(save_model(model, tmp_path / "ict.npz"))
    for name in ("v_template", "faces", "shapedirs", "exprdirs", "j_regressor", "lbs_weights", "uv",
                 "uv_faces", "lmk_faces", "lmk_bary", "dyn_lmk_faces", "dyn_lmk_bary"):
        assert np.array_equal(getattr(back, name), getattr(model, name)), name
    assert back.meta["attribution"] == model.meta["attribution"]
    assert back.meta["expression_names"] == model.meta["expression_names"]
    assert {k: v.tolist() for k, v in back.masks.items()} == {k: v.tolist() for k, v in model.masks.items()}


def test_fast_landmarks_equal_the_full_forward(layer):
    g = torch.Generator().manual_seed(3)
    beta = torch.randn(4, layer.n_shape, generator=g, dtype=torch.float64)
    psi = torch.rand(4, layer.n_expr, generator=g, dtype=torch.float64)
    theta = 0.3 * torch.randn(4, 15, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer(beta, psi, theta).landmarks, layer.landmarks(beta, psi, theta), atol=1e-12)


def test_offline_download_says_how_to_use_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADCAST_HOME", str(tmp_path))
    monkeypatch.delenv(ict_source.ENV_SRC, raising=False)
    monkeypatch.setattr(ict_source, "DOWNLOAD_URL", "http://127.0.0.1:9/ict-facekit.tar.gz")  # nothing listens
    with pytest.raises(HeadcastError, match="could not download") as e:
        ict.build_ict_model(None)
    assert "--src" in str(e.value) and ict_source.ENV_SRC in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "src" / "ict-facekit").exists()


def test_source_lookup_and_bad_folders(monkeypatch, tmp_path, src):
    monkeypatch.setenv(ict_source.ENV_SRC, str(src))
    assert ict_source.find_source(None) == src
    assert ict_source.find_source(src / "FaceXModel") == src
    monkeypatch.setenv(ict_source.ENV_SRC, str(tmp_path))
    with pytest.raises(HeadcastError, match=f"{ict_source.ENV_SRC}.*not an ICT-FaceKit folder"):
        ict_source.find_source(None)
    with pytest.raises(HeadcastError, match="does not exist"):
        ict.build_ict_model(tmp_path / "missing")
    # a copy without its LICENSE is refused (the notice must travel with the model)
    (tmp_path / "FaceXModel").mkdir()
    for f in (src / "FaceXModel").iterdir():
        os.symlink(f, tmp_path / "FaceXModel" / f.name)
    with pytest.raises(HeadcastError, match="LICENSE"):
        ict.build_ict_model(tmp_path)


def test_plain_obj_files_are_read_too(tmp_path, src):
    import lzma

    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    xz = src / "FaceXModel" / "generic_neutral_mesh.obj.xz"
    (folder / "generic_neutral_mesh.obj").write_bytes(lzma.decompress(xz.read_bytes()))
    assert ict_source.find_source(tmp_path) == tmp_path
    plain = ict_source.mesh_file(folder, "generic_neutral_mesh")
    assert plain.suffix == ".obj"
    assert np.array_equal(read_obj_vertices(plain), read_obj_vertices(xz))
    with pytest.raises(HeadcastError, match="jawOpen.obj"):
        ict_source.mesh_file(folder, "jawOpen")


def test_uv_atlas_keeps_each_part_in_its_quadrant(model):
    lo, hi = model.uv.min(), model.uv.max()
    assert 0 <= lo and hi <= 1
    layout = model.meta["uv_layout"]
    for name, mask in (("left_eyeball", "left_eyeball"), ("right_eyeball", "right_eyeball"), ("face", "face")):
        tris = np.isin(model.faces, model.masks[mask]).all(1)
        uv = model.uv[model.uv_faces[tris]].reshape(-1, 2)
        u0, v0, u1, v1 = layout[name]
        assert (uv >= [u0, v0]).all() and (uv <= [u1, v1]).all(), name


def test_download_unpacks_only_the_model_and_licence(monkeypatch, tmp_path, caplog):
    import io
    import tarfile

    archive = tmp_path / "repo.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("ICT-FaceKit-da5f95a/LICENSE", "MIT License\n"),
                           ("ICT-FaceKit-da5f95a/FaceXModel/generic_neutral_mesh.obj", "v 0 0 0\n"),
                           ("ICT-FaceKit-da5f95a/Blender/script.py", "print()\n"),
                           ("ICT-FaceKit-da5f95a/FaceXModel/../../escape.txt", "no\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("HEADCAST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ict_source.ENV_SRC, raising=False)
    with caplog.at_level(logging.INFO, logger="headcast.model"):
        root = ict_source.find_source(None, url=archive.as_uri())
    messages = [r.getMessage() for r in caplog.records]
    assert root == tmp_path / "home" / "src" / "ict-facekit"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [".complete", "FaceXModel/generic_neutral_mesh.obj", "LICENSE"]
    assert not (tmp_path / "escape.txt").exists() and any("downloaded" in m for m in messages)
    assert ict_source.find_source(None, url="http://127.0.0.1:9/unused") == root  # cached: no second download


def test_a_corrupt_mesh_file_is_named(tmp_path, src):
    (tmp_path / "LICENSE").write_text("MIT License\n")
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    for f in (src / "FaceXModel").iterdir():
        if f.name != "identity000.obj.xz":
            os.symlink(f, folder / f.name)
    (folder / "identity000.obj.xz").write_bytes(b"not xz data")
    with pytest.raises(HeadcastError, match="identity000.obj.xz is not a readable OBJ"):
        ict_source.read_source(tmp_path, n_shape=1)
