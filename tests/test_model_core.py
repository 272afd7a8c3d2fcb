"""The model layer's core: HeadModel checks and .npz round trip, lbs functions, HeadLayer paths."""

import json

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.spatial.transform import Rotation

from flame_fixture import write_zip_bomb
from headcast.core.errors import HeadcastError
from headcast.model import HeadLayer, HeadModel, load_model, save_model
from headcast.model import lbs as L


def tiny_model(seed: int = 0, dynamic: bool = True) -> HeadModel:
    """A small sphere 'head' with random bases, a 5-joint rig and a landmark embedding."""
    rng = np.random.default_rng(seed)
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=0.1, resolution=12)
    v = np.asarray(mesh.vertices, dtype=np.float32)
    f = np.asarray(mesh.triangles, dtype=np.int32)
    V, F = len(v), len(f)
    joints = np.array([[0, -0.12, 0], [0, -0.05, 0], [0, -0.03, 0.03], [0.03, 0.02, 0.08], [-0.03, 0.02, 0.08]])
    jr = np.zeros((5, V), np.float32)
    for j, p in enumerate(joints):  # each joint: mean of its 3 nearest vertices, shifted exactly onto p below
        near = np.argsort(((v - p) ** 2).sum(1))[:3]
        jr[j, near] = 1 / 3
    weights = rng.random((V, 5)).astype(np.float32) ** 4
    weights /= weights.sum(1, keepdims=True)
    dyn = dict(dyn_lmk_faces=rng.integers(0, F // 4, (79, 17)), dyn_lmk_bary=rng.dirichlet(np.ones(3), (79, 17))) if dynamic else {}
    return HeadModel(
        v_template=v, faces=f, shapedirs=rng.normal(0, 0.003, (V, 3, 6)), exprdirs=rng.normal(0, 0.003, (V, 3, 4)),
        posedirs=rng.normal(0, 0.001, (V, 3, 36)), j_regressor=jr, parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=weights, uv=rng.random((V, 2)), uv_faces=f.copy(), lmk_faces=rng.integers(0, F // 4, 68),
        lmk_bary=rng.dirichlet(np.ones(3), 68),
        masks={k: np.arange(i, V, 5) for i, k in enumerate(("face", "eyes", "lips", "scalp", "neck"))},
        meta={"name": "tiny", "version": "test", "licence": "test"}, **dyn)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _params(layer, B, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, layer.n_shape, generator=g), torch.randn(B, layer.n_expr, generator=g),
            scale * torch.randn(B, 15, generator=g))


def test_batch_rodrigues_matches_scipy():
    rv = np.random.default_rng(1).normal(size=(20, 3))
    rv[0] = 0
    ours = L.batch_rodrigues(torch.tensor(rv)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rv).as_matrix(), atol=1e-6)


def test_neutral_parameters_give_template(model):
    layer = HeadLayer(model)
    z = layer.zeros(2)
    out = layer(z["beta"], z["psi"], z["theta"])
    np.testing.assert_allclose(out.vertices[0].numpy(), model.v_template, atol=1e-6)
    np.testing.assert_allclose(out.joints[1].numpy(), model.j_regressor @ model.v_template, atol=1e-6)
    np.testing.assert_allclose(out.landmarks[0, 17:].numpy(), model.landmark_vertices()[17:], atol=1e-6)


def test_root_rotation_is_rigid_about_root_joint(model):
    layer = HeadLayer(model)
    z = layer.zeros(1)
    theta = z["theta"].clone()
    theta[0, :3] = torch.tensor([0.1, -0.4, 0.2])
    v = layer(z["beta"], z["psi"], theta).vertices[0].numpy()
    R = Rotation.from_rotvec([0.1, -0.4, 0.2]).as_matrix()
    j0 = model.j_regressor[0] @ model.v_template
    np.testing.assert_allclose(v, (model.v_template - j0) @ R.T + j0, atol=1e-5)


def test_fast_landmarks_equal_full_forward(model):
    layer = HeadLayer(model)
    beta, psi, theta = _params(layer, 4, seed=3)
    theta[:, 3] += 0.5  # neck yaw large enough to move the dynamic contour row
    full = layer(beta, psi, theta).landmarks
    fast = layer.landmarks(beta, psi, theta)
    np.testing.assert_allclose(fast.numpy(), full.numpy(), atol=1e-6)
    assert layer.fast_vertex_ids.numel() < model.n_vertices


def test_dynamic_contour_row_follows_yaw(model):
    faces, _ = L.dynamic_contour(torch.tensor([[0, 0.3, 0] + [0] * 12, [0, -0.3, 0] + [0] * 12], dtype=torch.float32),
                                 torch.as_tensor(model.dyn_lmk_faces, dtype=torch.long),
                                 torch.as_tensor(model.dyn_lmk_bary))
    deg = round(np.degrees(0.3))
    np.testing.assert_array_equal(faces[0].numpy(), model.dyn_lmk_faces[39 + deg])
    np.testing.assert_array_equal(faces[1].numpy(), model.dyn_lmk_faces[39 - deg])


def test_forward_is_differentiable(model):
    layer = HeadLayer(model, dtype=torch.float64)
    beta, psi, theta = (p.double().requires_grad_() for p in _params(layer, 1, seed=5, scale=0.2))
    ok = torch.autograd.gradcheck(lambda b, e, t: layer.landmarks(b, e, t), (beta, psi, theta), eps=1e-6, atol=1e-5)
    assert ok


def test_save_load_round_trip(model, tmp_path):
    p = save_model(model, tmp_path / "tiny.npz")
    back = load_model(p)
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "lbs_weights", "dyn_lmk_faces", "lmk_bary"):
        np.testing.assert_array_equal(getattr(back, k), getattr(model, k))
    assert back.meta["name"] == "tiny" and back.meta["units"] == "m"
    assert set(back.masks) == set(model.masks)


