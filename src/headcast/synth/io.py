"""Synthetic samples on disk, in the layout of ``../shared/samples/rgbd/`` plus ground truth.

Files of one sample ``<prefix>`` (all lengths in metres unless the name says mm):

- ``<prefix>_color.png``: (H, W) 8-bit RGB.
- ``<prefix>_depth_mm.png``: uint16 depth in millimetres (rounded), 0 = no depth; pixel-aligned
  with the colour image. For profile ``none`` this is the exact depth rounded to 1 mm; the exact
  float depth is ``depth`` in the ``_gt.npz``.
- ``<prefix>_intrinsics.json``: ``fx, fy, cx, cy, width, height`` (pixels; read it with
  :meth:`headcast.core.camera.Intrinsics.from_json`) and a few descriptive keys.
- ``<prefix>_gt.npz``: the ground truth (see :data:`GT_KEYS`).
- ``<prefix>_gt.json``: the same parameters, readable (no per-vertex or per-pixel arrays).
- ``<prefix>_gt_mesh.obj`` (with the model's UVs) and ``<prefix>_gt_mesh.ply`` (binary, with
  per-vertex albedo as 8-bit colour): the posed head in the camera frame.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.files import MAX_JSON_BYTES, read_bytes, read_json
from headcast.core.params import N_POSE
from headcast.core.sh import SH_CONST
from headcast.io.arrays import read_npy, read_npz
from headcast.io.mesh import write_obj, write_ply
from headcast.io.outputs import staged_dir, staged_files
from headcast.io.validate import read_depth, read_image
from headcast.model.head_model import HeadModel
from headcast.render.images import save_png
from headcast.synth.render import SynthFrame, render_rgbd
from headcast.synth.subject import SynthSubject, expression_names, random_subject

logger = logging.getLogger(__name__)

DEFAULT_HFOV_DEG = 56.0  # the TrueDepth sample frames' horizontal field of view (56.4 degrees)

GT_KEYS = {
    "model": "str: the head model's name",
    "n_vertices": "int: its vertex count (a check that the arrays below fit the model)",
    "beta": "(S,) identity coefficients",
    "psi": "(E,) expression coefficients",
    "expression_names": "(E,) str names of the expression components ('' when the model has none)",
    "theta": f"({N_POSE},) axis-angle pose [root | neck | jaw | left eye | right eye], radians",
    "s": "scale of X_cam = s * FLIP @ X_model + t",
    "t": "(3,) translation of that map, metres",
    "albedo": "(V, 3) float32 per-vertex RGB reflectance 0..1",
    "sh_lighting": "(9, 3) SH light; colour = albedo * sum_k sh[k] * SH_CONST[k] * b_k(n_view)",
    "sh_const": "(9,) the SH constants (headcast.core.sh.SH_CONST)",
    "vertices": "(V, 3) float64 posed head, camera frame, metres",
    "faces": "(F, 3) int32 triangles",
    "landmarks_3d": "(68, 3) iBUG-68 landmarks, camera frame, metres",
    "landmarks_2d": "(68, 2) their pixel coordinates",
    "depth": "(H, W) float32 the frame's depth in metres as rendered (unrounded for profile none)",
    "depth_clean": "(H, W) float32 exact depth of the surface at every pixel centre, 0 = nothing",
    "face_mask": "(H, W) bool pixels showing a face triangle (mask 'face')",
    "labels": "(H, W) int8 0 head, 1 torso, 2 wall, -1 nothing",
    "triangle_ids": "(H, W) int32 head triangle at each pixel centre, -1 elsewhere",
    "subject_seed": "int: seed of random_subject",
    "noise_seed": "int: seed of the sensor noise",
    "profile": "str: depth sensor profile",
}


def default_intrinsics(width: int = 640, height: int = 480, hfov_deg: float | None = None,
                       focal: float | None = None) -> Intrinsics:
    """Square pixels, principal point at the image centre; focal from ``focal`` (px) or the
    horizontal field of view (default 56 degrees, as the TrueDepth sample frames)."""
    if focal is None:
        hfov = DEFAULT_HFOV_DEG if hfov_deg is None else float(hfov_deg)
        if not 5 <= hfov <= 170:
            raise HeadcastError(f"field of view {hfov} degrees is outside 5..170")
        focal = 0.5 * width / np.tan(np.deg2rad(hfov) / 2)
    return Intrinsics(float(focal), float(focal), (width - 1) / 2, (height - 1) / 2, int(width), int(height)).check()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _json_lines(d: dict) -> str:
    """JSON with one top-level key per line and compact values."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
    return "{\n" + body + "\n}\n"


