"""The animation folder: per-frame head parameters, written by ``headcast animate`` (and ``decode``) and
read by ``headcast export`` and ``headcast encode`` (docs/formats.md lists every file).

One placement per frame, one precedence when a folder holds several (a user's own folder may):
``scale`` + ``translation`` (the metric similarity), then ``placement`` ((N, 4) the same packed, or (N, 3)
an eta), then ``eta`` (the paper's weak-perspective projection); none at all is a head that stays where
the reconstruction put it. The similarity wins because it is exact and eta is derived from it (as in the
reconstruction's params.npz, where eta is written beside scale and translation for the paper's readers).

headcast reads only params.npz (bounded, :func:`headcast.io.arrays.read_npz`); frames.jsonl and
report.json are written for people and other tools and never read back, so they cannot be an input bomb.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE
from headcast.io.arrays import need, read_npz, text
from headcast.io.outputs import check_kind
from headcast.io.validate import finite_array

logger = logging.getLogger(__name__)

PARAMS = "params.npz"        # per-frame arrays, beta, model, fps
FRAMES = "frames.jsonl"      # one JSON object per frame
REPORT = "report.json"       # the run's summary
VIDEO = "animation.mp4"      # `headcast animate`'s preview video
PREVIEW = "preview.png"      # four frames of it

ETA = "eta"                  # (N, 3) (s px/m, tx px, ty px): the paper's orthographic eta
SIMILARITY = "similarity"    # (N, 4) (s, tx, ty, tz m): X_cam = s * FLIP @ X_model + t
MAX_PARAMS_BYTES = 256 << 20  # params.npz: an hour at 30 fps with 100 expressions is ~100 MB
_CORE = ("frame", "time", "times", "theta", "psi", "eta", "placement", "scale", "translation", "face_found",
         "beta", "model", "fps")


@dataclass
class Animation:
    """N frames of parameters: times (N,) seconds (increasing), theta (N, N_POSE) axis-angle radians,
    psi (N, E), placement (N, 3) eta or (N, 4) similarity, face_found (N,) bool, fps (frames per second);
    the subject's beta (S,) and model name when known; ``extras``: any other arrays of params.npz
    (``headcast animate``: loss, iterations, landmarks, threshold, ...); ``source``: the file read."""

    times: np.ndarray
    theta: np.ndarray
    psi: np.ndarray
    placement: np.ndarray
    face_found: np.ndarray
    fps: float
    beta: np.ndarray | None = None
    model: str | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    source: Path | None = None

    @property
    def n_frames(self) -> int:
        return len(self.times)

    @property
    def placement_kind(self) -> str:
        """:data:`ETA` or :data:`SIMILARITY`."""
        return ETA if self.placement.shape[1] == 3 else SIMILARITY

    def check_expressions(self, n_expr: int) -> None:
        """psi must have the model's ``n_expr`` columns."""
        if self.psi.shape[1] != n_expr:
            raise HeadcastError(f"{self.source or 'the animation'}: psi has {self.psi.shape[1]} expression values "
                                f"per frame; the model has {n_expr}")


# ---------------------------------------------------------------- writing
def write_animation(folder: str | Path, anim: Animation, frame_fields: tuple[str, ...] = (),
                    report: dict | None = None) -> None:
    """params.npz and frames.jsonl (with the per-frame ``extras`` named in ``frame_fields``), and
    report.json when ``report`` is given."""
    d = Path(folder)
    n = anim.n_frames
    if n == 0:
        raise HeadcastError(f"no frames to write into {d}")
    pl = _placement_arrays(anim.placement)
    arrays = dict(frame=np.arange(n), time=anim.times, theta=anim.theta, psi=anim.psi, **pl,
                  face_found=np.asarray(anim.face_found, bool), fps=np.float64(anim.fps))
    if anim.beta is not None:
        arrays["beta"] = anim.beta
    if anim.model is not None:
        arrays["model"] = np.str_(anim.model)
    np.savez(d / PARAMS, **arrays, **anim.extras)
    rounding = {"eta": 4, "scale": 6, "translation": 6}
    with open(d / FRAMES, "w") as f:
        for i in range(n):
            row = {"frame": i, "time": round(float(anim.times[i]), 6), "theta": np.round(anim.theta[i], 6).tolist(),
                   "psi": np.round(anim.psi[i], 6).tolist()}
            row.update({k: _json_value(v[i], rounding[k]) for k, v in pl.items()})
            row.update({k: _json_value(anim.extras[k][i], 6) for k in frame_fields})
            row["face_found"] = bool(anim.face_found[i])
            f.write(json.dumps(row) + "\n")
    if report is not None:
        (d / REPORT).write_text(json.dumps(report, indent=2) + "\n")


def _placement_arrays(pl: np.ndarray) -> dict[str, np.ndarray]:
    if pl.shape[1] == 3:
        return {"eta": pl}
    return {"scale": pl[:, 0], "translation": pl[:, 1:]}


def _json_value(x, decimals: int):
    """A frame's value for frames.jsonl: ints and bools as they are, floats rounded, non-finite as null."""
    a = np.asarray(x)
    if a.dtype.kind == "b":
        return a.tolist()
    if a.dtype.kind in "iu":
        return a.tolist()
    if a.ndim == 0:
        return round(float(a), decimals) if np.isfinite(a) else None
    return np.round(a.astype(np.float64), decimals).tolist()


