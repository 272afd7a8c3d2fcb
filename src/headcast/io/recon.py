"""The reconstruction folder: what ``headcast reconstruct`` writes and ``headcast texture`` adds.

Every stage that reads the folder (texture, animate, export, encode, send) reads it here, through the
validation layer (:mod:`headcast.io.validate`; bounds in docs/guarantees.md); docs/formats.md lists every
file. The file names are the constants below.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes, read_json
from headcast.core.params import N_POSE, HeadParams
from headcast.io.arrays import need, read_npz, text
from headcast.io.mesh import read_obj, write_obj
from headcast.io.outputs import check_kind
from headcast.io.validate import MAX_IMAGE_BYTES, clean_depth, finite_array, image_header, read_depth_raw, read_image

logger = logging.getLogger(__name__)

# written by `headcast reconstruct`
PARAMS = "params.npz"              # beta, psi, theta, scale, translation, model, eta
PARAMS_JSON = "params.json"        # the same for people, with units and definitions
MESH_OBJ = "mesh.obj"              # fitted mesh, camera frame, metres, the model's UVs
MESH_PLY = "mesh.ply"              # the same mesh, binary PLY
COLOR = "color.png"                # the upright input photo, (H, W, 3) uint8
DEPTH = "depth_mm.png"             # the upright input depth, uint16 millimetres, 0 = none
INTRINSICS = "intrinsics.json"     # fx fy cx cy (px), width height of color.png
FIT_REPORT = "fit_report.json"
LANDMARKS_PNG = "landmarks.png"
OVERLAY_PNG = "overlay.png"
DEPTH_RESIDUAL_PNG = "depth_residual.png"
# written by `headcast reconstruct` on several frames (a sweep)
POSES = "poses.json"               # each frame's 4x4 head-to-camera transform, used or not and why
FUSED = "fused.ply"                # the registered head points of every frame, output frame, coloured
FRAMES = "frames"                  # the used frames, upright: NNN_color.png, NNN_depth_mm.png
# added by `headcast texture`
ALBEDO = "albedo.png"              # UV albedo atlas, RGB
TEXTURED_OBJ = "mesh_textured.obj"  # fitted mesh with the atlas UVs, material "albedo"
TEXTURED_MTL = "mesh_textured.mtl"  # its material: map_Kd albedo.png
LIGHTING = "lighting.json"         # SH light (9 x RGB), optional rho
RENDER_VS_PHOTO = "render_vs_photo.png"
TEXTURE_REPORT = "texture_report.json"

MAX_PARAMS_BYTES = 16 << 20       # params.npz: a few kilobytes (the model's component counts)
MAKE_HINT = "make one with 'headcast reconstruct ... --out DIR'"
SH_CONVENTION = ("shading_c(n) = sum_k sh[k][c] * SH_CONST[k] * b_k(n), b = [1, x, y, z, xy, xz, yz, x^2 - y^2, "
                 "3 z^2 - 1], n a unit normal in the view frame (x right, y up, z towards the camera); "
                 "image = albedo * shading (headcast.core.sh, DECA's convention)")


# ---------------------------------------------------------------- the folder
KIND = "reconstruction"  # the kind in the folder's manifest (headcast.io.outputs)


def _present(p: Path) -> bool:
    """Whether the folder has an entry ``p`` (a folder, device or dangling link too: its reader refuses it)."""
    return os.path.lexists(p)


def check_folder(folder: str | Path, required: tuple[str, ...] = (PARAMS,)) -> Path:
    """``folder`` as a Path once it exists and holds every ``required`` file."""
    d = Path(folder)
    if not d.is_dir():
        raise HeadcastError(f"reconstruction folder {d} does not exist")
    check_kind(d, (KIND,), "a reconstruction folder")
    missing = [f for f in required if not _present(d / f)]
    if missing:
        raise HeadcastError(f"{d} is not a complete reconstruction folder: {', '.join(missing)} missing ({MAKE_HINT})")
    return d


def check_model(folder: str | Path, params: HeadParams, model) -> None:
    """The folder's parameters must come from ``model`` (a HeadModel: its name and component counts)."""
    d = Path(folder)
    if model.name != params.model:
        raise HeadcastError(f"{d} was reconstructed with model {params.model!r}, not {model.name!r} "
                            f"(use --model {params.model})")
    if params.beta.shape != (model.n_shape,) or params.psi.shape != (model.n_expr,):
        raise HeadcastError(f"{d / PARAMS}: its parameters ({params.beta.size} identity, {params.psi.size} expression) "
                            f"do not fit model {model.name!r} ({model.n_shape}, {model.n_expr})")


