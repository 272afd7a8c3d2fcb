"""``headcast send`` and ``headcast receive``: the live link's two commands.

A sender tracks a video file or camera as it plays (:mod:`~headcast.stream.source`) and streams to a
receiver over WebSocket (:mod:`~headcast.stream.sender`); the receiver authenticates and decodes
(:mod:`~headcast.stream.receiver`), renders into an MP4 (:mod:`~headcast.stream.renderer`) and may
also show the stream in a page that the caller builds (the CLI passes the viewer's live page).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.io.outputs import check_output_file
from headcast.io.validate import check_number
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.stream import auth
from headcast.stream.metrics import ReceiveStats, SendStats
from headcast.stream.receiver import Sink, receive
from headcast.stream.sender import send
from headcast.stream.source import primed, track_source

logger = logging.getLogger(__name__)
MAX_RENDER_SIZE = 4096  # receive --size: the rendered frame's side in pixels


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); HeadcastError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HeadcastError(f"--listen {listen!r} must be HOST:PORT")
    return host or "127.0.0.1", int(port)


def run_sender(to: str, video: str | None = None, camera: int | None = None, recon_dir: str | None = None,
               key_path: str | None = None, sender: str = "default", profile: str = "compact",
               model_spec: str | None = None, max_frames: int | None = None) -> SendStats:
    """``headcast send``: track ``video`` (or camera ``camera``) and stream to ``to`` (``ws://HOST:PORT``).

    The head sent is the reconstruction in ``recon_dir`` (its beta, lighting and albedo); without it,
    the model's mean head."""
    from headcast.stream.files import make_init, read_appearance

    if (video is None) == (camera is None):
        raise HeadcastError("give exactly one of --video FILE or --camera N")
    if not to.startswith(("ws://", "wss://")):
        raise HeadcastError(f"--to {to!r} must be a ws:// URL")
    if max_frames is not None:
        check_number(max_frames, "--max-frames", 1, None, integer=True)
    if camera is not None:  # OpenCV crashes (SIGSEGV) on a negative index
        check_number(camera, "--camera", 0, None, integer=True)
    beta, name = None, model_spec
    if recon_dir is not None:
        from headcast.io.recon import read_params

        p = read_params(recon_dir)
        beta, name = p.beta, model_spec or p.model
    model = resolve_model(name or DEFAULT_MODEL)
    if beta is None:
        beta = np.zeros(model.n_shape)
    key = auth.load_private_key(key_path)
    logger.info(f"send: identity {auth.fingerprint(auth.public_bytes(key))} ({sender!r})")
    src, fps = track_source(video if video is not None else int(camera), model, max_frames=max_frames)
    # the compact steps for the placement depend on the head's scale in the image: track up to the
    # first frame with a face before connecting
    src, first = primed(src)
    meta = {"beta": beta, "model": model.name, "eta_kind": 0, "fps": fps, "n_expr": model.n_expr}
    info = make_init(meta, profile, read_appearance(recon_dir), model, sender, eta_ref=first.eta)
    return asyncio.run(send(src, info, key, to))


def run_receiver(listen: str, out: str | None, trust_path: str | None = None, idle_timeout: float | None = None,
                 max_frames: int | None = None, model_spec: str = DEFAULT_MODEL, size: int = 512,
                 max_lag: int | None = None, web: Callable[..., Sink] | None = None,
                 force: bool = False, accept_new: bool = False) -> ReceiveStats:
    """``headcast receive``: listen on HOST:PORT and render what the trusted sender streams into ``out``
    (written whole at the end, also when Ctrl-C or SIGTERM stops the recording; ``force`` replaces an
    existing file; a target that cannot be written, or whose folder does not exist, is refused before
    anything else, as is a trust store that cannot be read).

    Trust: the key in ``trust_path``, else trust on first use: the first sender, and later new senders
    only with ``accept_new``.
    ``web``: makes the page that also shows the stream, given the receiver's model (e.g.
    ``functools.partial(headcast.view.live.LiveWeb, port)``): a :class:`~headcast.stream.receiver.Sink`
    that is an async context manager; ``out`` may then be None (no MP4, nothing rendered here)."""
    from pathlib import Path

    if out is None and web is None:
        raise HeadcastError("give --out FILE.mp4, --web, or both")
    host, port = parse_listen(listen)
    if idle_timeout is not None:
        check_number(idle_timeout, "--idle-timeout", 0.1, None, unit="seconds")
    check_number(size, "--size", 16, MAX_RENDER_SIZE, integer=True, unit="pixels")
    if max_lag is not None:
        check_number(max_lag, "--max-lag", 0, None, integer=True)
    if out is not None:
        check_output_file(out, force=force, inputs=(trust_path,))  # at the start, not after the session
        if not Path(out).absolute().parent.is_dir():
            raise HeadcastError(f"the folder of --out {out} does not exist: make it first")
    trust = auth.Trust.from_file(trust_path, accept_new=accept_new)
    if trust.pinned is not None:
        logger.info("receive: trusting only %s", auth.fingerprint(trust.pinned))
    else:
        known = trust.known()  # a store that cannot be read stops here, before listening
        logger.info("receive: trust on first use (%s: %d sender(s) trusted; new senders %s)", trust.store, len(known),
                    "accepted (--accept-new)" if accept_new else "refused" if known else "refused after the first")
    model = resolve_model(model_spec, build_missing=model_spec == DEFAULT_MODEL)  # ready before a sender comes
    page = web(model) if web is not None else None
    try:
        return asyncio.run(receive(host, port, out, trust, idle_timeout=idle_timeout, max_frames=max_frames,
                                   model=model, size=size, max_lag=max_lag, web=page, render=out is not None,
                                   force=force))
    except KeyboardInterrupt:
        logger.info("receive: stopped")
        raise
