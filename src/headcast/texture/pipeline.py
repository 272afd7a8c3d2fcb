"""``headcast texture RECON_DIR``: texture a reconstruction folder in place.

Reads params.npz, color.png and intrinsics.json (written by ``headcast reconstruct``) and adds:

- ``albedo.png``: the albedo atlas (``size`` x ``size``, RGB, 0..1 as 0..255);
- ``mesh_textured.obj`` + ``mesh_textured.mtl``: the fitted mesh (camera frame, metres) with the
  atlas UVs and the albedo as its diffuse map;
- ``render_vs_photo.png``: the photo, the textured lit model from the photo's camera (over the photo in
  dim grey), and the model turned 60 degrees each way (to judge the sides the camera did not see);
- ``lighting.json``: lambda, the SH light (9 terms x RGB), its convention, and rho when an
  albedo model was used;
- ``texture_report.json``: Loss4 (the paper's equation 6 over the face pixels), timings, texel
  counts.

The new files are written under staging names inside it and renamed into place together at the end
(:func:`headcast.io.outputs.staged_files`), so a failure or a signal leaves the folder as it was; they are
added to the folder's manifest, so that ``reconstruct --force`` and ``texture --force`` replace them later.
A texture file headcast did not write is never replaced. File names and formats: :mod:`headcast.io.recon`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.files import reason
from headcast.io import recon
from headcast.io.outputs import STAGING_MARK, extend_manifest, read_manifest, shown, staged_files
from headcast.io.validate import MAX_TEXTURE_SIZE, check_number
from headcast.model.head_model import HeadModel
from headcast.model.skinning import camera_vertices
from headcast.texture.albedo_model import load_albedo_model
from headcast.texture.core import TextureResult, texture_frame
from headcast.texture.multiview import apply_sweep, read_frames
from headcast.texture.render import comparison_picture, render_textured, turned

logger = logging.getLogger(__name__)

REQUIRED = (recon.PARAMS, recon.COLOR, recon.INTRINSICS)
OUTPUTS = (recon.ALBEDO, recon.TEXTURED_OBJ, recon.TEXTURED_MTL, recon.RENDER_VS_PHOTO, recon.LIGHTING,
           recon.TEXTURE_REPORT)


PHOTO_BEHIND = 0.35  # brightness of the grey photo behind the render, where the mesh does not cover it


def picture(model: HeadModel, vertices: np.ndarray, photo: np.ndarray, K: Intrinsics, res: TextureResult) -> np.ndarray:
    """The render_vs_photo.png picture: photo | render over the photo, dimmed and grey | turned -60 | turned +60.

    The photo behind the render shows what the mesh does not cover (a body past the fitted neck and
    shoulders, hair beyond the scalp); in grey, so that it cannot be taken for a dark part of the render."""
    a = res.space.atlas
    hit = res.render.any(-1, keepdims=True)
    grey = (photo.astype(np.float32) / 255).mean(-1, keepdims=True) * PHOTO_BEHIND
    over = np.where(hit, res.render, grey)
    side = [render_textured(turned(vertices, deg), model.faces, a.uv, a.uv_faces, res.albedo, res.light, K)[0]
            for deg in (-60, 60)]
    labels = ["photo", f"textured render over the photo (grey), Loss4 {res.loss4:.3f}", "turned: left side",
              "turned: right side"]
    return comparison_picture([photo, over, *side], labels)


def texture_reconstruction(recon_dir: str | Path, albedo_model: str | Path | None = None, size: int = 1024,
                           model: str | HeadModel | None = None, n_components: int = 50,
                           force: bool = False, fit_frames_only: bool = False) -> dict:
    """Texture the reconstruction in ``recon_dir`` and write the outputs listed in the module docstring.

    ``model`` (a name, a path or a loaded model) must be the one the folder was fitted with (default: the
    one it names); ``size``: 16..MAX_TEXTURE_SIZE texels; ``force`` replaces the folder's earlier texture;
    ``fit_frames_only``: a sweep's texture from the frames its fit used only (the others stay held out).
    Returns the report (also written as texture_report.json).
    """
    from headcast.model.registry import resolve_model

    t0 = time.perf_counter()
    check_number(size, "--size", 16, MAX_TEXTURE_SIZE, integer=True, unit="texels")
    d, params = recon.read_checked(recon_dir, REQUIRED)
    photo = recon.read_photo(d)
    am = load_albedo_model(albedo_model, n_components) if albedo_model is not None else None
    m = model if isinstance(model, HeadModel) else resolve_model(str(model) if model is not None else params.model)
    recon.check_model(d, params, m)
    m.require_uv("texture")
    _check_targets(d, force)  # the inputs are all checked: refuse a bad target before the work
    verts = camera_vertices(recon.with_offsets(m, recon.read_offsets(d, m.n_vertices)), params)
    frames = read_frames(d, photo.K, used_only=fit_frames_only) if am is None else []  # a sweep's, else none
    res = texture_frame(m, verts, photo.color, photo.K, albedo_model=am, size=int(size), depth=photo.depth,
                        photo_albedo=not frames)
    if frames:
        apply_sweep(res, frames, photo.color, m, verts, photo.K)  # every frame's view blended
    report = {
        "model": m.name, "size": int(size), "albedo": res.stats.get("albedo"),
        "albedo_model": str(albedo_model) if albedo_model is not None else None,
        "loss4": res.loss4,
        "loss4_definition": "mean |photo - render| over the face pixels (triangles of the model's 'face' mask "
                            "seen at least 1.5 px inside the silhouette) and RGB, values 0..1 (paper eq. 6)",
        **{k: v for k, v in res.stats.items() if k != "albedo"},
    }
    light = recon.Lighting(res.light, res.rho, None if albedo_model is None else str(albedo_model))
    if am is not None:
        light.scale = "set by the albedo model"

    def write(folder: Path) -> None:
        a = res.space.atlas
        recon.write_texture(folder, res.albedo, verts, m.faces, a.uv, a.uv_faces)
        iio.imwrite(folder / recon.RENDER_VS_PHOTO, picture(m, verts, photo.color, photo.K, res), extension=".png",
                    compress_level=3)
        recon.write_lighting(folder, light)
        report["seconds"] = time.perf_counter() - t0
        (folder / recon.TEXTURE_REPORT).write_text(json.dumps(report, indent=2) + "\n")

    _write_outputs(d, write, force)
    logger.info(f"texture: wrote {', '.join(OUTPUTS)} into {shown(d)} in {report['seconds']:.1f} s")
    return report


def _check_targets(d: Path, force: bool) -> bool:
    """Refuse to replace a texture file headcast did not write (one ``d``'s manifest does not list) and,
    without ``force``, an earlier texture; True when ``d`` has a reconstruction manifest to list the files in."""
    m = read_manifest(d)
    tracked = m is not None and m["kind"] == recon.KIND
    for name in OUTPUTS:
        if os.path.lexists(d / name):
            if not tracked or name not in m["files"]:
                raise HeadcastError(f"{d} has {name}, which headcast did not write: move it away first")
            if not force:
                raise HeadcastError(f"{d} is textured already: pass --force to replace its texture files")
    return tracked


def _write_outputs(d: Path, write: Callable[[Path], None], force: bool) -> None:
    """Put the files ``write(folder)`` makes into ``d``, all or none, listed in its manifest when it has one."""
    tracked = _check_targets(d, force)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".texture{STAGING_MARK}{os.getpid()}-", dir=d))
        write(staging)
        with staged_files([d / name for name in OUTPUTS], force=True) as tmps:
            for name, tmp in zip(OUTPUTS, tmps):
                os.replace(staging / name, tmp)
            if tracked:  # first: a listed file that is missing is harmless, an unlisted one would be refused
                extend_manifest(d, recon.KIND, OUTPUTS)
    except OSError as e:
        raise HeadcastError(f"cannot write {d}: {reason(e)}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
