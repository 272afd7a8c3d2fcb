"""The Live Link Face CSV take: Epic's iPhone app records ARKit face curves in this layout.

One header line of 63 columns, then one line per frame:

- ``Timecode``: ``HH:MM:SS:FF.mmm``, FF the frame within the second at the take's frame rate and
  ``.mmm`` the sub-frame in thousandths of a frame;
- ``BlendShapeCount``: 61 (the 52 shapes and 9 angles that follow);
- the 52 ARKit blendshapes (:data:`ARKIT_NAMES`, the app's order and PascalCase), each in [0, 1];
- :data:`ROTATION_NAMES`: head yaw, pitch, roll and each eye's yaw, pitch, roll, radians.

:func:`read_livelink` checks everything (columns, timecodes increasing, values numeric and in range)
and names the line of the first problem; columns are matched by name (case-insensitive), so their
order may differ. The CSV has no frame rate: the timecode's FF counts frames at it, so a take of a
second or more gives it as the next standard rate above the largest FF (the caller may say it instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes

ARKIT_NAMES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
ROTATION_NAMES = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                  "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
HEADER = ("Timecode", "BlendShapeCount", *ARKIT_NAMES, *ROTATION_NAMES)
BLENDSHAPE_COUNT = len(ARKIT_NAMES) + len(ROTATION_NAMES)  # 61
STANDARD_RATES = (24, 25, 30, 48, 50, 60, 120)
DEFAULT_FPS = 60.0  # the app's default, for takes shorter than a second
MAX_CSV_BYTES = 256 << 20  # an hour at 60 fps is about 130 MB
SLACK = 1e-4  # values this far outside [0, 1] are rounding, clipped; further is an error


@dataclass
class Take:
    """N frames: times (N,) seconds from the first, curves (N, 52) in [0, 1] (:data:`ARKIT_NAMES`),
    rotations (N, 9) radians (:data:`ROTATION_NAMES`), fps, and the first frame's timecode (seconds)."""

    times: np.ndarray
    curves: np.ndarray
    rotations: np.ndarray
    fps: float
    start: float = 0.0


def timecode(seconds: float, fps: float) -> str:
    """``HH:MM:SS:FF.mmm`` of a time in seconds at ``fps``."""
    whole = math.floor(seconds + 1e-9)
    frame = max(0.0, (seconds - whole) * fps)
    ff = math.floor(frame + 1e-6)
    sub = min(999, max(0, round((frame - ff) * 1000)))
    h, rest = divmod(int(whole), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{sub:03d}"


def livelink_text(take: Take) -> str:
    """The CSV text of ``take`` (header and one line per frame, ``\\n`` line ends)."""
    lines = [",".join(HEADER)]
    values = np.concatenate([np.clip(take.curves, 0, 1), take.rotations], axis=1)
    for t, row in zip(take.times, values):
        lines.append(f"{timecode(take.start + t, take.fps)},{BLENDSHAPE_COUNT}," + ",".join(f"{x:.6f}" for x in row))
    return "\n".join(lines) + "\n"


def _parse_timecode(text: str, where: str) -> tuple[int, float]:
    """(whole seconds, frame number with its fraction) of ``HH:MM:SS:FF[.mmm]``."""
    parts = text.strip().split(":")
    try:
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            raise ValueError
        h, m, s = (int(p) for p in parts[:3])
        ff = float(parts[3])
        if m > 59 or s > 59 or not (0 <= ff < 1000) or not parts[3].replace(".", "", 1).isdigit():
            raise ValueError
    except ValueError:
        raise HeadcastError(f"{where}: timecode {text.strip()[:40]!r} is not HH:MM:SS:FF.mmm") from None
    return h * 3600 + m * 60 + s, ff


def _columns(header: list[str], path: Path) -> np.ndarray:
    """Column index of each of :data:`HEADER`'s names in the file's header line."""
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [n for n in HEADER if n.lower() not in index and n != "BlendShapeCount"]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise HeadcastError(f"{path}:1: not a Live Link Face CSV: it lacks the columns {', '.join(missing[:3])}{more}")
    return np.array([index[n.lower()] for n in HEADER if n != "BlendShapeCount"])


def read_livelink(path: str | Path, fps: float | None = None) -> Take:
    """Read a Live Link Face CSV (see the module docstring); ``fps`` overrides the rate the timecodes imply.
    HeadcastError ``file:line: ...`` on the first problem."""
    path = Path(path)
    try:
        text = read_bytes(path, "Live Link Face CSV", MAX_CSV_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HeadcastError(f"{path} is not a text file (not UTF-8)") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise HeadcastError(f"{path}:1: empty file; expected the Live Link Face header line")
    header = lines[0].split(",")
    cols = _columns(header, path)
    stamps, rows = [], []
    for k, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != len(header):
            raise HeadcastError(f"{path}:{k}: {len(cells)} values; the header has {len(header)} columns")
        stamps.append(_parse_timecode(cells[cols[0]], f"{path}:{k}"))
        rows.append(_values([cells[i] for i in cols[1:]], f"{path}:{k}"))
    if not rows:
        raise HeadcastError(f"{path}: no frames after the header line")
    rate = float(fps) if fps is not None else _implied_fps(stamps)
    sec = np.array([s + f / rate for s, f in stamps])
    for k in range(1, len(sec)):
        if not sec[k] > sec[k - 1]:
            raise HeadcastError(f"{path}:{k + 2}: timecode {timecode(sec[k], rate)} is not after the line "
                                f"before it ({timecode(sec[k - 1], rate)})")
    values = np.array(rows)
    return Take(sec - sec[0], np.clip(values[:, :len(ARKIT_NAMES)], 0, 1), values[:, len(ARKIT_NAMES):], rate,
                float(sec[0]))


def _values(cells: list[str], where: str) -> list[float]:
    out = []
    for name, cell in zip(HEADER[2:], cells):
        try:
            x = float(cell)
        except ValueError:
            raise HeadcastError(f"{where}: {name} {cell.strip()[:20]!r} is not a number") from None
        shape = name in ARKIT_NAMES
        lo, hi = (-SLACK, 1 + SLACK) if shape else (-math.pi, math.pi)
        if not lo <= x <= hi:  # also refuses nan and inf
            span = "[0, 1]" if shape else "[-pi, pi] radians"
            raise HeadcastError(f"{where}: {name} {cell.strip()[:20]} is outside {span}")
        out.append(x)
    return out


def _implied_fps(stamps: list[tuple[int, float]]) -> float:
    """The frame rate the FF field counts at: the next standard rate above its largest value when the take
    spans a whole second, else the app's default."""
    if stamps[-1][0] - stamps[0][0] < 1:
        return DEFAULT_FPS
    top = max(f for _, f in stamps)
    return float(next((r for r in STANDARD_RATES if r > top), math.floor(top) + 1))
