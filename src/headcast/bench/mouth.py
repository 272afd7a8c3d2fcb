"""Self-reenactment benchmark of the mouth (``headcast bench mouth``).

A synthetic subject (seeded identity, :func:`headcast.synth.random_subject`) is reconstructed from a
synthetic RGB-D capture of its neutral face (``fit_observation``, method full). The same subject talks
with the built-in motion (:func:`headcast.animate.builtin.builtin_motion_video`, drawn with its mouth
interior); the video is tracked (:func:`headcast.animate.pipeline.track`) and the reconstructed head is
rendered with the tracked parameters in the video's camera (the tracker's orthographic placement eta
turned into a pinhole placement at the face's depth), with the subject's colours (so the figures
measure geometry and the interior, not the texture stage). Compared with the ground-truth frames
(scikit-image PSNR and SSIM): over the face box (the detected 68 points' bounding box) on every frame
with a face, and over the mouth box (the detected lip points' box grown by 20 %) on the mouth-open
frames (the script's inner-lip gap at least half its maximum); the same render without the interior
is the baseline. A strip of mouth-open frames (ground truth | avatar | avatar without interior) is
written as a PNG; the preview's time per frame with and without the interior is measured too
(milliseconds, shared machine).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headcast.animate.builtin import builtin_camera, builtin_motion_video, gaps_mm
from headcast.animate.pipeline import detect_video, track
from headcast.animate.video import read_frames
from headcast.bench import machine
from headcast.core.camera import Intrinsics, to_camera
from headcast.core.errors import HeadcastError
from headcast.io.validate import check_number
from headcast.model.interior_layer import interior_layer
from headcast.model.layer import HeadLayer
from headcast.model.registry import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)
GROW = 0.2  # the mouth box grows by this share of its size on each side


def reconstruct_subject(model, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The true identity (S,) of the seeded subject and the one reconstructed from its neutral RGB-D frame."""
    from headcast.fit.reconstruct import fit_observation, make_fitter
    from headcast.preprocess.preprocess import preprocess
    from headcast.preprocess.rgbd import RGBDFrame
    from headcast.synth import default_intrinsics, random_subject, render_rgbd

    subj = random_subject(model, seed, expression=np.zeros(model.n_expr), yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0,
                          jaw_max_rad=0.0, gaze_max_rad=0.0, distance=0.5)
    K = default_intrinsics(640, 480)
    fr = render_rgbd(model, subj, K, profile="truedepth", seed=seed)
    obs = preprocess(RGBDFrame(fr.color, fr.depth, K), "mediapipe", seed=seed)
    rec = fit_observation(obs, make_fitter(model), "full")
    return subj.beta, rec.params.beta


def placement(landmarks: np.ndarray, uv: np.ndarray, eta: np.ndarray, K: Intrinsics, steps: int = 10) -> np.ndarray:
    """Translation t (3,) m of ``X_cam = FLIP @ X + t`` whose pinhole projection of the posed model-frame
    ``landmarks`` (68, 3) best matches the tracker's own 2D landmarks ``uv`` (68, 2) px (its orthographic
    placement ``eta`` = (s px/m, tx, ty) seen by the camera ``K``): Gauss-Newton from the depth where the
    tracker's scale holds."""
    s, tx, ty = eta
    t = np.array([(tx - K.cx) / s, (ty - K.cy) / s, K.fx / s + float(landmarks[:, 2].mean())])
    for _ in range(steps):
        X = to_camera(landmarks, 1.0, t)
        Z = X[:, 2]
        r = np.concatenate([K.fx * X[:, 0] / Z + K.cx - uv[:, 0], K.fy * X[:, 1] / Z + K.cy - uv[:, 1]])
        J = np.zeros((2 * len(Z), 3))
        J[: len(Z), 0], J[: len(Z), 2] = K.fx / Z, -K.fx * X[:, 0] / Z**2
        J[len(Z):, 1], J[len(Z):, 2] = K.fy / Z, -K.fy * X[:, 1] / Z**2
        t = t - np.linalg.lstsq(J, r, rcond=None)[0]
    return t


