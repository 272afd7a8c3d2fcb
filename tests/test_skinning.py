"""The numpy posing of the previews (model.skinning.FixedShape) against the torch HeadLayer and InteriorLayer,
on ICT (with its mouth interior) and on a FLAME-format model (pose correctives, the proxy interior)."""

import numpy as np
import pytest
import torch

from headcast.model.cavity import interior_of
from headcast.model.interior_layer import interior_layer
from headcast.model.layer import HeadLayer
from headcast.model.skinning import FixedShape


@pytest.mark.parametrize("which", ["ict_model", "flame_model"])
def test_fixed_shape_poses_like_the_head_layer(which, request):
    model = request.getfixturevalue(which)
    rng = np.random.default_rng(4)
    B = 5
    beta = rng.normal(0, 1, model.n_shape)
    psi = rng.normal(0, 0.5, (B, model.n_expr))
    theta = rng.normal(0, 0.2, (B, 3 * model.n_joints))
    theta[0] = 0.0  # the rest pose too
    layer = HeadLayer(model, dtype=torch.float64)
    inner = interior_layer(layer)
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    args = (t(np.tile(beta, (B, 1))), t(psi), t(theta))
    with torch.no_grad():
        ref = torch.cat([layer.vertices(*args), inner.vertices(*args)], 1).numpy()
    got = FixedShape(model, beta, interior_of(model)).vertices(theta, psi)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 2e-6  # metres: float32 rounding
    exact, joints = FixedShape(model, beta, interior_of(model), dtype=np.float64).posed(theta, psi)
    assert exact.dtype == np.float64 and np.abs(exact - ref).max() < 1e-12  # the synthetic ground truth's
    with torch.no_grad():
        ref_joints = layer(*args).joints.numpy()
    assert np.abs(joints - ref_joints).max() < 1e-12
    ids = model.masks["face"]
    some = FixedShape(model, beta, ids=ids).vertices(theta, psi)
    assert np.abs(some - ref[:, ids]).max() < 2e-6


def test_synthetic_geometry_matches_the_float64_layer(ict_model):
    """The synthetic subjects are posed in NumPy (no torch in ``headcast synth`` and the demo): vertices,
    landmarks (the yaw's contour) and joints as the float64 HeadLayer gives them."""
    from headcast.synth import random_subject, subject_geometry

    layer = HeadLayer(ict_model, dtype=torch.float64)
    for seed in (0, 7, 1003):
        s = random_subject(ict_model, seed, yaw_range_deg=60)
        got = subject_geometry(ict_model, s)
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))[None]  # noqa: E731
        with torch.no_grad():
            out = layer(t(s.beta), t(s.psi), t(s.theta))
        for key in ("vertices", "landmarks", "joints"):
            ref = s.s * getattr(out, key)[0].numpy() * np.array([1, -1, -1]) + s.t
            assert np.abs(got[key] - ref).max() < 1e-12, key
        assert got["interior"].shape == (ict_model.interior.n_vertices, 3)


def test_camera_vertices_match_head_params_on_the_layer(ict_model):
    """The texture stage's torch-free posing (every joint, scale and translation) equals HeadParams.vertices."""
    from headcast.core.params import N_POSE, HeadParams
    from headcast.model.skinning import camera_vertices

    rng = np.random.default_rng(5)
    p = HeadParams(rng.normal(0, 1, ict_model.n_shape), rng.normal(0, 0.4, ict_model.n_expr),
                   rng.normal(0, 0.15, N_POSE), 1.07, np.array([0.01, -0.02, 0.45]), "ict")
    ref = p.vertices(HeadLayer(ict_model, dtype=torch.float64))
    got = camera_vertices(ict_model, p)
    assert got.dtype == np.float64 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 3e-6  # metres: float32 rounding in the posing