# ---------------------------------------------------------------- parameters
def write_params(folder: str | Path, params: HeadParams, K: Intrinsics | None = None,
                 offsets: np.ndarray | None = None) -> None:
    """params.npz and params.json (metres, radians); with ``K`` also the paper's eta; with ``offsets``
    (V, 3) the detail layer (rest-space vertex offsets, metres; in params.npz only)."""
    folder = Path(folder)
    p = params
    d = dict(beta=p.beta, psi=p.psi, theta=p.theta, scale=np.float64(p.scale), translation=p.translation)
    eta = p.paper_eta(K) if K is not None else None
    more = {} if offsets is None else {"offsets": np.asarray(offsets, dtype=np.float32)}
    np.savez(folder / PARAMS, model=np.str_(p.model), **d, **({"eta": eta} if eta is not None else {}), **more)
    js = {k: np.asarray(v).tolist() for k, v in d.items()}
    js.update(model=p.model, units={"length": "m", "angle": "rad (axis-angle)"},
              theta_layout="[root | neck | jaw | left eye | right eye]",
              placement="X_cam = scale * diag(1,-1,-1) @ X_model + translation")
    if eta is not None:
        js["eta"] = eta.tolist()
        js["eta_definition"] = "weak-perspective (s px/m, tx px, ty px), the paper's orthographic projection"
    (folder / PARAMS_JSON).write_text(json.dumps(js, indent=2) + "\n")


def read_params(folder: str | Path) -> HeadParams:
    """The fitted parameters in ``folder``/params.npz, checked: shapes, finite values, a positive scale."""
    d = Path(folder)
    check_kind(d, (KIND,), "a reconstruction folder")
    return _params(d)


def read_checked(folder: str | Path, required: tuple[str, ...] = (PARAMS,)) -> tuple[Path, HeadParams]:
    """:func:`check_folder` then :func:`read_params`, the folder's manifest read once: ``folder`` as a Path
    and its parameters, with the same errors."""
    d = check_folder(folder, required)
    return d, _params(d)


def _params(d: Path) -> HeadParams:
    """:func:`read_params` once the folder's manifest has been checked."""
    path = d / PARAMS
    if not _present(path):
        raise HeadcastError(f"{d} has no {PARAMS} (is it a reconstruction folder?)")
    z = read_npz(path, "reconstruction parameters", max_bytes=MAX_PARAMS_BYTES)

    def floats(key: str, shape: tuple) -> np.ndarray:
        return finite_array(need(z, key, path), f"{path}: {key}", shape, dtype=np.float64)

    beta, psi, theta = floats("beta", (None,)), floats("psi", (None,)), floats("theta", (N_POSE,))
    scale, translation = float(floats("scale", ())), floats("translation", (3,))
    model = text(need(z, "model", path), f"{path}: model")
    if scale <= 0:
        raise HeadcastError(f"{path}: scale must be positive, not {scale:g}")
    logger.debug("read %s: model %s, %d identity, %d expression values", path, model, beta.size, psi.size)
    return HeadParams(beta, psi, theta, scale, translation, model)


MAX_OFFSET_M = 0.05  # a detail offset beyond 5 cm is not a detail


def read_offsets(folder: str | Path, n_vertices: int) -> np.ndarray | None:
    """The detail layer in ``folder``/params.npz: rest-space vertex offsets (n_vertices, 3) float32
    metres, or None when it has none; checked: shape, finite, at most MAX_OFFSET_M."""
    path = Path(folder) / PARAMS
    z = read_npz(path, "reconstruction parameters", max_bytes=MAX_PARAMS_BYTES)
    if "offsets" not in z:
        return None
    off = finite_array(z["offsets"], f"{path}: offsets", (n_vertices, 3), dtype=np.float32)
    if np.abs(off).max(initial=0) > MAX_OFFSET_M:
        raise HeadcastError(f"{path}: offsets up to {np.abs(off).max() * 1000:.0f} mm; a detail layer stays "
                            f"within {MAX_OFFSET_M * 1000:.0f} mm")
    return off


