"""Checked readers for input files: images, depth maps, PLY headers; and range, shape and finiteness checks
for numbers, arrays and options. Sizes are checked from headers before anything is decoded, so a small
file can never make headcast allocate gigabytes. Every refusal is one HeadcastError line naming the file.

The validation layer is three modules: :mod:`headcast.core.files` (regular files, bounded bytes, bounded
JSON), :mod:`headcast.io.arrays` (``.npy`` and ``.npz``) and this one. Every reader of an input file uses
them. The bounds below are documented in docs/guarantees.md; change both together.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file, size_text
from headcast.io.arrays import read_npy

MAX_IMAGE_PIXELS = 8192 * 8192        # 67 Mpx: any image (color, depth, albedo), checked from its header
MAX_IMAGE_BYTES = 1 << 30             # 1 GiB: an image file
MAX_NPY_BYTES = MAX_IMAGE_PIXELS * 8  # 512 MiB: the data of a depth .npy (float64 of the largest image)
MAX_PLY_BYTES = 1 << 30               # 1 GiB: a PLY point cloud
MAX_PLY_POINTS = 1 << 24              # 16.8 M points in a PLY point cloud
MAX_STREAM_BYTES = 256 << 20          # 256 MiB: a stream file (an hour at 30 fps is ~20 MB)
MAX_HULL_MARGIN_M = 0.1               # --hull-margin: metres beyond the landmark hull
MAX_TEXTURE_SIZE = 2048               # texture --size: texels a side (1.5 GB peak; 4096 takes 4.4 GB)
MAX_SWEEP_FRAMES = 1000               # a sweep's --max-frames: the frames its fit uses
DEPTH_SUFFIXES_READ = (".png", ".tif", ".tiff", ".npy", ".exr")
_CLEAN_ROWS = 512                     # depth rows converted at a time (bounds the float64 temporaries)


def why(e: Exception) -> str:
    """An exception as one short line (library messages can span many)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


# --- numbers and arrays ------------------------------------------------------------------------
def check_number(value, what: str, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
                 unit: str = ""):
    """``value`` if it is a finite number (an int when ``integer``) within ``lo..hi`` (either may be None);
    else HeadcastError: ``--hull-margin must be a number from 0 to 0.1 metres, not nan``."""
    kind = "a whole number" if integer else "a number"
    span = (f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else
            f" of at least {lo:g}" if lo is not None else f" of at most {hi:g}" if hi is not None else "")
    expected = f"{what} must be {kind}{span}{' ' + unit if unit and span else ''}, not {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise HeadcastError(expected)
    if integer and not isinstance(value, (int, np.integer)):
        raise HeadcastError(expected)
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise HeadcastError(expected)
    return value


# The number options of reconstruct, animate and texture, by their argument names: (flag, lo, hi, whole number,
# unit). The single commands and ``headcast batch`` check them here, so both refuse a value alike.
OPTION_RANGES = {
    "seed": ("--seed", 0, None, True, ""),
    "w_beta": ("--w-beta", 0, None, False, ""),
    "w_psi": ("--w-psi", 0, None, False, ""),
    "grow_mm": ("--grow-mm", 0, None, False, "mm"),
    "hull_margin": ("--hull-margin", 0, MAX_HULL_MARGIN_M, False, "metres"),
    "texture_size": ("--texture-size", 16, MAX_TEXTURE_SIZE, True, "texels"),
    "size": ("--size", 16, MAX_TEXTURE_SIZE, True, "texels"),
    "max_frames": ("--max-frames", 1, None, True, ""),
    "max_iters": ("--max-iters", 1, None, True, ""),
    "threshold": ("--threshold", 0, 10, False, ""),
}


def check_options(options: dict) -> None:
    """Refuse, as :func:`check_number` does, any value in ``options`` (argument name -> value; None: not
    given) outside its :data:`OPTION_RANGES` range; names the table does not hold are left alone. With
    ``sweep`` set, ``max_frames`` is a sweep's (at most :data:`MAX_SWEEP_FRAMES`)."""
    for key, value in options.items():
        if value is not None and key in OPTION_RANGES:
            flag, lo, hi, integer, unit = OPTION_RANGES[key]
            hi = MAX_SWEEP_FRAMES if key == "max_frames" and options.get("sweep") else hi
            check_number(value, flag, lo, hi, integer=integer, unit=unit)


