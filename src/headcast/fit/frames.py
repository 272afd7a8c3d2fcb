"""The frames of a sweep: finding and reading them, one upright turn for all, sharpness and duplicates,
and choosing the frames the fit uses, spread over the view angles."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.preprocess.rgbd import COLOR_SUFFIXES, RGBDFrame, load_rgbd, parse_rotation

logger = logging.getLogger(__name__)

BLUR_RATIO = 0.35        # a frame this much less sharp than the sweep's median is blurred
DUPLICATE_GREY = 0.5     # mean absolute grey difference (0..255) under which a frame repeats its predecessor


def sweep_inputs(inputs: list[str | Path]) -> list[Path]:
    """Frame prefixes or color files: a single folder gives every ``*_color.*`` prefix in it, sorted."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        d = Path(inputs[0])
        found = sorted({p.with_name(p.name[: -len(s)]) for s in COLOR_SUFFIXES for p in d.glob(f"*{s}")})
        if not found:
            raise HeadcastError(f"no frames (*_color.png) in folder {d}")
        return found
    return [Path(p) for p in inputs]


def upright_turn(inputs: list[Path], rotate: str | int, method: str) -> int:
    """The clockwise turn for every frame: ``rotate`` when given, else the one showing an upright face
    in the first frames (from the middle of the sweep outwards) where a face is found."""
    from headcast.preprocess.rotate import find_upright_rotation

    degrees = parse_rotation(rotate)
    if degrees is not None:
        return degrees
    mid = len(inputs) // 2
    order = sorted(range(len(inputs)), key=lambda i: abs(i - mid))
    for i in order[:12]:
        frame = load_rgbd(inputs[i], rotate=0, method=method)
        try:
            return find_upright_rotation(frame.color, method, name=frame.name)[0]
        except HeadcastError:
            continue
    raise HeadcastError(f"no face found in any of the {min(12, len(inputs))} middle frames of the sweep "
                        f"(from {inputs[0]}); pass --rotate to skip the search")


def load_frames(inputs: list[Path], rotate: str | int = "auto", method: str = "mediapipe") -> list[RGBDFrame]:
    """Every frame read and turned upright by one turn; HeadcastError naming the frame when one is
    unreadable or its size or intrinsics differ from the first's."""
    turn = upright_turn(inputs, rotate, method)
    frames = [load_rgbd(p, rotate=turn, method=method) for p in inputs]
    first = frames[0]
    for f in frames[1:]:
        if f.shape != first.shape:
            raise HeadcastError(f"{f.name} is {f.shape[1]}x{f.shape[0]} but {first.name} is "
                                f"{first.shape[1]}x{first.shape[0]}: a sweep's frames must share one size")
        if not np.allclose([f.K.fx, f.K.fy, f.K.cx, f.K.cy], [first.K.fx, first.K.fy, first.K.cx, first.K.cy],
                           rtol=0.01, atol=0.5):
            raise HeadcastError(f"{f.name} has other intrinsics than {first.name}: a sweep needs one camera")
    return frames


def _grey(frame: RGBDFrame) -> np.ndarray:
    return frame.color.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def sharpness(frame: RGBDFrame) -> float:
    """Variance of the image Laplacian (grey levels^2): low for blurred frames."""
    g = _grey(frame)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def skipped_frames(frames: list[RGBDFrame]) -> dict[int, str]:
    """Frames to skip, with the one-line reason: blurred (sharpness under BLUR_RATIO x the median) or a
    duplicate of the previous kept frame."""
    sharp = np.array([sharpness(f) for f in frames])
    med = float(np.median(sharp))
    out, last = {}, None
    for i, f in enumerate(frames):
        if sharp[i] < BLUR_RATIO * med:
            out[i] = f"blurred (sharpness {sharp[i]:.0f}, sweep median {med:.0f})"
            continue
        g = _grey(f)
        if last is not None and np.abs(g - last).mean() < DUPLICATE_GREY:
            out[i] = "duplicate of the previous frame"
            continue
        last = g
    return out


def spread_frames(candidates: list[int], angles: np.ndarray, n: int, keep: int) -> list[int]:
    """At most ``n`` of the candidate frames, evenly spread over their view angles (radians, one per
    candidate), always with frame ``keep`` (one of the candidates); sorted."""
    if len(candidates) <= n:
        return sorted(candidates)
    a = dict(zip(candidates, np.asarray(angles, dtype=np.float64)))
    pick = {min(candidates, key=lambda c: abs(a[c] - t)) for t in np.linspace(min(a.values()), max(a.values()), n)}
    if keep not in pick:
        pick.remove(min(pick, key=lambda c: abs(a[c] - a[keep])))
        pick.add(keep)
    rest = [c for c in candidates if c not in pick]
    while len(pick) < n and rest:  # two targets chose one frame: add the frame farthest from the picked ones
        far = max(rest, key=lambda c: min(abs(a[c] - a[p]) for p in pick))
        pick.add(far)
        rest.remove(far)
    return sorted(pick)