def avatar_frames(model, beta: np.ndarray, frames: list, K: Intrinsics, colors: np.ndarray):
    """Renders (with interior, without) of the head ``beta`` for tracked frames, and ms per frame of each."""
    from headcast.render.gl import MeshRenderer

    layer = HeadLayer(model, dtype=torch.float64)
    inner = interior_layer(layer)
    r = MeshRenderer(model.faces, model.n_vertices, colors=colors)
    if inner is not None:
        r.add_parts(inner.interior.faces, inner.interior.colors)
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    out, bare, ms = [], [], {"with": [], "without": []}
    try:
        for fr in frames:
            args = (f(beta[None]), f(fr.psi[None]), f(fr.theta[None]))
            with torch.no_grad():
                v = layer(*args)
                parts = None if inner is None else inner.vertices(*args)[0].numpy()
            t = placement(v.landmarks[0].numpy(), fr.landmarks, fr.eta, K)
            cam = lambda x: to_camera(x, 1.0, t)  # noqa: E731
            light = dict(background=(200, 205, 210), light_dir=(0.3, 0.4, 1.0), ambient=0.45)
            t0 = time.perf_counter()
            img, _ = r.render(cam(v.vertices[0].numpy()), K, parts=None if parts is None else cam(parts), **light)
            t1 = time.perf_counter()
            img0, _ = r.render(cam(v.vertices[0].numpy()), K, **light)
            ms["with"].append(1e3 * (t1 - t0))
            ms["without"].append(1e3 * (time.perf_counter() - t1))
            out.append(img)
            bare.append(img0)
    finally:
        r.release()
    return out, bare, {k: float(np.median(x)) for k, x in ms.items()}


def _box(points: np.ndarray, grow: float, shape) -> tuple[int, int, int, int]:
    lo, hi = points.min(0), points.max(0)
    pad = grow * (hi - lo)
    lo, hi = np.floor(lo - pad).astype(int), np.ceil(hi + pad).astype(int)
    return max(lo[1], 0), min(hi[1], shape[0]), max(lo[0], 0), min(hi[0], shape[1])


def _scores(gt: np.ndarray, av: np.ndarray, box) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = gt[box[0]:box[1], box[2]:box[3]], av[box[0]:box[1], box[2]:box[3]]
    win = min(7, min(a.shape[:2]) // 2 * 2 - 1)
    return (float(peak_signal_noise_ratio(a, b, data_range=255)),
            float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win)))


def run_mouth_bench(model: str = DEFAULT_MODEL, seed: int = 0, size: int = 512, duration: float = 7.0,
                    figures: Path | None = None) -> dict:
    """Figures of the module docstring; the strip goes to ``figures/mouth_strip.png`` when given."""
    from headcast.synth.appearance import skin_albedo

    check_number(size, "--size", 64, 2048, integer=True)
    check_number(duration, "--duration", 1.0, 60.0)
    m = resolve_model(model)
    if interior_layer(HeadLayer(m)) is None:
        raise HeadcastError(f"model {m.name!r} has no mouth interior and no lip ring to fit one to")
    t0 = time.perf_counter()
    beta_true, beta = reconstruct_subject(m, seed)
    t_rec = time.perf_counter() - t0
    K = builtin_camera(size)
    with tempfile.TemporaryDirectory(prefix="headcast-bench-mouth-") as tmp:
        video = Path(tmp) / "talking.mp4"
        truth = builtin_motion_video(video, m, beta_true, size=size, seed=seed, duration=duration)
        det = detect_video(video)
        trk = track(m, det.observations, det.info.fps, size=(det.info.width, det.info.height))
        gt = list(read_frames(video, len(trk.frames)))
    colors, _ = skin_albedo(m, np.random.default_rng(seed), tone=0.25, hair=True)  # the video's colours
    av, bare, ms = avatar_frames(m, beta, trk.frames, K, colors)
    n = min(len(gt), len(av), len(truth.theta))
    gap = gaps_mm(m, beta_true, truth.theta[:n], truth.psi[:n])["mouth"]
    found = [i for i in range(n) if det.observations[i] is not None]
    opened = [i for i in found if gap[i] >= 0.5 * gap.max()]
    face = np.array([_scores(gt[i], av[i], _box(det.observations[i].landmarks, 0.0, gt[i].shape)) for i in found])
    boxes = {i: _box(det.observations[i].landmarks[48:68], GROW, gt[i].shape) for i in opened}
    mouth = np.array([_scores(gt[i], av[i], boxes[i]) for i in opened])
    mouth0 = np.array([_scores(gt[i], bare[i], boxes[i]) for i in opened])
    res = {"model": m.name, "seed": seed, "size": size, "frames": n, "frames_with_face": len(found),
           "mouth_open_frames": len(opened), "mouth_gap_max_mm": float(gap.max()),
           "identity_error_mm": None, "reconstruct_s": t_rec,
           "face": {"psnr": float(face[:, 0].mean()), "ssim": float(face[:, 1].mean())},
           "mouth": {"psnr": float(mouth[:, 0].mean()), "ssim": float(mouth[:, 1].mean())},
           "mouth_without_interior": {"psnr": float(mouth0[:, 0].mean()), "ssim": float(mouth0[:, 1].mean())},
           "preview_ms": ms, "machine": machine(), "time": time.strftime("%Y-%m-%d"), "target_mouth_ssim": 0.8}
    res["identity_error_mm"] = _identity_error_mm(m, beta_true, beta)
    if figures is not None:
        res["strip"] = str(write_strip(Path(figures) / "mouth_strip.png", gt, av, bare, opened, boxes))
    logger.info(f"bench mouth: mouth-box SSIM {res['mouth']['ssim']:.3f} (without interior "
                f"{res['mouth_without_interior']['ssim']:.3f}) on {len(opened)} mouth-open frames")
    return res


