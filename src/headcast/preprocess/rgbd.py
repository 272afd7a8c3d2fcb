"""Reading an RGB-D frame: color image, depth map (or coloured point cloud) and pinhole intrinsics.

Depth files: uint16 PNG (``depth_scale`` metres per unit, default 0.001 = millimetres), float32
NPY / TIFF / EXR in metres (scale 1 unless given), or a PLY point cloud in the camera frame (OpenCV
axes, metres unless scaled) that is splatted back into a depth map through the intrinsics.
0, NaN, inf and negative values mean no depth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file
from headcast.io.validate import MAX_IMAGE_BYTES, ply_vertex_count, read_depth, read_image

logger = logging.getLogger(__name__)

COLOR_SUFFIXES = ("_color.png", "_color.jpg", "_color.jpeg")
DEPTH_SUFFIXES = ("_depth_mm.png", "_depth.png", "_depth.npy", "_depth.tiff", "_depth.tif", "_depth.exr", ".ply")
INTRINSICS_SUFFIX = "_intrinsics.json"
PLAUSIBLE_DEPTH_M = (0.05, 20.0)   # median valid depth of a capture must fall in here


@dataclass(frozen=True)
class RGBDFrame:
    """An aligned color + depth pair with its intrinsics.

    color: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres, 0 = no depth. K: intrinsics of both.
    rotation: degrees the original capture was turned clockwise to get these arrays.
    """

    color: np.ndarray
    depth: np.ndarray
    K: Intrinsics
    rotation: int = 0
    color_path: Path | None = None
    depth_path: Path | None = None
    intrinsics_path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.color.shape[:2]

    @property
    def name(self) -> str:
        return str(self.color_path) if self.color_path else "the color image"


# --- files -------------------------------------------------------------------------------------

def check_depth_units(depth: np.ndarray, scale: float, name: str) -> None:
    """HeadcastError when the median valid depth (metres) is implausible for a capture; suggests a scale."""
    valid = depth[depth > 0]
    if valid.size == 0:
        raise HeadcastError(f"depth map {name} has no valid depth (all zero, NaN or inf)")
    med = float(np.median(valid))
    lo, hi = PLAUSIBLE_DEPTH_M
    if lo <= med <= hi:
        return
    raw_med = med / scale
    hint = next((s for s in (1.0, 0.001, 0.0001, 0.01, 0.1) if lo <= raw_med * s <= hi), None)
    hint = f"; try --depth-scale {hint:g}" if hint is not None else ""
    raise HeadcastError(f"depth map {name} looks like it is in other units: median depth {med:.4g} m with "
                        f"--depth-scale {scale:g}{hint}")


def depth_from_points(points: np.ndarray, K: Intrinsics) -> np.ndarray:
    """Camera-frame points (N, 3) in metres -> (H, W) float32 depth map (nearest point per pixel, 0 = none)."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0)]
    u = np.rint(K.fx * pts[:, 0] / pts[:, 2] + K.cx).astype(np.int64)
    v = np.rint(K.fy * pts[:, 1] / pts[:, 2] + K.cy).astype(np.int64)
    inside = (u >= 0) & (u < K.width) & (v >= 0) & (v < K.height)
    depth = np.full(K.height * K.width, np.inf)
    np.minimum.at(depth, v[inside] * K.width + u[inside], pts[inside, 2])
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(K.height, K.width).astype(np.float32)


def read_ply_depth(path: str | Path, K: Intrinsics, scale: float = 1.0) -> np.ndarray:
    """A point cloud file (PLY, camera frame) -> (H, W) float32 depth map in metres through ``K``."""
    path = Path(path)
    ply_vertex_count(path)  # exists, a regular file, its header within bounds
    import open3d as o3d  # after the header check: a refusal needs no Open3D

    pcd = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pcd.points) * scale
    if len(pts) == 0:
        raise HeadcastError(f"cannot read points from {path} (not a point cloud file, or empty)")
    if np.median(pts[:, 2]) <= 0:
        raise HeadcastError(f"point cloud {path}: most points have z <= 0; expected the OpenCV camera frame "
                            "(x right, y down, z forward)")
    depth = depth_from_points(pts, K)
    n_in = int((depth > 0).sum())
    if n_in < 0.01 * min(len(pts), K.width * K.height):
        raise HeadcastError(f"point cloud {path}: its points do not project into the {K.width}x{K.height} "
                            "image through the intrinsics (camera frame and metres expected)")
    return depth


# --- intrinsics --------------------------------------------------------------------------------

def fit_intrinsics(K: Intrinsics, height: int, width: int, name: str) -> Intrinsics:
    """Intrinsics for an image of ``height`` x ``width``: scaled when only the resolution differs."""
    if (K.width, K.height) == (width, height):
        return K
    if (K.width, K.height) == (height, width):
        raise HeadcastError(f"intrinsics {name} are for a {K.width}x{K.height} image but the color image is "
                            f"{width}x{height}: give the intrinsics of the stored (unrotated) image")
    if abs(K.width / K.height - width / height) > 0.01 * width / height:
        raise HeadcastError(f"intrinsics {name} are for a {K.width}x{K.height} image, which does not match the "
                            f"{width}x{height} color image")
    f = width / K.width
    s = K.scaled(f)
    s = Intrinsics(s.fx, s.fy, s.cx, s.cy, width, height)
    logger.warning(f"intrinsics scaled from {K.width}x{K.height} to {width}x{height}")
    return s.check()