# ---------------------------------------------------------------- reading
KIND = "animation"  # the kind in an animation folder's manifest (headcast.io.outputs)
KINDS = (KIND, "decoded")  # the manifest kinds of folders holding an animation (a decoded stream's too)


def read_animation(folder: str | Path, fps: float | None = None, n_expr: int | None = None) -> Animation:
    """The animation in ``folder``/params.npz, checked (shapes, at least one frame, finite values, times).

    ``fps`` is the frame rate to use when the file has none (without either: an error naming the file);
    ``n_expr`` checks psi's width. A frame whose parameters are not all finite repeats the previous good
    frame (the first good one before it) and counts as a frame without a face."""
    d = Path(folder)
    path = d / PARAMS
    check_kind(d, KINDS, "an animation folder (from 'headcast animate' or 'headcast decode')")
    if not os.path.lexists(path):
        raise HeadcastError(f"{d} has no {PARAMS} (is it an animation folder from 'headcast animate'?)")
    z = read_npz(path, "animation parameters", max_bytes=MAX_PARAMS_BYTES)
    theta = _array(need(z, "theta", path), "theta", path, 2)
    n = len(theta)
    if n == 0:
        raise HeadcastError(f"{path} has no frames")
    if theta.shape[1] != N_POSE:
        raise HeadcastError(f"{path}: theta must have shape (N, {N_POSE}), not {theta.shape}")
    psi = _array(need(z, "psi", path), "psi", path, 2)
    if len(psi) != n:
        raise HeadcastError(f"{path}: psi has {len(psi)} frames, theta {n}")
    pl = _read_placement(z, n, path)
    face = np.asarray(z.get("face_found", np.ones(n, bool)))
    if face.shape != (n,) or face.dtype.kind not in "bui":
        raise HeadcastError(f"{path}: face_found must be (N,) booleans, not {face.dtype} {face.shape}")
    theta, psi, pl, face = _hold_bad_frames(theta, psi, pl, face.astype(bool), path)
    rate = _read_fps(z, fps, path)
    times = z.get("time", z.get("times"))
    times = np.arange(n) / rate if times is None else finite_array(times, f"{path}: time", (n,), dtype=np.float64)
    if n > 1 and not np.all(np.diff(times) > 0):
        raise HeadcastError(f"{path}: time must increase from frame to frame")
    beta = finite_array(z["beta"], f"{path}: beta", (None,), dtype=np.float64) if "beta" in z else None
    model = text(z["model"], f"{path}: model") if "model" in z else None
    anim = Animation(times, theta, psi, pl, face, rate, beta, model,
                     {k: v for k, v in z.items() if k not in _CORE}, path)
    if n_expr is not None:
        anim.check_expressions(n_expr)
    logger.debug("read %s: %d frames at %g fps, %s placement", path, n, rate, anim.placement_kind)
    return anim


def _array(a, name: str, path: Path, ndim: int) -> np.ndarray:
    """A float64 array of ``ndim`` dimensions (non-finite values allowed: frames without a fit)."""
    return finite_array(a, f"{path}: {name}", (None,) * ndim, dtype=np.float64, finite=False)


def _read_placement(z: dict, n: int, path: Path) -> np.ndarray:
    """(N, 3) eta or (N, 4) similarity, by the module's precedence."""
    if "scale" in z and "translation" in z:
        s = _array(z["scale"], "scale", path, 1)
        t = _array(z["translation"], "translation", path, 2)
        if s.shape != (n,) or t.shape != (n, 3):
            raise HeadcastError(f"{path}: scale must be (N,) and translation (N, 3) for N = {n} frames, "
                                f"not {s.shape} and {t.shape}")
        return np.c_[s, t]
    for key in ("placement", "eta"):
        if key in z:
            pl = _array(z[key], key, path, 2)
            if pl.shape not in ((n, 3), (n, 4)) or (key == "eta" and pl.shape[1] != 3):
                raise HeadcastError(f"{path}: {key} must be (N, 3) eta" + (" or (N, 4) [s, t]" if key == "placement"
                                    else "") + f" for N = {n} frames, not {pl.shape}")
            return pl
    return np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))


def _hold_bad_frames(theta, psi, pl, face, path: Path):
    """Frames with a non-finite value repeat the last good one (or the first good one) and lose their face."""
    rows = np.concatenate([theta, psi, pl], axis=1)
    ok = np.all(np.isfinite(rows), axis=1) & (pl[:, 0] > 0)
    if not ok.any():
        raise HeadcastError(f"{path} has no frame with finite parameters and a positive scale")
    if not ok.all():
        idx = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), -1))
        idx[idx < 0] = int(np.argmax(ok))
        rows = rows[idx]
        face = face & ok
        logger.debug("%s: %d frames without finite parameters hold the previous one", path, int((~ok).sum()))
    e = psi.shape[1]
    return rows[:, :N_POSE], rows[:, N_POSE:N_POSE + e], rows[:, N_POSE + e:], face


def _read_fps(z: dict, fps: float | None, path: Path) -> float:
    if "fps" in z:
        rate = float(finite_array(z["fps"], f"{path}: fps", (), dtype=np.float64))
    elif fps is not None:
        rate = float(fps)
    else:
        raise HeadcastError(f"{path} has no 'fps' (the frame rate); give it explicitly")
    if not (np.isfinite(rate) and rate > 0):
        raise HeadcastError(f"{path}: fps must be a positive number of frames per second, not {rate:g}")
    return rate
