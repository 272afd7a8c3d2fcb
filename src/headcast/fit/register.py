"""Rigid registration of the frames of a sweep: where each frame's camera sees the (still) head.

A pose here is a 4x4 rigid transform taking points of one frame's camera to the reference frame's
camera (``A_i``, metres). A camera moving round a still head and a head turning in front of a still
camera are the same problem: only the head's points take part, so the rest of the scene does not pull.

Frames are registered outwards from the reference frame, each from its registered neighbour: the
initial guess is the neighbour's pose, or, when ICP from there fits poorly, the rigid fit of the frame's 3D
landmarks to the reference landmarks when the face was detected (the better of the two), refined by point-to-plane ICP
(Open3D) against the points of the frames registered so far.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from headcast.core import threads
from headcast.core.camera import Intrinsics, depth_to_points
from headcast.core.geometry import sample_surface
from headcast.core.rigid import rigid_fit

logger = logging.getLogger(__name__)

VOXEL = 0.002            # metres: the point clouds ICP works on are thinned to one point per voxel
ICP_STAGES = (0.02, 0.008, 0.004)  # metres: coarse-to-fine correspondence distances
MIN_FITNESS = 0.6        # share of a frame's head points within the last distance of the model
MAX_RMSE = 0.0025        # metres: point-to-plane RMS over those points
GOOD_FITNESS = 0.9       # a fit from the neighbour's pose this good is not tried again from the landmarks
NEIGHBOURS = 4           # registered frames whose points a new frame is aligned to
MESH_SAMPLES = 60000     # points of the fitted mesh the poses are refined against


@dataclass
class Registered:
    """The result for one frame: its pose A (4, 4) camera -> reference (None when not registered),
    how it was found (``landmarks``, ``neighbour``), ICP fitness and RMSE (m), and why not when None."""

    pose: np.ndarray | None
    how: str = ""
    fitness: float = 0.0
    rmse: float = float("nan")
    reason: str = ""
    cloud: np.ndarray | None = None  # (N, 3) the frame's head points, its own camera frame


def transform(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 3) moved by the 4x4 transform T."""
    return pts @ T[:3, :3].T + T[:3, 3]


def rigid_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The 4x4 transform of rotation R (3, 3) and translation t (3,)."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def head_cloud(depth: np.ndarray, K: Intrinsics, centre: np.ndarray, radius: float,
               up: np.ndarray | None = None, below: float = 0.0) -> np.ndarray:
    """Depth points (N, 3) of an (H, W) depth map (metres) within ``radius`` of ``centre`` (3,), camera
    frame; with ``up`` (3,) unit vector, only those at most ``below`` metres under the centre along it
    (the neck turns less than the head, so it stays out)."""
    pts, _ = depth_to_points(depth, K)
    keep = np.linalg.norm(pts - centre, axis=1) < radius
    if up is not None:
        keep &= (pts - centre) @ up > -below
    return pts[keep]


def _cloud(pts: np.ndarray, normals: bool, voxel: float | None = VOXEL):
    """An Open3D point cloud of (N, 3) points thinned to ``voxel`` (metres; None: all of them), with normals
    estimated when asked."""
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(pts, np.float64)))
    if voxel:
        pc = pc.voxel_down_sample(voxel)
    if normals:
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * VOXEL, max_nn=30))
        pc.orient_normals_towards_camera_location(np.zeros(3))
    return pc


