"""``headcast animate | export | view``: drive a reconstructed head, export it as glTF, look at it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from headcast.cli.parser import add_force, field_default, param_default

logger = logging.getLogger(__name__)
FORMAT_SUFFIXES = {".glb": "glb", ".csv": "livelink", ".npz": "flame-npz"}  # export --out suffix -> its format


def add_parser(sub) -> None:
    sub.add_parser("animate", help="drive a reconstructed head from an RGB video", arguments=_animate_arguments)
    sub.add_parser("export", help="write a binary glTF (.glb): textured head, morph targets, skin, animation; "
                                  "or an animation as a Live Link Face CSV or a FLAME parameter file",
                   arguments=_export_arguments)
    sub.add_parser("view", help="show a reconstruction or .glb in the browser (local, offline)",
                   arguments=_view_arguments)


def _animate_arguments(an: argparse.ArgumentParser) -> None:
    from headcast.animate.fit import TrackConfig
    from headcast.render.gl import DEFAULT_LIGHT, LIGHTS

    an.add_argument("recon_dir", help="a reconstruction folder")
    an.add_argument("video", help="a video file with a face (any person), a Live Link Face .csv take or a "
                                  "flame_param.npz")
    an.add_argument("--out", required=True, help="output folder")
    add_force(an)
    an.add_argument("--model", help="expected head model (default: the folder's own)")
    an.add_argument("--threshold", type=float, default=field_default(TrackConfig, "threshold"),
                    help="stop a frame at Loss5 below this (default %(default)s)")
    an.add_argument("--max-iters", type=int,
                    help=f"iteration cap per frame (default {field_default(TrackConfig, 'max_iters')})")
    an.add_argument("--max-frames", type=int, help="only the first N frames (at least 1)")
    an.add_argument("--no-video", action="store_true", help="parameters only, no MP4")
    an.add_argument("--fps", type=float, help="a .csv take's frame rate (default: what its timecodes imply)")
    an.add_argument("--light", choices=LIGHTS, default=DEFAULT_LIGHT,
                    help="the video's lighting: the texture stage's fitted SH light (when the folder has one) "
                         "or a neutral white light (default %(default)s)")
    an.set_defaults(func=run_animate)


def run_animate(a: argparse.Namespace) -> None:
    from headcast.animate import animate
    from headcast.animate.drivers import drive, is_driver_file

    if is_driver_file(a.video):
        from headcast.animate.fit import TrackConfig
        from headcast.core.errors import HeadcastError

        if a.threshold != field_default(TrackConfig, "threshold") or a.max_iters is not None:
            raise HeadcastError("--threshold and --max-iters are for a video (they stop each frame's tracking)")
        rep = drive(Path(a.recon_dir), Path(a.video), Path(a.out), model_spec=a.model, write_video=not a.no_video,
                    fps=a.fps, max_frames=a.max_frames, force=a.force, light=a.light)
        logger.info(f"headcast: wrote {a.out}/ ({rep['frames']} frames)")
        return
    if a.fps is not None:
        from headcast.core.errors import HeadcastError

        raise HeadcastError("--fps is for a .csv take (a video states its own frame rate)")
    rep = animate(Path(a.recon_dir), Path(a.video), Path(a.out), model_spec=a.model, threshold=a.threshold,
                  max_iters=a.max_iters, max_frames=a.max_frames, write_video=not a.no_video, force=a.force,
                  light=a.light)
    logger.info(f"headcast: wrote {a.out}/ ({rep.get('frames', '?')} frames)")


def _export_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("result_dir", help="a reconstruction folder (glb), or an animation folder (livelink, flame-npz)")
    e.add_argument("--format", choices=tuple(FORMAT_SUFFIXES.values()),
                   help="glb: the head as binary glTF; livelink: a Live Link Face CSV take (ARKit curves) of an "
                        "animation folder; flame-npz: its FLAME parameters (flame_param.npz) (default: from --out's "
                        "suffix, .glb / .csv / .npz; another suffix needs --format)")
    e.add_argument("--anim", help="an animation folder (headcast animate) to add as glTF animation")
    e.add_argument("--out", required=True, help="output .glb, .csv or .npz")
    add_force(e, file=True)
    e.set_defaults(func=run_export)


def export_format(out: str, given: str | None) -> str:
    """The format to write ``out`` in: ``given`` (``--format``, any file name), else the one its suffix names;
    HeadcastError when ``given`` and a known suffix disagree (a CSV named .glb, say), and when neither names
    one (``head.xyz`` is not silently a GLB)."""
    from headcast.core.errors import HeadcastError

    suffix = Path(out).suffix.lower()
    named = FORMAT_SUFFIXES.get(suffix)
    if given and named and given != named:
        raise HeadcastError(f"--out {out} names a {named} file but --format is {given}")
    if not given and not named:
        raise HeadcastError(f"--out {out}: {f'suffix {suffix!r}' if suffix else 'no suffix'} names no export format; "
                            f"use {' / '.join(FORMAT_SUFFIXES)} or pass --format")
    return given or named


def run_export(a: argparse.Namespace) -> None:
    from headcast.export.gltf import export_glb

    a.format = export_format(a.out, a.format)
    if a.format != "glb":
        from headcast.core.errors import HeadcastError
        from headcast.export.livelink import export_flame_npz, export_livelink

        if a.anim:
            raise HeadcastError(f"--anim is for --format glb; for {a.format} the folder given is the animation")
        (export_livelink if a.format == "livelink" else export_flame_npz)(Path(a.result_dir), Path(a.out),
                                                                           force=a.force)
        logger.info(f"headcast: wrote {a.out}")
        return
    out = export_glb(Path(a.result_dir), Path(a.anim) if a.anim else None, Path(a.out), force=a.force)
    logger.info(f"headcast: wrote {out} ({out.stat().st_size / 1e6:.1f} MB); look at it with: headcast view {out}")


def _view_arguments(v: argparse.ArgumentParser) -> None:
    from headcast.view import showing

    v.add_argument("target", help="a reconstruction folder or a .glb file")
    v.add_argument("--anim", help="an animation folder to play")
    v.add_argument("--port", type=int, default=param_default(showing, "port"),
                   help="port on 127.0.0.1, 0..65535 (default: any free one)")
    v.add_argument("--open", action="store_true", help="open the page in the default browser")
    v.set_defaults(func=run_view)


def run_view(a: argparse.Namespace) -> None:
    from headcast.io.validate import check_number
    from headcast.view import showing, wait_until_stopped

    if a.port is not None:
        check_number(a.port, "--port", 0, 65535, integer=True)
    with showing(Path(a.target), Path(a.anim) if a.anim else None, port=a.port) as (glb, url):
        print(f"headcast: showing {glb.name} at {url} (Ctrl-C to stop)", flush=True)  # a script may wait for it
        if a.open:
            import webbrowser

            webbrowser.open(url)
        wait_until_stopped()
