"""``headcast texture RECON_DIR``: texture a reconstruction folder in place.

Reads params.npz, color.png and intrinsics.json (written by ``headcast reconstruct``) and adds:

- ``albedo.png``: the albedo atlas (``size`` x ``size``, RGB, 0..1 as 0..255);
- ``mesh_textured.obj`` + ``mesh_textured.mtl``: the fitted mesh (camera frame, metres) with the
  atlas UVs and the albedo as its diffuse map;
- ``render_vs_photo.png``: the photo, the textured lit model from the photo's camera, and the
  model turned 60 degrees each way (to judge the sides the camera did not see);
- ``lighting.json``: lambda, the SH light (9 terms x RGB), its convention, and rho when an
  albedo model was used;
- ``texture_report.json``: Loss4 (the paper's equation 6 over the face pixels), timings, texel
  counts.

The new files are written under temporary names and renamed at the end, so a failure leaves the
folder as it was.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.io.mesh import write_obj
from headcast.model.head_model import HeadModel
from headcast.model.layer import HeadLayer
from headcast.texture.albedo_model import load_albedo_model
from headcast.texture.core import TextureResult, texture_frame
from headcast.texture.render import comparison_picture, render_textured, turned

REQUIRED = ("params.npz", "color.png", "intrinsics.json")
OUTPUTS = ("albedo.png", "mesh_textured.obj", "mesh_textured.mtl", "render_vs_photo.png", "lighting.json",
           "texture_report.json")
SH_CONVENTION = ("shading_c(n) = sum_k sh[k][c] * SH_CONST[k] * b_k(n), b = [1, x, y, z, xy, xz, yz, x^2 - y^2, "
                 "3 z^2 - 1], n a unit normal in the view frame (x right, y up, z towards the camera); "
                 "image = albedo * shading (headcast.core.sh, DECA's convention)")


def read_reconstruction(recon_dir: str | Path, model: str | HeadModel | None = None
                        ) -> tuple[HeadParams, HeadModel, np.ndarray, Intrinsics]:
    """The parameters, head model, photo (H, W, 3) uint8 and intrinsics of a reconstruction folder.

    ``model`` (a name, a path or a loaded model) must be the one the folder was fitted with.
    """
    from headcast.model.registry import resolve_model

    d = Path(recon_dir)
    if not d.is_dir():
        raise HeadcastError(f"reconstruction folder {d} does not exist")
    missing = [f for f in REQUIRED if not (d / f).is_file()]
    if missing:
        raise HeadcastError(f"{d} is not a complete reconstruction folder: {', '.join(missing)} missing "
                            "(make one with 'headcast reconstruct ... --out DIR')")
    params = HeadParams.load(d)
    if model is None:
        m = resolve_model(params.model)
    else:
        m = model if isinstance(model, HeadModel) else resolve_model(str(model))
        if m.name != params.model:
            raise HeadcastError(f"{d} was reconstructed with model {params.model!r}, not {m.name!r}")
    if params.beta.shape != (m.n_shape,) or params.psi.shape != (m.n_expr,):
        raise HeadcastError(f"{d}: its parameters ({params.beta.size} identity, {params.psi.size} expression) "
                            f"do not fit model {m.name!r} ({m.n_shape}, {m.n_expr})")
    K = Intrinsics.from_json(d / "intrinsics.json")
    try:
        img = iio.imread(d / "color.png")
    except Exception as e:
        raise HeadcastError(f"{d / 'color.png'} is not a readable image ({e.__class__.__name__})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255).round().astype(np.uint8)
    if img.shape[:2] != (K.height, K.width):
        raise HeadcastError(f"{d / 'color.png'} is {img.shape[1]}x{img.shape[0]} but intrinsics.json is for "
                            f"{K.width}x{K.height}")
    return params, m, img, K


def picture(model: HeadModel, vertices: np.ndarray, photo: np.ndarray, K: Intrinsics, res: TextureResult) -> np.ndarray:
    """The render_vs_photo.png picture: photo | render over the dimmed photo | turned -60 | turned +60."""
    a = res.space.atlas
    hit = res.render.any(-1, keepdims=True)
    over = np.where(hit, res.render, photo.astype(np.float32) / 255 * 0.35)
    side = [render_textured(turned(vertices, deg), model.faces, a.uv, a.uv_faces, res.albedo, res.light, K)[0]
            for deg in (-60, 60)]
    labels = ["photo", f"textured render, Loss4 {res.loss4:.3f}", "turned: left side", "turned: right side"]
    return comparison_picture([photo, over, *side], labels)


def texture_reconstruction(recon_dir: str | Path, albedo_model: str | Path | None = None, size: int = 1024,
                           model: str | HeadModel | None = None, n_components: int = 50,
                           progress: Callable[[str], None] | None = None) -> dict:
    """Texture the reconstruction in ``recon_dir`` and write the outputs listed in the module docstring.

    Returns the report (also written as texture_report.json).
    """
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    if not 16 <= int(size) <= 8192:
        raise HeadcastError(f"--size {size} is out of range (16..8192 texels)")
    d = Path(recon_dir)
    params, m, photo, K = read_reconstruction(d, model)
    am = load_albedo_model(albedo_model, n_components) if albedo_model is not None else None
    verts = params.vertices(HeadLayer(m))
    depth = None
    if (d / "depth_mm.png").is_file():
        depth = iio.imread(d / "depth_mm.png").astype(np.float32) / 1000.0
        if depth.shape != photo.shape[:2]:
            raise HeadcastError(f"{d / 'depth_mm.png'} is {depth.shape[1]}x{depth.shape[0]} but color.png is "
                                f"{photo.shape[1]}x{photo.shape[0]}")
    res = texture_frame(m, verts, photo, K, albedo_model=am, size=int(size), depth=depth)
    report = {
        "model": m.name, "size": int(size), "albedo": res.stats.get("albedo"),
        "albedo_model": str(albedo_model) if albedo_model is not None else None,
        "loss4": res.loss4,
        "loss4_definition": "mean |photo - render| over the face pixels (triangles of the model's 'face' mask "
                            "seen at least 1.5 px inside the silhouette) and RGB, values 0..1 (paper eq. 6)",
        **{k: v for k, v in res.stats.items() if k != "albedo"},
    }
    lighting = {"sh": res.light.tolist(), "shape": "(9 terms, RGB)", "convention": SH_CONVENTION,
                "scale": "mean shading over the face pixels is 1 per channel" if am is None else
                "set by the albedo model"}
    if res.rho is not None:
        lighting["rho"] = res.rho.tolist()
        lighting["albedo_model"] = str(albedo_model)

    tmp = {name: d / f".{name}.tmp-{os.getpid()}" for name in OUTPUTS}
    try:
        iio.imwrite(tmp["albedo.png"], (np.clip(res.albedo, 0, 1) * 255).round().astype(np.uint8), extension=".png",
                    compress_level=3)
        (tmp["mesh_textured.mtl"]).write_text(
            "# headcast albedo (diffuse only)\nnewmtl albedo\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
            "map_Kd albedo.png\n")
        write_obj(tmp["mesh_textured.obj"], verts, m.faces, res.space.atlas.uv, res.space.atlas.uv_faces,
                  mtl_name="mesh_textured.mtl", material="albedo")
        iio.imwrite(tmp["render_vs_photo.png"], picture(m, verts, photo, K, res), extension=".png", compress_level=3)
        (tmp["lighting.json"]).write_text(json.dumps(lighting, indent=2) + "\n")
        report["seconds"] = time.perf_counter() - t0
        (tmp["texture_report.json"]).write_text(json.dumps(report, indent=2) + "\n")
        for name, p in tmp.items():
            os.replace(p, d / name)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    say(f"texture: wrote {', '.join(OUTPUTS)} into {d} in {report['seconds']:.1f} s")
    return report