def write_sample(frame: SynthFrame, subject: SynthSubject, model: HeadModel, out_dir: str | Path,
                 prefix: str = "frame-000", force: bool = False) -> dict[str, Path]:
    """Write one sample (see the module docstring) into ``out_dir``; returns the paths by kind.

    The files appear together or not at all (:func:`headcast.io.outputs.staged_files`); existing files of
    the same prefix are refused, or replaced with ``force``.
    """
    out = Path(out_dir)
    names = expression_names(model) or [""] * model.n_expr
    K = frame.K
    files = {k: f"{prefix}_{k}" for k in ("color.png", "depth_mm.png", "intrinsics.json", "gt.npz", "gt.json",
                                          "gt_mesh.obj", "gt_mesh.ply")}
    mm = np.round(frame.depth.astype(np.float64) * 1000.0)
    if mm.max(initial=0) > 65535:
        raise HeadcastError(f"depth up to {mm.max() / 1000:.1f} m does not fit a uint16 millimetre PNG")
    with staged_files([out / name for name in files.values()], force=force) as tmps:
        tmp = dict(zip(files, tmps))
        save_png(tmp["color.png"], frame.color)
        save_png(tmp["depth_mm.png"], mm.astype(np.uint16))
        intr = dict(fx=K.fx, fy=K.fy, cx=K.cx, cy=K.cy, width=K.width, height=K.height,
                    depth_unit="millimetre (uint16 PNG, 0 = no depth)",
                    source=f"headcast synth: model {model.name}, profile {frame.profile}")
        tmp["intrinsics.json"].write_text(json.dumps(intr, indent=1) + "\n")
        np.savez_compressed(
            tmp["gt.npz"], model=np.str_(model.name), n_vertices=np.int64(model.n_vertices),
            beta=subject.beta, psi=subject.psi, expression_names=np.array(names, dtype=np.str_),
            theta=subject.theta, s=np.float64(subject.s), t=np.asarray(subject.t, np.float64),
            albedo=subject.albedo, sh_lighting=subject.lighting, sh_const=SH_CONST, vertices=frame.vertices,
            faces=model.faces, landmarks_3d=frame.landmarks, landmarks_2d=frame.landmarks_2d,
            depth=frame.depth, depth_clean=frame.depth_clean, face_mask=frame.face_mask, labels=frame.labels,
            triangle_ids=frame.triangle_ids, subject_seed=np.int64(subject.seed),
            noise_seed=np.int64(frame.seed), profile=np.str_(frame.profile))
        gt = dict(model=model.name, profile=frame.profile, subject_seed=subject.seed, noise_seed=frame.seed,
                  units="metres, radians; camera frame OpenCV (x right, y down, z forward)",
                  model_to_camera="X_cam = s * FLIP @ X_model + t, FLIP = diag(1, -1, -1)",
                  beta=subject.beta, psi=subject.psi,
                  expressions={n or str(i): subject.psi[i] for i, n in enumerate(names) if subject.psi[i] != 0},
                  theta=subject.theta, s=subject.s, t=subject.t, sh_lighting=subject.lighting,
                  sh_basis="shading(n) = sum_k sh[k] * SH_CONST[k] * b_k(n), b = [1, x, y, z, xy, xz, yz, "
                           "x^2 - y^2, 3 z^2 - 1], n in the view frame (x right, y up, z to the camera)",
                  info=subject.info, files=files)
        tmp["gt.json"].write_text(_json_lines(_jsonable(gt)))
        write_obj(tmp["gt_mesh.obj"], frame.vertices, model.faces, model.uv, model.uv_faces)
        write_ply(tmp["gt_mesh.ply"], frame.vertices, model.faces,
                  np.round(np.clip(subject.albedo, 0, 1) * 255).astype(np.uint8))
    return {kind: out / name for kind, name in files.items()}


