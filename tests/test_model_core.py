"""The model layer's core: HeadModel checks and .npz round trip, lbs functions, HeadLayer paths."""

import json

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.spatial.transform import Rotation

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