def with_offsets(model, offsets: np.ndarray | None):
    """``model`` (a HeadModel) with the rest-space ``offsets`` (V, 3) added to its template (None: as is),
    so every posed, animated or exported mesh of it carries the detail layer."""
    import dataclasses

    if offsets is None:
        return model
    return dataclasses.replace(model, v_template=(model.v_template + offsets).astype(np.float32))


def write_poses(folder: str | Path, frames: list[dict], output_frame: str) -> None:
    """poses.json: one entry per input frame (see docs/formats.md), ``output_frame`` the frame whose
    camera the reconstruction is in."""
    js = {"output_frame": output_frame,
          "head_to_camera": "4x4, metres: X_frame = T @ [X_out, 1], X_out a point of mesh.obj (the output frame)",
          "frames": frames}
    (Path(folder) / POSES).write_text(json.dumps(js, indent=1) + "\n")


def read_poses(folder: str | Path) -> list[dict] | None:
    """poses.json's frames (``head_to_camera`` as (4, 4) arrays or None, ``expression`` as (E,) arrays or
    None), or None when the folder has none."""
    p = Path(folder) / POSES
    if not _present(p):
        return None
    js = read_json(p, "poses file")
    if not isinstance(js, dict) or not isinstance(js.get("frames"), list):
        raise HeadcastError(f"{p} is not a headcast poses file (no 'frames' list)")
    out = []
    for k, f in enumerate(js["frames"]):
        if not isinstance(f, dict):
            raise HeadcastError(f"{p}: frame {k} is not an object")
        T, psi = f.get("head_to_camera"), f.get("expression")
        f = dict(f, head_to_camera=None if T is None else finite_array(T, f"{p}: frame {k}", (4, 4),
                                                                       dtype=np.float64),
                 expression=None if psi is None else finite_array(psi, f"{p}: frame {k} expression", (None,),
                                                                  dtype=np.float64))
        out.append(f)
    return out


# ---------------------------------------------------------------- the photo
@dataclass
class Photo:
    """The upright input: color (H, W, 3) uint8, its intrinsics, and depth (H, W) float32 metres or None."""

    color: np.ndarray
    K: Intrinsics
    depth: np.ndarray | None


def read_intrinsics(folder: str | Path) -> Intrinsics | None:
    """intrinsics.json, or None when the folder has none."""
    p = Path(folder) / INTRINSICS
    return Intrinsics.from_json(p) if _present(p) else None


def read_photo(folder: str | Path) -> Photo:
    """color.png with intrinsics.json (both required) and depth_mm.png when present, sizes checked."""
    d = check_folder(folder, (COLOR, INTRINSICS))
    K = Intrinsics.from_json(d / INTRINSICS)
    cp = d / COLOR
    hdr = image_header(cp, "color image", formats=("PNG",))
    w, h = hdr.width, hdr.height
    if (h, w) != (K.height, K.width):
        raise HeadcastError(f"{cp} is {w}x{h} but {INTRINSICS} is for {K.width}x{K.height}")
    color = read_image(cp, "color image", formats=("PNG",))
    depth = None
    dp = d / DEPTH
    if _present(dp):
        raw = read_depth_raw(dp, "depth map")
        if raw.dtype != np.uint16:
            raise HeadcastError(f"{dp} must be a 16-bit one-channel PNG (millimetres), not {raw.dtype} {raw.shape}")
        if raw.shape != color.shape[:2]:
            raise HeadcastError(f"{dp} is {raw.shape[1]}x{raw.shape[0]} but {COLOR} is {w}x{h}")
        depth = clean_depth(raw, 0.001)
    return Photo(color, K, depth)


# ---------------------------------------------------------------- lighting
@dataclass
class Lighting:
    """SH light sh (9, 3) (DECA's convention, :data:`SH_CONVENTION`); rho (R,) albedo-model coefficients
    or None; the albedo model's path or None; how the light's scale is fixed (text)."""

    sh: np.ndarray
    rho: np.ndarray | None = None
    albedo_model: str | None = None
    scale: str = "mean shading over the face pixels is 1 per channel"


