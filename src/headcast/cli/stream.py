"""``headcast encode | decode | send | receive | keygen``: parameter streams, in files and live."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from headcast.cli.parser import add_force, param_default
from headcast.core.errors import HeadcastError

logger = logging.getLogger(__name__)
LIVE_PAGE_PORT = 8766  # receive --web: the live page's port


def add_parser(sub) -> None:
    sub.add_parser("encode", help="encode an animation folder as a parameter stream file", arguments=_encode_arguments)
    sub.add_parser("decode", help="decode and verify a stream file", arguments=_decode_arguments)
    sub.add_parser("send", help="track a video or camera and stream it live over WebSocket",
                   arguments=_send_arguments)
    sub.add_parser("receive", help="receive a live stream, rebuild the head, render it into an MP4 "
                                   "and/or show it live in a web page", arguments=_receive_arguments)
    sub.add_parser("keygen", help="make an Ed25519 sender key pair", arguments=_keygen_arguments)


def _encode_arguments(en: argparse.ArgumentParser) -> None:
    from headcast.stream.files import DEFAULT_KEY_INTERVAL, DEFAULT_TARGET_MM, MAX_TARGET_MM, MIN_TARGET_MM, encode_file
    from headcast.stream.live import run_sender
    from headcast.stream.wire import MAX_KEY_INTERVAL, PROFILES

    en.add_argument("anim_dir", help="an animation folder (headcast animate)")
    en.add_argument("--profile", choices=tuple(PROFILES), default=param_default(run_sender, "profile"),
                    help="default %(default)s")
    en.add_argument("--out", required=True, help="output stream file")
    add_force(en, file=True)
    en.add_argument("--recon", help="the reconstruction folder (for lighting and albedo in the init message)")
    en.add_argument("--key", help="Ed25519 private key (default: $HEADCAST_HOME/keys, made on first use)")
    en.add_argument("--sender", default=param_default(encode_file, "sender"), help="sender name in the init message")
    en.add_argument("--target-mm", type=float, default=DEFAULT_TARGET_MM,
                    help=f"compact: vertex error budget, {MIN_TARGET_MM:g}..{MAX_TARGET_MM:g} mm (default %(default)s)")
    en.add_argument("--key-interval", type=int, default=DEFAULT_KEY_INTERVAL,
                    help=f"compact: a keyframe every N frames, 1..{MAX_KEY_INTERVAL} (default %(default)s)")
    en.set_defaults(func=run_encode)


def run_encode(a: argparse.Namespace) -> None:
    from headcast.stream.files import DEFAULT_KEY_INTERVAL, DEFAULT_TARGET_MM, encode_file

    if a.profile == "paper" and (a.target_mm != DEFAULT_TARGET_MM or a.key_interval != DEFAULT_KEY_INTERVAL):
        raise HeadcastError("--target-mm and --key-interval are for --profile compact (paper sends raw float32)")

    rep = encode_file(Path(a.anim_dir), a.profile, Path(a.out), key_path=a.key, recon_dir=Path(a.recon) if a.recon else None,
                      target_mm=a.target_mm, key_interval=a.key_interval, sender=a.sender, force=a.force)
    logger.info(f"headcast: wrote {a.out}: {stream_summary(rep)}")


def _decode_arguments(de: argparse.ArgumentParser) -> None:
    de.add_argument("stream", help="a stream file (headcast encode)")
    de.add_argument("--out", required=True, help="output folder")
    add_force(de)
    de.add_argument("--trust", help="the sender's public key (default: trust on first use)")
    de.set_defaults(func=run_decode)


def run_decode(a: argparse.Namespace) -> None:
    from headcast.stream.files import decode_file

    rep = decode_file(Path(a.stream), Path(a.out), trust_key=a.trust, force=a.force)
    logger.info(f"headcast: decoded into {a.out}/: {stream_summary(rep)}")


def stream_summary(rep: dict) -> str:
    """The headline figures of an encode/decode report, as ``name value`` pairs."""
    keys = ("profile", "frames", "frame_payload_bytes_mean", "frame_bytes_mean", "kbit_s_total",
            "ratio_raw_256_total", "vertex_error_mm_mean")
    return ", ".join(f"{k} {rep[k]:.4g}" if isinstance(rep.get(k), float) else f"{k} {rep[k]}"
                     for k in keys if k in rep)


def _send_arguments(se: argparse.ArgumentParser) -> None:
    from headcast.stream.live import run_sender
    from headcast.stream.wire import PROFILES

    se.add_argument("--video", help="video file")
    se.add_argument("--camera", type=int, help="camera index")
    se.add_argument("--to", required=True, help="ws://HOST:PORT of a receiver")
    se.add_argument("--recon", help="the reconstruction to send (identity and appearance)")
    se.add_argument("--key", help="Ed25519 private key")
    se.add_argument("--sender", default=param_default(run_sender, "sender"), help="sender name")
    se.add_argument("--profile", choices=tuple(PROFILES), default=param_default(run_sender, "profile"))
    se.add_argument("--max-frames", type=int, help="stop after N frames (at least 1)")
    se.set_defaults(func=run_send)


def run_send(a: argparse.Namespace) -> None:
    from headcast.stream.live import run_sender

    if (a.video is None) == (a.camera is None):
        raise HeadcastError("give exactly one of --video FILE or --camera N")
    run_sender(a.to, video=a.video, camera=a.camera, recon_dir=a.recon, key_path=a.key, sender=a.sender,
               profile=a.profile, max_frames=a.max_frames)


def _receive_arguments(rc: argparse.ArgumentParser) -> None:
    from headcast.stream.live import MAX_RENDER_SIZE, run_receiver

    rc.add_argument("--listen", required=True, help="HOST:PORT to listen on (e.g. 127.0.0.1:8765)")
    rc.add_argument("--out", help="output MP4 (required unless --web); written whole when the receiver stops "
                                  "(also on Ctrl-C)")
    add_force(rc, file=True)
    rc.add_argument("--web", action="store_true", help="also show the stream live in the viewer page "
                                                      "(http://127.0.0.1:PORT/live?token=..., logged at start)")
    rc.add_argument("--web-port", type=int, default=LIVE_PAGE_PORT,
                    help="port of the live page, 0..65535 (default %(default)s; 0: any)")
    rc.add_argument("--trust", help="the sender's public key (default: trust on first use: the first sender)")
    rc.add_argument("--accept-new", action="store_true",
                    help="trust on first use: also trust new sender names once others are trusted")
    rc.add_argument("--idle-timeout", type=float,
                    help="stop after this many seconds without a message from the sender, once one has connected "
                         "(default: listen until Ctrl-C)")
    rc.add_argument("--model", default=param_default(run_receiver, "model_spec"),
                    help="the head model to have ready (default %(default)s); a stream may name another model "
                         "of the model folder")
    rc.add_argument("--size", type=int, default=param_default(run_receiver, "size"),
                    help=f"rendered frame side, 16..{MAX_RENDER_SIZE} pixels (default %(default)s)")
    rc.add_argument("--max-lag", type=int,
                    help="frames the renderer may fall behind before it skips to the newest (default: 0.1 s of "
                         "frames; 0 = never skip, the MP4 gets every frame however late)")
    rc.set_defaults(func=run_receive)


def run_receive(a: argparse.Namespace) -> None:
    from functools import partial

    from headcast.io.validate import check_number
    from headcast.stream.live import run_receiver
    from headcast.view.live import LiveWeb

    if a.out is None and not a.web:
        raise HeadcastError("give --out FILE.mp4, --web, or both")
    if a.web:
        check_number(a.web_port, "--web-port", 0, 65535, integer=True)
    run_receiver(a.listen, Path(a.out) if a.out else None, trust_path=a.trust, idle_timeout=a.idle_timeout,
                 model_spec=a.model, size=a.size, max_lag=a.max_lag,
                 web=partial(LiveWeb, a.web_port) if a.web else None, force=a.force, accept_new=a.accept_new)


def _keygen_arguments(kg: argparse.ArgumentParser) -> None:
    kg.add_argument("--out", help="private key path (default $HEADCAST_HOME/keys/sender_ed25519.pem)")
    add_force(kg, file=True)
    kg.set_defaults(func=run_keygen)


def run_keygen(a: argparse.Namespace) -> None:
    from headcast.stream import auth

    priv, pub = auth.generate_key(a.out, overwrite=a.force)
    logger.info(f"headcast: private key {priv}, public key {pub} (fingerprint "
                f"{auth.fingerprint(auth.load_public_key(pub))}); give the public key to receivers (--trust)")
