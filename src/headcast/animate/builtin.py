"""A short scripted motion, rendered as a video: the built-in driver of ``headcast demo`` and the
ground truth of the animation tests.

The script holds still, turns the head left and right, opens and closes the jaw, blinks, smiles
with raised brows and nods. It is rendered with a model (normally the reconstructed subject's
own beta) and a seeded synthetic skin through the OpenGL renderer, so tracking it back measures
how much of the motion the tracker recovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics, to_camera
from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, pose_slice
from headcast.model.cavity import interior_of
from headcast.model.head_model import HeadModel
from headcast.model.skinning import FixedShape

#: channel -> keyframes (seconds, value); angles in degrees, the jaw in radians, expressions in the
#: model's units. Between keyframes values ease with a cosine; before the first / after the last they hold.
SCRIPT: dict[str, list[tuple[float, float]]] = {
    "yaw": [(1.2, 0.0), (1.7, 22.0), (2.3, -22.0), (2.7, 0.0)],
    "jaw": [(2.8, 0.0), (3.2, 0.32), (3.5, 0.32), (3.9, 0.0)],
    "eyeBlink_L": [(4.0, 0.0), (4.15, 1.0), (4.3, 1.0), (4.45, 0.0)],
    "eyeBlink_R": [(4.0, 0.0), (4.15, 1.0), (4.3, 1.0), (4.45, 0.0)],
    "mouthSmile_L": [(4.6, 0.0), (5.0, 0.8), (5.3, 0.8), (5.7, 0.0)],
    "mouthSmile_R": [(4.6, 0.0), (5.0, 0.8), (5.3, 0.8), (5.7, 0.0)],
    "browInnerUp_L": [(4.6, 0.0), (5.0, 0.7), (5.3, 0.7), (5.7, 0.0)],
    "browInnerUp_R": [(4.6, 0.0), (5.0, 0.7), (5.3, 0.7), (5.7, 0.0)],
    "pitch": [(5.8, 0.0), (6.1, 12.0), (6.4, -8.0), (6.7, 0.0)],
}
DURATION = 7.0  # seconds
STILL = (0.4, 1.2)  # a still stretch (seconds; the detector settles in the first few frames)


@dataclass
class Motion:
    """Per-frame ground truth: times (N,) s, theta (N, N_POSE), psi (N, E); fps; the still stretch
    (start, stop) in frames."""

    times: np.ndarray
    theta: np.ndarray
    psi: np.ndarray
    fps: float
    still: tuple[int, int]


def _ease(keys: list[tuple[float, float]], t: np.ndarray) -> np.ndarray:
    ts = np.array([k[0] for k in keys])
    vs = np.array([k[1] for k in keys])
    i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 1)
    j = np.minimum(i + 1, len(ts) - 1)
    span = np.where(j > i, ts[j] - ts[i], 1.0)
    u = np.clip((t - ts[i]) / span, 0, 1)
    w = 0.5 - 0.5 * np.cos(np.pi * u)
    return np.where(t < ts[0], vs[0], vs[i] + w * (vs[j] - vs[i]))


def builtin_motion(model: HeadModel, fps: float = 25.0, duration: float = DURATION) -> Motion:
    """The scripted parameters for ``model`` at ``fps`` (expressions the model lacks are skipped)."""
    from scipy.spatial.transform import Rotation

    n = int(round(duration * fps))
    t = np.arange(n) / fps
    names = list(model.meta.get("expression_names") or [])
    theta = np.zeros((n, N_POSE))
    psi = np.zeros((n, model.n_expr))
    yaw = _ease(SCRIPT["yaw"], t)
    pitch = _ease(SCRIPT["pitch"], t)
    theta[:, pose_slice("root")] = Rotation.from_euler("YX", np.stack([yaw, pitch], 1), degrees=True).as_rotvec()
    theta[:, pose_slice("jaw").start] = _ease(SCRIPT["jaw"], t)  # about the model x axis
    for name, keys in SCRIPT.items():
        if name in names:
            psi[:, names.index(name)] = _ease(keys, t)
    return Motion(t, theta, psi, float(fps), (int(STILL[0] * fps), int(STILL[1] * fps)))


def builtin_camera(size: int = 512) -> Intrinsics:
    """The square camera of the built-in video (about 50 degrees of horizontal field of view)."""
    f = 1.1 * size
    return Intrinsics(f, f, (size - 1) / 2, (size - 1) / 2, size, size)


def head_placement(model: HeadModel, beta: np.ndarray, distance: float = 0.55) -> np.ndarray:
    """Translation t (3,) putting the neutral face centre (mean of the inner landmarks) on the optical
    axis ``distance`` metres away: ``X_cam = FLIP @ X_model + t`` (:func:`headcast.core.camera.to_camera`, s = 1)."""
    beta = np.asarray(beta, dtype=np.float64)
    rest = model.v_template + model.shapedirs[:, :, : len(beta)].astype(np.float64) @ beta  # the neutral pose
    centre = to_camera(model.landmark_vertices(rest)[17:].mean(0), 1.0, np.zeros(3))
    return np.array([0.0, 0.0, distance]) - centre


def builtin_motion_video(path: str | Path, model: HeadModel, beta: np.ndarray | None = None, *,
                         fps: float = 25.0, size: int = 512, seed: int = 0, duration: float = DURATION,
                         insert_blank: tuple[int, int] | None = None) -> Motion:
    """Render the scripted motion of ``model`` with identity ``beta`` into an MP4 at ``path``.

    The skin, brows and eyes come from :func:`headcast.synth.appearance.skin_albedo` (seeded); the
    background is a plain wall. ``insert_blank=(start, count)`` replaces ``count`` frames from
    ``start`` with black frames (no face). Returns the ground truth.
    """
    from headcast.animate.video import Prefetched, VideoWriter
    from headcast.render.gl import MeshRenderer
    from headcast.synth.appearance import skin_albedo

    beta = np.zeros(model.n_shape) if beta is None else np.asarray(beta, dtype=np.float64)
    if beta.shape != (model.n_shape,):
        raise HeadcastError(f"beta has {beta.size} values; model {model.name!r} has {model.n_shape}")
    motion = builtin_motion(model, fps, duration)
    K = builtin_camera(size)
    t = head_placement(model, beta)
    albedo, _ = skin_albedo(model, np.random.default_rng(seed), tone=0.25, hair=True)
    renderer = MeshRenderer(model.faces, model.n_vertices, colors=albedo)
    interior = interior_of(model)  # the mouth interior: teeth and cavity when the mouth opens
    if interior is not None:
        renderer.add_parts(interior.faces, interior.colors)
    shape = FixedShape(model, beta, interior)
    V = model.n_vertices
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a driver, not a preview: x264's veryfast preset made the tracked head tremble on the still stretch
    # (face-vertex speed 0.098 against 0.043 mm/frame with medium, bench animate)
    writer = VideoWriter(path, fps, crf=10, preset="medium", macro_block_size=16)
    posed = Prefetched(_posed(shape, motion, t), depth=32)  # the next frames posed while one renders
    try:
        for i, v in enumerate(posed):
            img, _ = renderer.render(v[:V], K, background=(200, 205, 210), light_dir=(0.3, 0.4, 1.0),
                                     ambient=0.45, parts=v[V:] if interior is not None else None, coverage=False)
            if insert_blank is not None and insert_blank[0] <= i < insert_blank[0] + insert_blank[1]:
                img = np.zeros_like(img)
            writer.append_data(img)
    finally:
        posed.close()
        writer.close()
        renderer.release()
    return motion


def _posed(shape: FixedShape, motion: Motion, t: np.ndarray):
    """Camera-frame vertices (V + P, 3) of each frame of ``motion``, translation ``t`` (3,), posed 16 at a time."""
    n = len(motion.times)
    for a in range(0, n, 16):
        yield from to_camera(shape.vertices(motion.theta[a:a + 16], motion.psi[a:a + 16]).astype(np.float64), 1.0, t)


def gaps_mm(model: HeadModel, beta: np.ndarray, theta: np.ndarray, psi: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth opening (inner lips 62-66) and eyelid openings (mean of the two lid point pairs of each eye)
    in millimetres (N,) of the head with identity ``beta`` driven by theta (N, N_POSE), psi (N, E)."""
    ids, corner = np.unique(model.faces[model.lmk_faces], return_inverse=True)  # the landmark triangles' vertices
    v = FixedShape(model, beta, ids=ids).vertices(theta, psi).astype(np.float64)
    L = np.einsum("lk,nlkc->nlc", model.lmk_bary, v[:, corner.reshape(-1, 3)])
    d = lambda a, b: np.linalg.norm(L[:, a] - L[:, b], axis=1) * 1000  # noqa: E731
    return {"mouth": d(62, 66), "lid_left": (d(43, 47) + d(44, 46)) / 2, "lid_right": (d(37, 41) + d(38, 40)) / 2}


