"""``headcast export ANIM_DIR --format livelink | flame-npz``: an animation folder as a Live Link Face CSV
take (:mod:`headcast.io.livelink`, through the model's ARKit map :mod:`headcast.model.arkit`) or as a FLAME
parameter file (:mod:`headcast.io.flame_params`, FLAME-family models only). docs/interop.md has the
conventions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from headcast.core.camera import FLIP, Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.params import pose_slice
from headcast.io import anim as anim_io
from headcast.io.flame_params import FlameParams, flame_param_arrays
from headcast.io.livelink import Take, livelink_text
from headcast.io.outputs import check_output_file, staged_file
from headcast.model.head_model import HeadModel

logger = logging.getLogger(__name__)

NOMINAL_SIZE = 512  # the camera of an animation folder that names none (written before it kept one)


def _read(anim_dir: str | Path, out: str | Path, force: bool) -> tuple[anim_io.Animation, HeadModel, list[Path]]:
    from headcast.model.registry import DEFAULT_MODEL, resolve_model

    inputs = [Path(anim_dir) / anim_io.PARAMS]
    check_output_file(out, force=force, inputs=inputs)  # refuse before the work
    anim = anim_io.read_animation(anim_dir)
    model = resolve_model(anim.model or DEFAULT_MODEL)
    anim.check_expressions(model.n_expr)
    return anim, model, inputs


def export_livelink(anim_dir: str | Path, out: str | Path, force: bool = False) -> dict:
    """Write the animation in ``anim_dir`` as a Live Link Face CSV at its frame rate; returns the ARKit map's
    report (kind, and for a derived map its fit error)."""
    from headcast.model.arkit import arkit_map

    anim, model, inputs = _read(anim_dir, out, force)
    amap = arkit_map(model)
    curves, rotations = amap.curves(anim.theta, anim.psi)
    text = livelink_text(Take(anim.times, curves, rotations, anim.fps))
    with staged_file(out, force=force, inputs=inputs) as tmp:
        tmp.write_text(text)
    logger.info(f"export: {anim.n_frames} frames at {anim.fps:g} fps as Live Link Face curves "
                f"({'by name' if amap.kind == 'named' else 'linear map'} from model {model.name!r})")
    return amap.report


def animation_camera(anim: anim_io.Animation) -> Intrinsics:
    """The camera an animation folder keeps (``camera_K`` (3, 3), ``image_size`` (2,)) or a nominal
    512 x 512 one (focal length = image side) for folders without one."""
    K, size = anim.extras.get("camera_K"), anim.extras.get("image_size")
    if K is None or size is None or np.shape(K) != (3, 3) or np.shape(size) != (2,):
        logger.warning("export: %s keeps no camera; using a nominal %d x %d one", anim.source, NOMINAL_SIZE,
                       NOMINAL_SIZE)
        c = (NOMINAL_SIZE - 1) / 2
        return Intrinsics(NOMINAL_SIZE, NOMINAL_SIZE, c, c, NOMINAL_SIZE, NOMINAL_SIZE)
    K = np.asarray(K, dtype=np.float64)
    return Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], int(size[0]), int(size[1])).check(f"{anim.source}: camera")


def placement_to_flame(placement: np.ndarray, K: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(translation (T, 3) model-frame metres, scale (T,)) of headcast placements: a similarity (T, 4)
    exactly (``translation = FLIP t / s``); an eta (T, 3) (s px/m, tx, ty px) as the perspective camera
    ``K`` sees it at the depth where its scale holds (``tz = fx / s``), about the model origin."""
    pl = np.asarray(placement, dtype=np.float64)
    if pl.shape[1] == 4:
        s, t = pl[:, 0], pl[:, 1:]
    else:
        s = np.ones(len(pl))
        tz = K.fx / pl[:, 0]
        t = np.stack([(pl[:, 1] - K.cx) * tz / K.fx, (pl[:, 2] - K.cy) * tz / K.fy, tz], axis=1)
    return (t @ FLIP.astype(np.float64)) / s[:, None], s


def export_flame_npz(anim_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the animation in ``anim_dir`` (of a FLAME-family model) as ``flame_param.npz``."""
    anim, model, inputs = _read(anim_dir, out, force)
    if model.meta.get("family") != "FLAME":
        raise HeadcastError(f"flame-npz holds FLAME parameters and model {model.name!r} is not a FLAME model "
                            "(export its curves with --format livelink instead)")
    K = animation_camera(anim)
    translation, scale = placement_to_flame(anim.placement, K)
    th = anim.theta
    beta = anim.beta if anim.beta is not None else np.zeros(model.n_shape)
    p = FlameParams(beta, anim.psi, th[:, pose_slice("root")], th[:, pose_slice("neck")], th[:, pose_slice("jaw")],
                    th[:, pose_slice("left_eye").start:pose_slice("right_eye").stop], translation, scale, anim.times,
                    anim.fps, K)
    with staged_file(out, force=force, inputs=inputs) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **flame_param_arrays(p, model.n_vertices))
    logger.info(f"export: {anim.n_frames} frames of FLAME parameters ({model.n_expr} expressions) for {model.name!r}")
    return Path(out)