def _identity_error_mm(model, beta_true: np.ndarray, beta: np.ndarray) -> float:
    """Median vertex distance (mm) between the true and reconstructed neutral heads (face region)."""
    d = model.shapedirs.astype(np.float64) @ (np.asarray(beta, np.float64) - beta_true)
    face = model.masks["face"]
    return float(np.median(np.linalg.norm(d[face], axis=1)) * 1e3)


def write_strip(path: Path, gt: list, av: list, bare: list, opened: list[int], boxes: dict, k: int = 6) -> Path:
    """Up to ``k`` mouth-open frames as columns of (ground truth / avatar / avatar without interior) crops
    around the mouth, each scaled to 128 pixels high."""
    import cv2
    import imageio.v3 as iio

    from headcast.io.outputs import staged_file

    if not opened:
        raise HeadcastError("no mouth-open frames to draw")
    pick = [opened[j] for j in np.linspace(0, len(opened) - 1, min(k, len(opened))).round().astype(int)]
    cols = []
    for i in pick:
        y0, y1, x0, x1 = boxes[i]
        cy, cx, h = (y0 + y1) // 2, (x0 + x1) // 2, max(y1 - y0, (x1 - x0) * 3 // 4) * 2
        ys, xs = slice(max(cy - h // 2, 0), cy + h // 2), slice(max(cx - 2 * h // 3, 0), cx + 2 * h // 3)
        crops = [cv2.resize(np.ascontiguousarray(x[ys, xs]), (170, 128), interpolation=cv2.INTER_AREA)
                 for x in (gt[i], av[i], bare[i])]
        cols.append(np.vstack(crops))
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path, force=True) as tmp:
        iio.imwrite(tmp, np.hstack(cols), extension=".png")
    return path


def markdown(res: dict) -> str:
    """Lines for bench/RESULTS.md."""
    f, mo, m0 = res["face"], res["mouth"], res["mouth_without_interior"]
    return "\n".join([
        f"### Mouth self-reenactment (`headcast bench mouth`, model {res['model']}, seed {res['seed']}, "
        f"{res['size']}x{res['size']}, {res['machine']}, {res['time']})", "",
        "| region | frames | PSNR dB | SSIM |", "|---|---|---|---|",
        f"| face box | {res['frames_with_face']} | {f['psnr']:.2f} | {f['ssim']:.3f} |",
        f"| mouth box, mouth open, with interior | {res['mouth_open_frames']} | {mo['psnr']:.2f} | {mo['ssim']:.3f} |",
        f"| mouth box, mouth open, without interior | {res['mouth_open_frames']} | {m0['psnr']:.2f} | "
        f"{m0['ssim']:.3f} |", "",
        f"Identity reconstructed from the neutral RGB-D frame: median face-vertex error {res['identity_error_mm']:.2f} mm. "
        f"Largest scripted inner-lip gap {res['mouth_gap_max_mm']:.1f} mm. Preview per frame (shared machine): "
        f"{res['preview_ms']['with']:.1f} ms with the interior, {res['preview_ms']['without']:.1f} ms without. "
        f"Target: mouth-box SSIM >= {res['target_mouth_ssim']}. Command: `headcast bench mouth --figures bench/figures`.",
    ])