def motion_recovery(model: HeadModel, beta: np.ndarray, truth: Motion, theta: np.ndarray, psi: np.ndarray,
                    found: np.ndarray | None = None) -> dict:
    """How much of the scripted motion a tracked stream (theta (N, N_POSE), psi (N, E)) brings to the head
    ``beta``: for the mouth and each eyelid opening, the tracked range over the true range and the
    correlation over time; head yaw and pitch RMS errors (degrees); face-vertex speed on the still stretch
    (mm per frame). Frames with ``found`` False are left out of the correlations and errors."""
    from scipy.spatial.transform import Rotation

    from headcast.animate.metrics import vertex_speed_mm

    n = min(len(theta), len(truth.theta))
    ok = np.ones(n, bool) if found is None else np.asarray(found[:n], bool)
    g_true = gaps_mm(model, beta, truth.theta[:n], truth.psi[:n])
    g_fit = gaps_mm(model, beta, theta[:n], psi[:n])
    out = {}
    for k in g_true:
        a, b = g_true[k][ok], g_fit[k][ok]
        out[k] = {"true_range_mm": float(a.max() - a.min()), "tracked_range_mm": float(b.max() - b.min()),
                  "recovered": float((b.max() - b.min()) / max(a.max() - a.min(), 1e-9)),
                  "correlation": float(np.corrcoef(a, b)[0, 1])}
    root = pose_slice("root")
    e_true = Rotation.from_rotvec(truth.theta[:n, root][ok]).as_euler("YXZ", degrees=True)
    e_fit = Rotation.from_rotvec(theta[:n, root][ok]).as_euler("YXZ", degrees=True)
    out["yaw_rmse_deg"] = float(np.sqrt(np.mean((e_true[:, 0] - e_fit[:, 0]) ** 2)))
    out["pitch_rmse_deg"] = float(np.sqrt(np.mean((e_true[:, 1] - e_fit[:, 1]) ** 2)))
    a, b = truth.still
    b = min(b, n)
    if b - a >= 2:
        out["still_vertex_speed_mm_per_frame"] = float(vertex_speed_mm(model, beta, theta[a:b], psi[a:b]).mean())
    return out