def test_load_refuses_other_files(tmp_path, model):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(HeadcastError, match="not a headcast model"):
        load_model(junk)
    p = save_model(model, tmp_path / "m.npz")
    with np.load(p) as z:
        data = dict(z)
    meta = json.loads(data["meta_json"].tobytes())
    meta["format_version"] = 99
    data["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "future.npz", **data)
    with pytest.raises(HeadcastError, match="upgrade headcast"):
        load_model(tmp_path / "future.npz")
    with pytest.raises(HeadcastError, match="no head model file"):
        load_model(tmp_path / "missing.npz")


def test_validation_names_the_problem(model):
    with pytest.raises(HeadcastError, match="lbs_weights rows"):
        HeadModel(**{**vars(model), "lbs_weights": model.lbs_weights * 2})
    with pytest.raises(HeadcastError, match="mask 'lips'"):
        HeadModel(**{**vars(model), "masks": {k: v for k, v in model.masks.items() if k != "lips"}})


def _rewrite(src, dst, meta=None, drop=(), **arrays):
    """A copy of the model file ``src`` at ``dst`` with arrays replaced or dropped and metadata changed
    (``meta``: a function of the metadata object returning the new one, or raw bytes)."""
    with np.load(src) as z:
        data = {k: z[k] for k in z.files if k not in drop}
    if meta is not None:
        new = meta(json.loads(data["meta_json"].tobytes())) if callable(meta) else meta
        data["meta_json"] = np.frombuffer(new if isinstance(new, bytes) else json.dumps(new).encode(), np.uint8)
    data.update(arrays)
    np.savez(dst, **data)
    return dst


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


def test_damaged_model_files_give_one_line_errors(tmp_path, model):
    """Each damage a reader meets in a model file: one HeadcastError line naming the file."""
    from headcast.model.registry import resolve_model

    p = save_model(model, tmp_path / "m.npz")
    cases = {
        "bad-json": (dict(meta=b"{not json"), "metadata is not valid JSON"),
        "list": (dict(meta=lambda m: [m]), "metadata is a JSON list, not an object"),
        "no-version": (dict(meta=lambda m: _without(m, "format_version")), "no model format version"),
        "no-meta": (dict(drop=("meta_json",)), "no metadata"),
        "mask": (dict(drop=("mask_lips",)), "mask 'lips' names a missing array"),
        "no-faces": (dict(faces=np.zeros((0, 3), np.int32)), "no vertices or no faces"),
        "basis-2d": (dict(shapedirs=model.shapedirs[:, :, 0]), r"shapedirs has 2 dimensions"),
        "nan": (dict(v_template=np.full_like(model.v_template, np.nan)), "v_template has non-finite values"),
        "strings": (dict(uv=np.array([["a", "b"]])), "uv holds <U1 values"),
        "lacks": (dict(drop=("lbs_weights",)), "lacks arrays: lbs_weights"),
        "bad-index": (dict(faces=model.faces + model.n_vertices), "faces index missing vertices"),
    }
    for name, (change, message) in cases.items():
        bad = _rewrite(p, tmp_path / f"{name}.npz", **change)
        for load in (load_model, lambda q: resolve_model(str(q))):
            with pytest.raises(HeadcastError, match=message) as e:
                load(bad)
            assert str(bad) in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_zip_bomb_model_is_refused_at_once(tmp_path):
    import time
    import tracemalloc

    bomb = tmp_path / "bomb.npz"
    inflated = write_zip_bomb(bomb)
    assert bomb.stat().st_size < 4e6 and inflated > 3e9
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(HeadcastError, match="MB of arrays uncompressed") as e:
            load_model(bomb)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(e.value) and elapsed < 0.5 and peak < 100e6, (elapsed, peak)


def test_bounded_npz_reader(tmp_path):
    """read_npz: arrays as np.load gives them (writable), members and sizes bounded before reading."""
    from headcast.io.arrays import read_npz

    a = {"x": np.arange(12.0).reshape(3, 4), "f": np.asfortranarray(np.arange(6).reshape(2, 3)), "s": np.str_("ab")}
    np.savez_compressed(tmp_path / "a.npz", **a)
    got = read_npz(tmp_path / "a.npz")
    for k, v in a.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    got["x"][0, 0] = 1.0
    with pytest.raises(HeadcastError, match="at most 2 are read"):
        read_npz(tmp_path / "a.npz", max_members=2)
    with pytest.raises(HeadcastError, match="at most 0 MB"):
        read_npz(tmp_path / "a.npz", max_bytes=100)
    header = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 9,)})
    import zipfile

    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(64))
    with pytest.raises(HeadcastError, match=r"announces \(1000000000,\) float64"):
        read_npz(tmp_path / "liar.npz")
    np.savez(tmp_path / "obj.npz", o=np.array([{}], dtype=object))
    with pytest.raises(HeadcastError, match="Python objects"):
        read_npz(tmp_path / "obj.npz")
    for bad in ("/dev/zero", tmp_path / "missing.npz"):
        with pytest.raises(HeadcastError, match="not a regular file|does not exist"):
            read_npz(bad)