def icp(source: np.ndarray, target, init: np.ndarray, stages: tuple[float, ...] = ICP_STAGES,
        voxel: float | None = VOXEL) -> tuple[np.ndarray, float, float]:
    """Point-to-plane ICP of source points (N, 3), thinned to ``voxel`` (metres; None: all), onto an Open3D
    target cloud with normals, from the 4x4 ``init``; coarse to fine over the correspondence distances
    ``stages`` (metres). Returns the transform, fitness and RMSE (m) of the last stage.
    Open3D runs it on one thread: its parallel sums made the result depend on the scheduling
    (:func:`headcast.core.threads.one_open3d_thread`)."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    src = _cloud(source, normals=False, voxel=voxel)
    T = np.array(init, dtype=np.float64)
    res = None
    with threads.one_open3d_thread():
        for dist in stages:
            res = reg.registration_icp(src, target, dist, T, reg.TransformationEstimationPointToPlane(),
                                       reg.ICPConvergenceCriteria(max_iteration=30))
            T = np.asarray(res.transformation)
    return T, float(res.fitness), float(res.inlier_rmse)


def landmark_guess(lm: np.ndarray | None, ref_lm: np.ndarray) -> np.ndarray | None:
    """Pose (4, 4) from the rigid fit of a frame's 3D landmarks (68, 3; NaN = none) to the reference's;
    None with fewer than 8 landmarks in both."""
    if lm is None:
        return None
    ok = np.isfinite(lm).all(1) & np.isfinite(ref_lm).all(1)
    if ok.sum() < 8:
        return None
    R, t = rigid_fit(lm[ok], ref_lm[ok])
    return rigid_matrix(R, t)


def register_frames(depths: list[np.ndarray | None], K: Intrinsics, landmarks: list[np.ndarray | None], ref: int,
                    centre: np.ndarray, radius: float, up: np.ndarray, below: float) -> list[Registered]:
    """Register every frame's head points to frame ``ref``; returns one :class:`Registered` per frame.

    depths: (H, W) metres per frame (None: skipped). landmarks: each frame's 3D landmarks (68, 3) with NaN
    where unknown, or None (no face found). The head points are the depth points within ``radius`` of the
    head's ``centre`` (3,) (reference camera frame) as the registered neighbour's pose predicts it, and
    at most ``below`` under it along the head's ``up`` (3,) (:func:`head_cloud`).
    Frames are visited outwards from ``ref`` in sequence order; see the module docstring. The frames before
    ``ref`` are registered on a thread of their own beside those after it (the two chains share only ``ref``).
    """
    out = [Registered(None, reason="skipped") for _ in depths]
    out[ref] = Registered(np.eye(4), "reference", 1.0, 0.0, cloud=head_cloud(depths[ref], K, centre, radius, up, below))
    frame = (depths, K, landmarks, centre, radius, up, below)
    before = threads.Job(_register_chain, out, range(ref - 1, -1, -1), ref, frame, name="register")
    _register_chain(out, range(ref + 1, len(depths)), ref, frame)
    before.result()
    for i, r in enumerate(out):
        if i != ref and depths[i] is not None:
            logger.info(f"register: frame {i}: {r.how if r.pose is not None else r.reason} "
                        f"(fitness {r.fitness:.2f}, rmse {r.rmse * 1000:.2f} mm)")
    return out


def _register_chain(out: list[Registered], order: range, ref: int, frame: tuple) -> None:
    """Register the frames ``order`` (outwards from ``ref``, already in ``out``) into ``out``, each from the
    last one registered; ``frame`` holds :func:`register_frames`' depths, K, landmarks, centre, radius, up, below."""
    depths, K, landmarks, centre, radius, up, below = frame
    done = [ref]
    for i in order:
        if depths[i] is None:
            continue
        last = out[done[-1]].pose
        inv = np.linalg.inv(last)
        pts = head_cloud(depths[i], K, transform(inv, centre[None])[0], radius, inv[:3, :3] @ up, below)
        if len(pts) < 500:
            out[i] = Registered(None, reason=f"too few depth points on the head ({len(pts)})")
            continue
        model = _cloud(np.concatenate([transform(out[j].pose, out[j].cloud) for j in done[-NEIGHBOURS:]]), True)
        out[i] = _register_one(pts, model, last, landmark_guess(landmarks[i], landmarks[ref]))
        out[i].cloud = pts
        if out[i].pose is not None:
            done.append(i)


def _register_one(pts: np.ndarray, model, neighbour: np.ndarray, from_landmarks: np.ndarray | None) -> Registered:
    """ICP from the neighbour's pose; when that fits less than GOOD_FITNESS, also from the landmark
    guess, keeping the better."""
    best = Registered(None, reason="ICP did not converge")
    for how, init in (("neighbour", neighbour), ("landmarks", from_landmarks)):
        if init is None or (best.fitness >= GOOD_FITNESS and best.rmse <= MAX_RMSE):
            continue
        T, fit, rmse = icp(pts, model, init)
        if fit > best.fitness or (fit == best.fitness and rmse < best.rmse):
            best = Registered(T, how, fit, rmse)
    if best.fitness < MIN_FITNESS or not best.rmse <= MAX_RMSE:
        return Registered(None, best.how, best.fitness, best.rmse,
                          f"ICP did not converge (fitness {best.fitness:.2f}, rmse {best.rmse * 1000:.2f} mm)")
    return best


def refine_to_mesh(clouds: list[np.ndarray | None], poses: list[np.ndarray | None], vertices: np.ndarray,
                   faces: np.ndarray, seed: int) -> list[np.ndarray | None]:
    """Each registered frame's pose (camera -> mesh frame) refined by point-to-plane ICP of its head
    points onto the fitted mesh (vertices (V, 3), faces (F, 3)), sampled at MESH_SAMPLES points drawn
    with ``seed``: the poses' half of the joint fit. The frames' ICPs run side by side on the thread plan's
    threads, each on one (:func:`icp`), so the result does not depend on their count."""
    import open3d as o3d

    pts, normals = sample_surface(vertices, faces, MESH_SAMPLES, np.random.default_rng(seed))
    target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    target.normals = o3d.utility.Vector3dVector(normals)

    def refine(pts: np.ndarray | None, A: np.ndarray | None) -> np.ndarray | None:
        if A is None:
            return None
        T, fit, _ = icp(pts, target, A)
        return T if fit >= MIN_FITNESS else A

    with ThreadPoolExecutor(threads.plan().count) as pool:
        return list(pool.map(refine, clouds, poses))