def finite_array(a, what: str, shape: tuple | None = None, kinds: str = "biuf", *, dtype=None,
                 finite: bool = True) -> np.ndarray:
    """``a`` as an array whose dtype kind is in ``kinds``, of ``shape`` when given (None matches any
    length), every value finite unless ``finite`` is False, then converted to ``dtype`` when given:
    ``finite_array(v, "mesh.ply vertices", (None, 3))``. ``what`` names the array and its file."""
    try:
        a = np.asarray(a)
    except Exception as e:
        raise HeadcastError(f"{what} is not an array of numbers ({why(e)})") from None
    if a.dtype.kind not in kinds:
        raise HeadcastError(f"{what} holds {a.dtype} values, not numbers")
    if shape and all(s is None for s in shape) and a.ndim != len(shape):
        raise HeadcastError(f"{what} has {a.ndim} dimensions {a.shape}; expected {len(shape)}")
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape))):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise HeadcastError(f"{what} has shape {a.shape}, expected {want}")
    if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise HeadcastError(f"{what} has non-finite values (NaN or infinity)")
    if dtype is not None:
        try:
            a = a.astype(dtype, copy=False)
        except (TypeError, ValueError, OverflowError) as e:
            raise HeadcastError(f"{what} does not fit {np.dtype(dtype)} ({why(e)})") from None
    return a


# --- images ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageHeader:
    """What an image file says about itself before decoding: ``format`` (PIL's: PNG, JPEG, TIFF...),
    ``width`` x ``height`` pixels and PIL ``mode``."""

    format: str
    width: int
    height: int
    mode: str