# --- frame -------------------------------------------------------------------------------------

def _strip(path: Path, suffixes: tuple[str, ...]) -> Path | None:
    for s in suffixes:
        if path.name.endswith(s):
            return path.with_name(path.name[: -len(s)])
    return None


def resolve_paths(color: str | Path, depth: str | Path | None = None, intrinsics: str | Path | None = None
                  ) -> tuple[Path, Path, Path | None]:
    """COLOR (a file or a frame prefix like ``frame-050``), optional DEPTH and intrinsics -> three paths.

    A prefix finds ``<prefix>_color.png``, ``<prefix>_depth_mm.png`` (or another depth suffix) and
    ``<prefix>_intrinsics.json``; a color file named ``<prefix>_color.*`` finds its siblings the same way.
    """
    color = Path(color)
    prefix = None
    if color.exists() and not color.is_file():
        check_input_file(color, "color image", MAX_IMAGE_BYTES)  # a folder or a device: says which
    if not color.is_file():
        found = [color.with_name(color.name + s) for s in COLOR_SUFFIXES if color.with_name(color.name + s).is_file()]
        if not found:
            raise HeadcastError(f"color image {color} does not exist (nor {color}_color.png)")
        prefix, color = color, found[0]
    else:
        prefix = _strip(color, COLOR_SUFFIXES)
    if depth is None:
        cands = [prefix.with_name(prefix.name + s) for s in DEPTH_SUFFIXES] if prefix else []
        found = [c for c in cands if c.is_file()]
        if not found:
            raise HeadcastError(f"no depth map given for {color} (pass DEPTH, or keep <prefix>_depth_mm.png "
                                "next to <prefix>_color.png)")
        depth = found[0]
    if intrinsics is None and prefix is not None and prefix.with_name(prefix.name + INTRINSICS_SUFFIX).is_file():
        intrinsics = prefix.with_name(prefix.name + INTRINSICS_SUFFIX)
    return color, Path(depth), (Path(intrinsics) if intrinsics is not None else None)


def parse_rotation(rotate: str | int) -> int | None:
    """'auto' -> None; 0, 90, 180, 270 (int or text) -> that int; anything else: HeadcastError."""
    if isinstance(rotate, str) and rotate.strip().lower() == "auto":
        return None
    try:
        degrees = int(rotate)
    except (TypeError, ValueError):
        degrees = -1
    if degrees not in (0, 90, 180, 270):
        raise HeadcastError(f"--rotate must be auto, 0, 90, 180 or 270, not {rotate!r}")
    return degrees


def load_rgbd(color: str | Path, depth: str | Path | None = None, intrinsics: str | Path | Intrinsics | None = None,
              *, depth_scale: float | None = None, rotate: str | int = "auto", method: str = "mediapipe") -> RGBDFrame:
    """Read a color image, its aligned depth map and intrinsics; turn them upright.

    color: image path or frame prefix. depth: depth file (PNG/NPY/TIFF/EXR/PLY); found from the
    prefix when None. intrinsics: JSON path or Intrinsics; found from the prefix when None.
    depth_scale: metres per stored unit (default 0.001 for integer PNGs, 1 for float files and PLY).
    rotate: 'auto' (the turn showing an upright face, found with ``method``'s detector) or 0/90/180/270
    degrees clockwise. Bad input raises HeadcastError with one line.
    """
    from headcast.preprocess.rotate import find_upright_rotation, rotate_frame

    if depth_scale is not None and not (np.isfinite(depth_scale) and depth_scale > 0):
        raise HeadcastError(f"--depth-scale must be a positive number, not {depth_scale}")
    degrees = parse_rotation(rotate)
    given_K = intrinsics if isinstance(intrinsics, Intrinsics) else None
    color_path, depth_path, K_path = resolve_paths(color, depth, None if given_K else intrinsics)
    img = read_image(color_path)
    H, W = img.shape[:2]
    if given_K is not None:
        K, K_name = given_K.check(), "given"
    elif K_path is None:
        raise HeadcastError(f"no intrinsics for {color_path}: pass --intrinsics K.json "
                            "(fx, fy, cx, cy, width, height)")
    else:
        K, K_name = Intrinsics.from_json(K_path), str(K_path)
    K = fit_intrinsics(K, H, W, K_name)

    if depth_path.suffix.lower() == ".ply":
        scale = 1.0 if depth_scale is None else float(depth_scale)
        d = read_ply_depth(depth_path, K, scale)
    else:
        d, scale = read_depth(depth_path, depth_scale)
        if d.shape != (H, W):
            raise HeadcastError(f"color {color_path.name} is {W}x{H} but depth {depth_path.name} is "
                                f"{d.shape[1]}x{d.shape[0]}: they must be aligned pixel for pixel")
    check_depth_units(d, scale, str(depth_path))

    frame = RGBDFrame(img, d, K, 0, color_path, depth_path, K_path)
    if degrees is None:
        degrees, _ = find_upright_rotation(img, method, name=str(color_path))
    return rotate_frame(frame, degrees)