def write_lighting(folder: str | Path, light: Lighting) -> None:
    """lighting.json."""
    js = {"sh": np.asarray(light.sh).tolist(), "shape": "(9 terms, RGB)", "convention": SH_CONVENTION,
          "scale": light.scale}
    if light.rho is not None:
        js["rho"] = np.asarray(light.rho).tolist()
        js["albedo_model"] = light.albedo_model
    (Path(folder) / LIGHTING).write_text(json.dumps(js, indent=2) + "\n")


def read_lighting(folder: str | Path) -> Lighting | None:
    """lighting.json (None when absent): sh must be 9 x 3 finite numbers, rho a finite list."""
    p = Path(folder) / LIGHTING
    if not _present(p):
        return None
    js = read_json(p, "lighting file")
    if not isinstance(js, dict) or "sh" not in js:
        raise HeadcastError(f"{p} is not a headcast lighting file (no 'sh')")
    sh = finite_array(js["sh"], f"{p}: sh", dtype=np.float64)
    if sh.size != 27 or sh.shape not in ((9, 3), (27,)):
        raise HeadcastError(f"{p}: sh must be 9 x 3 numbers (9 SH terms, RGB), not shape {sh.shape}")
    rho = None if js.get("rho") is None else finite_array(js["rho"], f"{p}: rho", (None,), dtype=np.float64)
    am = js.get("albedo_model")
    return Lighting(sh.reshape(9, 3), rho, None if am is None else str(am), str(js.get("scale", "")))


# ---------------------------------------------------------------- texture
@dataclass
class Texture:
    """The albedo PNG file's bytes with the textured mesh's uv (T, 2) and uv_faces (F, 3) (OBJ convention);
    ``source``: the PNG's path (for messages)."""

    png: bytes
    uv: np.ndarray
    uv_faces: np.ndarray
    source: Path = Path(ALBEDO)

    def image(self) -> np.ndarray:
        """The albedo as (H, W, 3) uint8 RGB."""
        return read_image(self.source, "albedo image", data=self.png, formats=("PNG",))


def write_texture(folder: str | Path, albedo: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  uv: np.ndarray, uv_faces: np.ndarray) -> None:
    """albedo.png from (H, W, 3) values 0..1, and mesh_textured.obj/.mtl: vertices (V, 3) metres with
    the atlas uv (T, 2) / uv_faces (F, 3) and the albedo as diffuse map."""
    import imageio.v3 as iio

    d = Path(folder)
    iio.imwrite(d / ALBEDO, (np.clip(albedo, 0, 1) * 255).round().astype(np.uint8), extension=".png",
                compress_level=3)
    (d / TEXTURED_MTL).write_text("# headcast albedo (diffuse only)\nnewmtl albedo\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\n"
                                  f"illum 1\nmap_Kd {ALBEDO}\n")
    write_obj(d / TEXTURED_OBJ, vertices, faces, uv, uv_faces, mtl_name=TEXTURED_MTL, material="albedo")


def read_albedo(folder: str | Path) -> bytes | None:
    """albedo.png's bytes (checked to be a PNG of sane size), or None when absent."""
    p = Path(folder) / ALBEDO
    if not _present(p):
        return None
    data = read_bytes(p, "albedo image", MAX_IMAGE_BYTES)
    image_header(p, "albedo image", data=data, formats=("PNG",))
    return data


def read_texture(folder: str | Path, faces: np.ndarray) -> Texture | None:
    """albedo.png + mesh_textured.obj, whose triangles must be ``faces`` (F, 3); None when the folder has
    neither (untextured). One without the other, or a mismatch, is an error."""
    d = Path(folder)
    have = [_present(d / f) for f in (ALBEDO, TEXTURED_OBJ)]
    if not any(have):
        return None
    if not all(have):
        raise HeadcastError(f"{d} has {ALBEDO if have[0] else TEXTURED_OBJ} without "
                            f"{TEXTURED_OBJ if have[0] else ALBEDO} (run 'headcast texture {d}' again)")
    obj = read_obj(d / TEXTURED_OBJ)
    if obj.uv is None or obj.uv_faces is None or not np.array_equal(obj.faces, faces):
        raise HeadcastError(f"{d / TEXTURED_OBJ} does not match the model's triangles or has no texture coordinates")
    return Texture(read_albedo(d), obj.uv, obj.uv_faces, d / ALBEDO)
