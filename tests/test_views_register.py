"""bench views' registration of a one-frame head: frames chained from their neighbours reach the far side."""

import numpy as np
from scipy.spatial.transform import Rotation

from headcast.bench.views import _yaw, left_out, register, register_chain
from headcast.core.geometry import vertex_normals


def _camera(yaw: float, centre: np.ndarray) -> np.ndarray:
    """Model -> camera (4, 4): the head turned by ``yaw`` degrees, 0.5 m in front (camera y down, z forward)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("y", yaw, degrees=True).as_matrix() @ np.diag([1.0, -1, -1])
    T[:3, 3] = [0, 0, 0.5] - T[:3, :3] @ centre
    return T


def _seen(T: np.ndarray, pts: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The points (N, 3) facing the camera T (4, 4), in its frame."""
    p, n = pts @ T[:3, :3].T + T[:3, 3], normals @ T[:3, :3].T
    return p[(n * p).sum(1) < 0]


def test_chain_reaches_the_profile_the_yaw_starts_miss(ict_model):
    """A head built from a frontal view (only its front half) and a camera going round to beyond profile,
    the depth showing a torso too: from the yaw starts alone ICP puts the -95 deg view at about -40 deg
    (fitness ~0.4); from its neighbour's pose it finds it; and that misfit is the frame left out."""
    v = np.asarray(ict_model.v_template, np.float64)
    n = vertex_normals(v, ict_model.faces)
    rng = np.random.default_rng(0)
    a, h = rng.uniform(0, 2 * np.pi, 4000), rng.uniform(-0.45, -0.2, 4000)
    torso = np.stack([0.18 * np.cos(a), h, 0.1 * np.sin(a)], 1)
    tn = np.stack([np.cos(a) / 0.18, 0 * a, np.sin(a) / 0.1], 1)
    pts, normals = np.concatenate([v, torso]), np.concatenate([n, tn / np.linalg.norm(tn, axis=1)[:, None]])
    front = _camera(0, v.mean(0))
    head = _seen(front, v, n)[::2]  # the head in the frontal camera's frame, as that camera saw it
    yaws = [-60, -70, -80, -88, -95]
    clouds = [_seen(_camera(y, v.mean(0)), pts, normals)[::2] for y in yaws]
    placed = register_chain(head, clouds, 0)
    np.testing.assert_allclose([_yaw(T) for T, _ in placed], yaws, atol=2.0)
    T, fit = register(head, clouds[-1])  # the yaw starts only
    assert abs(_yaw(T) + 95) > 20 and fit < 0.7 * placed[-1][1]
    assert [bool(why) for why in left_out([f for _, f in placed] + [fit])] == [False] * 5 + [True]