def read_sample(folder: str | Path, prefix: str = "frame-000") -> dict:
    """Read a sample back: ``color`` (H, W, 3) uint8, ``depth`` (H, W) float32 metres from the
    millimetre PNG, ``K`` (Intrinsics) and ``gt`` (dict of the ``_gt.npz`` arrays, when present)."""
    folder = Path(folder)
    color_path = folder / f"{prefix}_color.png"
    if not color_path.is_file():
        raise HeadcastError(f"no {color_path.name} in {folder}")
    out = {"color": read_image(color_path),
           "depth": read_depth(folder / f"{prefix}_depth_mm.png", 0.001)[0],
           "K": Intrinsics.from_json(folder / f"{prefix}_intrinsics.json")}
    gt = folder / f"{prefix}_gt.npz"
    if gt.is_file():
        out["gt"] = read_npz(gt, "ground truth")
    return out


def synth(model: HeadModel, out_dir: str | Path, n: int = 1, seed: int = 0, profile: str = "truedepth",
          width: int = 640, height: int = 480, hfov_deg: float | None = None, focal: float | None = None,
          background: bool = True, aa: int = 2, force: bool = False, **subject_kwargs) -> list[Path]:
    """Render ``n`` random subjects into ``out_dir`` as ``frame-000`` ... ``frame-<n-1>``.

    Frame i uses ``random_subject(model, seed + i, **subject_kwargs)`` and sensor-noise seed
    ``seed + i``, so ``seed=5, n=1`` reproduces frame 5 of a ``seed=0`` run. ``out_dir`` is a folder
    output of kind ``synth`` (:func:`headcast.io.outputs.staged_dir`: built whole, then moved into place;
    ``force`` replaces an earlier synth output there). Returns the colour PNG paths.
    """
    if n < 1:
        raise HeadcastError(f"--n must be at least 1, not {n}")
    K = default_intrinsics(width, height, hfov_deg, focal)
    out = Path(out_dir)
    prefixes = [f"frame-{i:03d}" for i in range(n)]
    with staged_dir(out, "synth", force=force) as staging:
        for i, prefix in enumerate(prefixes):
            t0 = time.perf_counter()
            subject = random_subject(model, seed + i, **subject_kwargs)
            frame = render_rgbd(model, subject, K, profile=profile, background=background, seed=seed + i, aa=aa)
            write_sample(frame, subject, model, staging, prefix)
            logger.info(f"synth: {prefix} (seed {seed + i}, yaw {subject.info['yaw_deg']:+.0f} deg, "
                        f"{subject.info['distance_m']:.2f} m) in {time.perf_counter() - t0:.1f} s")
    return [out / f"{p}_color.png" for p in prefixes]


def load_beta(path: str | Path) -> np.ndarray:
    """Identity coefficients from a file: ``.npy`` (a vector), ``.npz`` or ``.json`` with a ``beta``
    entry (a ``_gt.npz`` / ``params.npz`` reuses an identity), or whitespace-separated text."""
    path, what = Path(path), "beta file"
    if path.suffix == ".npy":
        beta = read_npy(path, what)
    elif path.suffix == ".npz":
        z = read_npz(path, what)
        if "beta" not in z:
            raise HeadcastError(f"{path} has no 'beta' array (it has {', '.join(z)})")
        beta = z["beta"]
    elif path.suffix == ".json":
        d = read_json(path, what)
        beta = d.get("beta") if isinstance(d, dict) else d
    else:
        beta = read_bytes(path, what, MAX_JSON_BYTES).decode("utf-8", "replace").split()
    try:
        beta = np.asarray(beta, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as e:
        raise HeadcastError(f"beta file {path} is not a list of numbers ({e.__class__.__name__})") from None
    if beta.ndim == 2 and beta.shape[0] == 1:
        beta = beta[0]
    if beta.ndim != 1 or not np.isfinite(beta).all():
        raise HeadcastError(f"beta file {path} must hold one vector of finite numbers, not shape {beta.shape}")
    return beta


def parse_expressions(items: list[str]) -> dict[str, float]:
    """``["jawOpen=0.4", "3=0.2"]`` -> ``{"jawOpen": 0.4, "3": 0.2}`` (names or component indices)."""
    out = {}
    for item in items:
        name, sep, w = item.partition("=")
        try:
            out[name.strip()] = float(w)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise HeadcastError(f"--expression wants NAME=WEIGHT (e.g. jawOpen=0.4), not {item!r}")
    return out
