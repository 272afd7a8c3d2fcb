"""Checks shared by the folder readers: every failure is one HeadcastError line naming the file.

:func:`load_npz` is the one place the folder formats open an ``.npz`` (never with pickles).
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20   # the folders' JSON files are a few kilobytes
MAX_IMAGE_SIDE = 16384     # pixels; checked in the PNG header before anything is decoded
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path`` (pickled objects refused)."""
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise HeadcastError(f"{path} is a single array, not an .npz archive of named arrays")
        with z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise HeadcastError(f"{path} is not a readable .npz file ({e.__class__.__name__})") from None


def need(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """``arrays[key]``, or an error naming the file that lacks it."""
    if key not in arrays:
        raise HeadcastError(f"{path} has no '{key}' array")
    return arrays[key]


def floats(a, name: str, path: Path, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """``a`` as a finite float64 array of ``shape`` (None entries: any size)."""
    try:
        x = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise HeadcastError(f"{path}: {name} is not numeric") from None
    if shape is not None and (x.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, x.shape))):
        want = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
        raise HeadcastError(f"{path}: {name} must have shape {want}, not {x.shape}")
    if not np.all(np.isfinite(x)):
        raise HeadcastError(f"{path}: {name} has non-finite values (NaN or inf)")
    return x


def text(a, name: str, path: Path) -> str:
    """A 0-d string array (how the folders store names) as str."""
    x = np.asarray(a)
    if x.ndim != 0 or x.dtype.kind not in "US":
        raise HeadcastError(f"{path}: {name} must be a string")
    return str(x)


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit`` of them)."""
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist or is not a regular file")
    try:
        size = path.stat().st_size
        if limit is not None and size > limit:
            raise HeadcastError(f"{path} is {size} bytes; expected at most {limit}")
        return path.read_bytes()
    except OSError as e:
        raise HeadcastError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None


def read_json(path: Path):
    """The JSON value in ``path`` (at most MAX_JSON_BYTES)."""
    data = read_bytes(path, MAX_JSON_BYTES)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise HeadcastError(f"{path} is not valid JSON ({e.__class__.__name__})") from None


def png_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; an error when ``data`` is not a PNG or is absurdly large."""
    if data[:8] != PNG_SIGNATURE or len(data) < 24 or data[12:16] != b"IHDR":
        raise HeadcastError(f"{path} is not a PNG image")
    w, h = struct.unpack(">II", data[16:24])
    if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
        raise HeadcastError(f"{path} is {w}x{h} pixels; at most {MAX_IMAGE_SIDE} on a side")
    return w, h


def decode_png(data: bytes, path: Path) -> np.ndarray:
    """The pixels of PNG ``data`` (size checked first), as stored: (H, W) or (H, W, C), uint8 or uint16."""
    import io

    import imageio.v3 as iio

    png_size(data, path)
    try:
        return np.asarray(iio.imread(io.BytesIO(data), extension=".png"))
    except Exception as e:  # the decoders raise many types; any of them means a damaged file
        raise HeadcastError(f"{path} is not a readable PNG image ({e.__class__.__name__})") from None


def rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded image as (H, W, 3) uint8 RGB: gray repeated, alpha dropped, 16 bits scaled."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255).round().astype(np.uint8)
    return img