def image_header(path: str | Path, what: str = "image", *, data: bytes | None = None,
                 formats: tuple[str, ...] | None = None) -> ImageHeader:
    """Format and size of an image from its header only (nothing is decoded): of the file at ``path``, or of
    ``data`` (the file's bytes, already read; ``path`` then only names it). Refuses a file that is not a
    regular file, is over MAX_IMAGE_BYTES, has more than MAX_IMAGE_PIXELS pixels, or (``formats``, PIL's
    names such as ``("PNG",)``) is in another format."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if data is None:
        check_input_file(p, what, MAX_IMAGE_BYTES)
    elif len(data) > MAX_IMAGE_BYTES:
        raise HeadcastError(f"{what} {p} is {size_text(len(data))}, more than the {size_text(MAX_IMAGE_BYTES)} "
                            "headcast reads")
    kinds = " or ".join(formats) if formats else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p if data is None else io.BytesIO(data), formats=formats) as im:  # reads the header
                h = ImageHeader(im.format or "?", int(im.size[0]), int(im.size[1]), im.mode)
    except Image.DecompressionBombError:
        raise HeadcastError(f"{what} {p} has far more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx headcast reads") from None
    except UnidentifiedImageError:
        raise HeadcastError(f"{what} {p} is not a {kinds} image" if formats else
                            f"cannot read {what} {p} (not an image format headcast reads)") from None
    except Exception as e:
        raise HeadcastError(f"cannot read {what} {p} ({why(e)})") from None
    if h.width <= 0 or h.height <= 0:
        raise HeadcastError(f"{what} {p} is empty ({h.width}x{h.height} pixels)")
    if h.width * h.height > MAX_IMAGE_PIXELS:
        raise HeadcastError(f"{what} {p} is {h.width}x{h.height} pixels, more than the "
                            f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx headcast reads")
    return h


def read_image(path: str | Path, what: str = "color image", *, data: bytes | None = None,
               formats: tuple[str, ...] | None = None) -> np.ndarray:
    """An image file (or its bytes ``data``) -> (H, W, 3) uint8 RGB (alpha dropped, grey expanded, 16-bit
    reduced; the first frame of an animation), its size checked from the header first (:func:`image_header`)."""
    import imageio.v3 as iio

    p = Path(path)
    image_header(p, what, data=data, formats=formats)
    try:
        img = np.asarray(iio.imread(p if data is None else data, plugin="pillow", index=0))
    except Exception as e:
        raise HeadcastError(f"cannot read {what} {p} ({why(e)})") from None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise HeadcastError(f"{what} {p} is not an 8-bit image ({img.dtype}, shape {img.shape})")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] < 3:
        img = np.repeat(img[..., :1], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


# --- depth -------------------------------------------------------------------------------------
def _read_exr(path: Path, what: str) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError:
        raise HeadcastError(f"cannot read {path}: EXR needs the OpenEXR package (pip install OpenEXR; this "
                            "OpenCV build has no EXR support); or save the depth as float32 .npy/.tiff") from None
    check_input_file(path, what, MAX_IMAGE_BYTES)
    try:
        with OpenEXR.File(str(path), header_only=True) as f:
            (x0, y0), (x1, y1) = (np.asarray(v) for v in f.header()["dataWindow"])
        if (int(x1) - int(x0) + 1) * (int(y1) - int(y0) + 1) > MAX_IMAGE_PIXELS:
            raise HeadcastError(f"{what} {path} is more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx headcast reads")
        with OpenEXR.File(str(path)) as f:
            channels = {k: np.asarray(v.pixels) for k, v in f.channels().items()}
    except HeadcastError:
        raise
    except Exception as e:
        raise HeadcastError(f"cannot read EXR depth {path} ({why(e)})") from None
    for key in ("Z", "depth", "Y", "R", "RGB", "RGBA"):
        if key in channels:
            a = channels[key]
            return a[..., 0] if a.ndim == 3 else a
    if len(channels) == 1:
        return next(iter(channels.values()))
    raise HeadcastError(f"EXR depth {path} has channels {sorted(channels)}; expected one of Z, depth, Y, R")


def _decode_depth(path: Path, what: str) -> np.ndarray:
    ext = path.suffix.lower()
    if ext == ".npy":
        return read_npy(path, what, max_bytes=MAX_NPY_BYTES)
    if ext == ".exr":
        return _read_exr(path, what)
    if ext not in DEPTH_SUFFIXES_READ:
        raise HeadcastError(f"{what} {path}: unknown format {ext!r} (use .png, .npy, .tiff, .exr or .ply)")
    import cv2

    image_header(path, what)
    try:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except Exception as e:
        raise HeadcastError(f"cannot read {what} {path} ({why(e)})") from None
    if a is None:
        raise HeadcastError(f"cannot read {what} {path} (not a readable {ext[1:].upper()} image)")
    return a


def read_depth_raw(path: str | Path, what: str = "depth map") -> np.ndarray:
    """A depth image file as stored: (H, W) integer or float array, no scaling; 8-bit images are refused."""
    path = Path(path)
    check_input_file(path, what, max(MAX_IMAGE_BYTES, MAX_NPY_BYTES))
    a = _decode_depth(path, what)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4) and (a.shape[2] == 1 or np.array_equal(a[..., 0], a[..., 1])):
        a = a[..., 0]
    if a.ndim != 2:
        raise HeadcastError(f"{what} {path} must have one channel, got shape {a.shape}")
    if a.dtype.kind not in "uif":
        raise HeadcastError(f"{what} {path} has unsupported type {a.dtype}")
    if a.dtype.itemsize == 1:
        raise HeadcastError(f"{what} {path} is an 8-bit image, which cannot hold distances (0..255): save depth "
                            "as a 16-bit PNG in millimetres or as float32 metres (.npy, .tiff)")
    return a


def default_depth_scale(dtype: np.dtype) -> float:
    """Metres per stored unit when not given: 0.001 for integer images (millimetres), 1 for floats (metres)."""
    return 0.001 if np.dtype(dtype).kind in "ui" else 1.0


def clean_depth(raw: np.ndarray, scale: float) -> np.ndarray:
    """Raw depth values -> (H, W) float32 metres with every invalid value (0, NaN, inf, < 0) set to 0
    (converted a block of rows at a time, so the temporaries stay small)."""
    out = np.empty(raw.shape, np.float32)
    for r in range(0, raw.shape[0], _CLEAN_ROWS):
        d = raw[r:r + _CLEAN_ROWS].astype(np.float64) * scale
        d[~np.isfinite(d) | (d <= 0)] = 0.0
        out[r:r + _CLEAN_ROWS] = d
    return out


def read_depth(path: str | Path, scale: float | None = None, what: str = "depth map") -> tuple[np.ndarray, float]:
    """A depth image (16-bit PNG millimetres, float32 NPY/TIFF/EXR metres) -> ((H, W) float32 metres with
    0 = no depth, the scale used in metres per stored unit: ``scale``, else the default for its type)."""
    raw = read_depth_raw(path, what)
    scale = default_depth_scale(raw.dtype) if scale is None else float(scale)
    return clean_depth(raw, scale), scale


# --- PLY ---------------------------------------------------------------------------------------
_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def ply_vertex_count(path: str | Path, what: str = "point cloud", max_points: int = MAX_PLY_POINTS) -> int:
    """The vertex count a PLY header declares, refused when over ``max_points`` or when the file is too
    small to hold that many (the header is read, never the body)."""
    p = Path(path)
    size = check_input_file(p, what, MAX_PLY_BYTES)
    with open(p, "rb") as f:
        head = f.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise HeadcastError(f"{what} {p} is not a PLY file (no 'ply' ... 'end_header' header)")
    text = head[:end].decode("ascii", "replace")
    fmt = re.search(r"^format\s+(\S+)", text, re.M)
    elements = re.findall(r"^element\s+(\S+)\s+(\d+)", text, re.M)
    counts = {name: int(n) for name, n in elements}
    n = counts.get("vertex", 0)
    if n > max_points:
        raise HeadcastError(f"{what} {p} declares {n} points, more than the {max_points} headcast reads")
    props = re.findall(r"^property\s+(\S+)\s+(\S+)", text.split("element vertex", 1)[-1].split("element", 1)[0], re.M)
    row = sum(_PLY_SIZES.get(t, 1) for t, _ in props if t != "list") or 1
    least = n * (row if fmt and fmt.group(1).startswith("binary") else 2)  # ascii: a digit and a space at least
    if size - end < least:
        raise HeadcastError(f"{what} {p} is truncated: its header declares {n} points but it holds "
                            f"{size_text(size)}")
    return n
