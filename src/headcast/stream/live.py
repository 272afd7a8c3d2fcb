"""Live telepresence over WebSockets: a sender that tracks and streams, a receiver that renders.

Connection: the sender connects to the receiver (``ws://HOST:PORT``); the receiver speaks first
with a HELLO, the sender answers with its signed INIT and then streams FRAME messages, one
WebSocket binary message each. When the connection drops the sender reconnects (backoff 0.2 s
doubling to 2 s), runs a new handshake (new session key) and starts with a keyframe; frames made
while disconnected are dropped, as a live link would. The receiver renders every decoded frame
into an MP4 at the stream's frame rate (a lost frame repeats the previous picture) in a worker
thread, so decoding never waits for rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.session import DecodedFrame, ReceiverSession, SenderSession
from headcast.stream.wire import InitInfo, ProtocolError

Log = Callable[[str], None]


def _ws():
    try:
        import websockets
        from websockets.asyncio.client import connect
        from websockets.asyncio.server import serve
    except ImportError:
        raise HeadcastError("live streaming needs the 'websockets' package (pip install websockets)") from None
    return websockets, connect, serve


# -- sources -----------------------------------------------------------------------------------
def paced(frames: Iterator[K.ParamFrame], realtime: bool = True) -> Iterator[tuple[K.ParamFrame, float]]:
    """(frame, wall time it became available): frames released at their own timestamps."""
    t0 = None
    for f in frames:
        if realtime:
            now = time.perf_counter()
            if t0 is None:
                t0 = now - f.t
            wait = t0 + f.t - now
            if wait > 0:
                time.sleep(wait)
        yield f, time.perf_counter()


def track_source(video: str | int, model, fps_hint: float | None = None, calibration_frames: int = 10,
                 max_frames: int | None = None, log: Log | None = None) -> tuple[Iterator[tuple[K.ParamFrame, float]], float]:
    """Track a video file (or camera index) as it plays: (iterator of (ParamFrame, wall time), fps).

    Uses the animation stage's per-frame :class:`~headcast.animate.track.Tracker`; the driver's
    identity is calibrated on the first ``calibration_frames`` frames with a face (they are held
    back, then sent). A file is paced at its own frame rate, like a camera.
    """
    from headcast.animate.fit import Observation
    from headcast.animate.track import Tracker
    from headcast.animate.video import VideoLandmarker, read_frames, video_info

    say = log or (lambda s: None)
    if isinstance(video, int):
        import cv2

        cap = cv2.VideoCapture(video)
        if not cap.isOpened():
            raise HeadcastError(f"cannot open camera {video}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or fps_hint or 30.0)

        def frames():
            n = 0
            while max_frames is None or n < max_frames:
                ok, img = cap.read()
                if not ok:
                    break
                n += 1
                yield img[..., ::-1].copy()
            cap.release()
        it, realtime = frames(), False  # a camera paces itself
    else:
        fps = video_info(video).fps
        it, realtime = read_frames(video, max_frames), True

    def gen():
        tracker = Tracker(model)
        lm = VideoLandmarker()
        t_start = time.perf_counter()
        held: list[tuple[int, Observation | None, float]] = []
        calibrated = False
        try:
            for i, img in enumerate(it):
                if realtime:  # a file plays at its frame rate
                    wait = t_start + i / fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                t_cap = time.perf_counter()
                det = lm(img)
                obs = None if det is None else Observation(det.landmarks, det.pupils)
                if not calibrated:
                    held.append((i, obs, t_cap))
                    faces = [o for _, o, _ in held if o is not None]
                    if len(faces) >= calibration_frames:
                        tracker.calibrate(faces)
                        say(f"send: driver calibrated on {len(faces)} frames")
                        calibrated = True
                        if realtime:  # the file starts playing now: no burst to catch up with the clock
                            t_start = time.perf_counter() - (i + 1) / fps
                        for j, o, tc in held:
                            yield _param_frame(j, j / fps, tracker.step(o)), tc
                        held = []
                    continue
                yield _param_frame(i, i / fps, tracker.step(obs)), t_cap
            if not calibrated:  # short video: calibrate on what there is
                faces = [o for _, o, _ in held if o is not None]
                if faces:
                    tracker.calibrate(faces)
                for j, o, tc in held:
                    yield _param_frame(j, j / fps, tracker.step(o)), tc
        finally:
            lm.close()

    return gen(), fps


def primed(source: Iterator[tuple[K.ParamFrame, float]]) -> tuple[Iterator, K.ParamFrame]:
    """Run ``source`` up to its first frame with a face (calibration happens there, before any
    connection): (the same stream from its start, that frame); HeadcastError when there is none."""
    head = []
    for item in source:
        head.append(item)
        if item[0].face:
            return itertools.chain(head, source), item[0]
    raise HeadcastError("no face found in the video; nothing to send")


def _param_frame(seq: int, t: float, tf) -> K.ParamFrame:
    return K.ParamFrame(seq, t, tf.theta, tf.psi, tf.eta, bool(tf.face_found))


# -- sender ------------------------------------------------------------------------------------
@dataclass
class SendStats:
    frames: int = 0
    sent: int = 0
    dropped: int = 0
    sessions: int = 0
    bytes: int = 0
    sent_at: dict = field(default_factory=dict)   # seq -> wall time the frame was available


async def send(source: Iterator[tuple[K.ParamFrame, float]], template: InitInfo, key, url: str,
               log: Log | None = None, connect_timeout: float = 10.0) -> SendStats:
    """Stream ``source`` to the receiver at ``url``, reconnecting when the connection drops."""
    websockets, connect, _ = _ws()
    say = log or (lambda s: None)
    stats = SendStats()
    link: dict = {"ws": None, "session": None}
    done = asyncio.Event()
    first_contact = asyncio.Event()

    async def connector():
        backoff = 0.2
        while not done.is_set():
            try:
                async with connect(url, open_timeout=connect_timeout, max_size=1 << 16) as ws:
                    hello = await asyncio.wait_for(ws.recv(), connect_timeout)
                    sess = SenderSession(template, key)
                    await ws.send(sess.init(hello if isinstance(hello, bytes) else b""))
                    link["ws"], link["session"] = ws, sess
                    stats.sessions += 1
                    first_contact.set()
                    say(f"send: connected to {url} (session {stats.sessions})")
                    backoff = 0.2
                    await ws.wait_closed()
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, ProtocolError) as e:
                if not done.is_set():
                    say(f"send: no connection to {url} ({e.__class__.__name__}: {e}); retrying in {backoff:.1f} s")
            link["ws"] = None
            if done.is_set():
                break
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 2.0)

    conn = asyncio.create_task(connector())
    try:
        await asyncio.wait_for(first_contact.wait(), connect_timeout)
    except asyncio.TimeoutError:
        done.set()
        conn.cancel()
        raise HeadcastError(f"no receiver at {url} (start 'headcast receive' first)") from None
    it = iter(source)
    end = object()
    while True:
        item = await asyncio.to_thread(next, it, end)
        if item is end:
            break
        f, t_avail = item
        stats.frames += 1
        ws, sess = link["ws"], link["session"]
        if ws is None:
            stats.dropped += 1
            continue
        msg = sess.frame(f)
        try:
            await ws.send(msg)
            stats.sent += 1
            stats.bytes += len(msg)
            stats.sent_at[f.seq] = t_avail
        except websockets.exceptions.ConnectionClosed:
            stats.dropped += 1
            link["ws"] = None
    done.set()
    ws = link["ws"]
    if ws is not None:
        await ws.close()
    conn.cancel()
    try:
        await conn
    except (asyncio.CancelledError, Exception):
        pass
    say(f"send: {stats.sent} of {stats.frames} frames sent in {stats.sessions} session(s), {stats.bytes} bytes")
    return stats


# -- receiver ----------------------------------------------------------------------------------
def init_head(info: InitInfo, model=None):
    """The head model an INIT names (``model`` when the names match, else resolved here) and the sent beta
    zero-padded to its components; HeadcastError when the sizes disagree."""
    if model is None or model.name != info.model:
        from headcast.model.registry import resolve_model

        model = resolve_model(info.model, build_missing=info.model == "ict")
    if model.n_shape < info.n_shape or model.n_expr != info.n_expr:
        raise HeadcastError(f"model {info.model!r} here has {model.n_shape}/{model.n_expr} components, "
                            f"the stream {info.n_shape}/{info.n_expr}")
    beta = np.zeros(model.n_shape)
    beta[:info.n_shape] = info.beta
    return model, beta


class ReceivedHeadRenderer:
    """Rebuilds the head from an INIT (model, beta, albedo) and renders frames (theta, psi) with the
    animation stage's fixed face camera (OpenGL)."""

    def __init__(self, info: InitInfo, size: int = 512, model=None):
        from headcast.animate.pipeline import HeadView, Subject
        from headcast.core.params import HeadParams

        model, beta = init_head(info, model)
        texture = self._texture(info, model)
        params = HeadParams(beta, np.zeros(model.n_expr), np.zeros(15), model=info.model)
        self.view = HeadView(Subject(params, model, texture), size)

    @staticmethod
    def _texture(info: InitInfo, model):
        if not info.albedo_png or model.uv is None:
            return None
        import io

        import imageio.v3 as iio

        from headcast.texture.atlas import build_atlas

        img = np.asarray(iio.imread(io.BytesIO(info.albedo_png)))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        atlas = build_atlas(model.uv, model.uv_faces, model.v_template, model.faces)
        return img[..., :3].astype(np.uint8), atlas.uv, atlas.uv_faces

    def render(self, f: DecodedFrame) -> np.ndarray:
        return self.view.render(self.view.vertices(f.theta[None], f.psi[None])[0])

    def release(self) -> None:
        self.view.release()


@dataclass
class ReceiveStats:
    frames: int = 0
    written: int = 0
    rejected: int = 0
    sessions: int = 0
    skipped: int = 0    # decoded but not rendered: the renderer was behind and showed a newer frame
    arrived_at: dict = field(default_factory=dict)    # seq -> wall time decoded
    rendered_at: dict = field(default_factory=dict)   # seq -> wall time rendered
    reasons: list = field(default_factory=list)


LAG_SECONDS = 0.1  # default renderer backlog before it skips to the newest frame (live view over completeness)


class _RenderWorker(threading.Thread):
    """Renders decoded frames, in order, into an MP4 at the stream's rate. While its backlog is at
    most ``max_lag`` frames it renders every frame; beyond that it jumps to the newest one (bounded
    latency). Lost or skipped frames repeat the previous picture, so the video keeps its timing."""

    def __init__(self, out: Path | None, stats: ReceiveStats, log: Log, size: int, model, max_lag: int | None):
        super().__init__(daemon=True)
        self.q: queue.Queue = queue.Queue()
        self.out, self.stats, self.log, self.size, self.model = out, stats, log, size, model
        self.max_lag = max_lag
        self.error: BaseException | None = None

    def run(self):
        writer = renderer = ctx = None
        last_seq, last_img = None, None
        pending: list[DecodedFrame] = []
        stop = False
        try:
            while not (stop and not pending):
                items = []
                if not pending and not stop:
                    items.append(self.q.get())
                while True:
                    try:
                        items.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                for item in items:
                    if item is None:
                        stop = True
                        continue
                    kind, obj = item
                    if kind == "frame":
                        pending.append(obj)
                    elif renderer is None:  # the head is the same for every session of one sender
                        renderer = ReceivedHeadRenderer(obj, self.size, self.model)
                        lag = self.max_lag if self.max_lag is not None else max(1, round(obj.fps * LAG_SECONDS))
                        if self.out is not None:
                            import imageio.v2 as iio2

                            writer = iio2.get_writer(self.out, fps=obj.fps, codec="libx264", quality=7,
                                                     macro_block_size=16)
                if renderer is None or not pending:
                    pending.clear()
                    continue
                if lag and len(pending) > lag:
                    self.stats.skipped += len(pending) - 1
                    pending = pending[-1:]
                f = pending.pop(0)
                img = renderer.render(f)
                self.stats.rendered_at[f.seq] = time.perf_counter()
                if writer is not None:
                    if last_seq is not None and last_img is not None:
                        for _ in range(min(max(0, f.seq - last_seq - 1), 250)):
                            writer.append_data(last_img)
                    writer.append_data(img)
                    self.stats.written += 1
                last_seq, last_img = f.seq, img
        except BaseException as e:  # surfaced by receive()
            self.error = e
        finally:
            if writer is not None:
                writer.close()
            if renderer is not None:
                renderer.release()
            if ctx is not None:
                ctx.__exit__(None, None, None)


async def receive(host: str, port: int, out: str | Path | None, trust: auth.Trust, log: Log | None = None,
                  max_frames: int | None = None, idle_timeout: float | None = None, size: int = 512,
                  model=None, ready: Callable | None = None, render: bool = True,
                  max_lag: int | None = None, web=None) -> ReceiveStats:
    """Listen on ``host:port``, accept authenticated senders, render into ``out`` (MP4).

    Stops after ``max_frames`` decoded frames, or ``idle_timeout`` seconds without a message once a
    sender has been seen (or on cancellation). Rejected messages are logged with their reason.
    ``max_lag``: frames the renderer may fall behind before it skips to the newest (default:
    ``LAG_SECONDS`` of frames, 3 at 30 fps; 0: never skip, so the MP4 has every frame however late).
    ``model``: a preloaded model, used when the stream names it.
    ``web``: a :class:`headcast.view.live.LiveWeb` (not yet started) that also shows the stream in a web
    page; it runs in this event loop for as long as the receiver listens.
    """
    websockets, _, serve = _ws()
    say = log or (lambda s: None)
    stats = ReceiveStats()
    worker = _RenderWorker(Path(out) if out else None, stats, say, size, model, max_lag) if render else None
    if worker:
        worker.start()
    stop = asyncio.Event()
    last_msg = [None]

    def reject(line: str) -> None:
        stats.rejected += 1
        stats.reasons.append(line)
        say(f"receive: {line}")

    async def handler(ws):
        rx = ReceiverSession(trust, log=lambda s: None if s.startswith("rejected") else say(f"receive: {s}"))
        await ws.send(rx.hello())
        try:
            async for msg in ws:
                last_msg[0] = time.perf_counter()
                if not isinstance(msg, bytes):
                    reject("rejected: text message")
                    continue
                had_info = rx.info
                try:
                    frames = rx.handle(msg)
                except ProtocolError as e:
                    reject(f"rejected: {e}")
                    continue
                if rx.info is not None and rx.info is not had_info:
                    stats.sessions += 1
                    if worker:
                        worker.q.put(("init", rx.info))
                    if web is not None:
                        web.init(rx.info)
                now = time.perf_counter()
                for f in frames:
                    stats.frames += 1
                    stats.arrived_at[f.seq] = now
                    if worker:
                        worker.q.put(("frame", f))
                    if web is not None:
                        web.frame(f)
                if max_frames is not None and stats.frames >= max_frames:
                    stop.set()
                    break
        except websockets.exceptions.ConnectionClosed:
            pass
        say("receive: sender disconnected")

    async with contextlib.AsyncExitStack() as stack:
        if web is not None:
            await stack.enter_async_context(web)
        server = await stack.enter_async_context(serve(handler, host, port, max_size=1 << 24))
        say(f"receive: listening on ws://{host}:{port}")
        if ready is not None:
            ready(server)  # the server (its .connections), e.g. to cut a link in a test
        while not stop.is_set():
            await asyncio.sleep(0.05)
            if idle_timeout is not None and last_msg[0] is not None and time.perf_counter() - last_msg[0] > idle_timeout:
                break
    if worker:
        worker.q.put(None)
        await asyncio.to_thread(worker.join)
        if worker.error is not None:
            raise worker.error
    say(f"receive: {stats.frames} frames decoded, {stats.written} written, {stats.rejected} rejected")
    return stats


def latency_report(sent: SendStats, got: ReceiveStats, warmup: int = 25) -> dict:
    """End-to-end latency (frame available at the sender -> decoded, -> rendered) in ms, over all frames
    and after the first ``warmup`` frames (the receiver builds the head and its renderer on the INIT),
    and the sustained rendering rate."""
    seqs = sorted(sent.sent_at)
    steady = set(seqs[warmup:])
    dec = [1000 * (got.arrived_at[s] - sent.sent_at[s]) for s in seqs if s in got.arrived_at]
    ren = [1000 * (got.rendered_at[s] - sent.sent_at[s]) for s in seqs if s in got.rendered_at]
    ren_s = [1000 * (got.rendered_at[s] - sent.sent_at[s]) for s in seqs if s in got.rendered_at and s in steady]
    r_times = sorted(got.rendered_at[s] for s in steady if s in got.rendered_at)
    fps = (len(r_times) - 1) / (r_times[-1] - r_times[0]) if len(r_times) > 1 and r_times[-1] > r_times[0] else 0.0
    pct = lambda a, q: float(np.percentile(a, q)) if a else float("nan")  # noqa: E731
    return {"frames_sent": sent.sent, "frames_decoded": got.frames, "frames_rendered": len(got.rendered_at),
            "frames_skipped_by_renderer": got.skipped,
            "latency_decode_ms_median": pct(dec, 50), "latency_decode_ms_p95": pct(dec, 95),
            "latency_render_ms_median": pct(ren, 50), "latency_render_ms_p95": pct(ren, 95),
            "latency_render_ms_p95_steady": pct(ren_s, 95), "warmup_frames": warmup,
            "sustained_fps": float(fps), "sessions": sent.sessions, "rejected": got.rejected}


# -- entry points for the CLI ------------------------------------------------------------------
def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); HeadcastError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HeadcastError(f"--listen {listen!r} must be HOST:PORT")
    return host or "127.0.0.1", int(port)


def run_sender(to: str, video: str | None = None, camera: int | None = None, recon_dir: str | None = None,
               key_path: str | None = None, sender: str = "default", profile: str = "compact",
               model_spec: str | None = None, max_frames: int | None = None, log: Log = print) -> SendStats:
    """``headcast send``: track ``video`` (or camera ``camera``) and stream to ``to`` (``ws://HOST:PORT``).

    The head sent is the reconstruction in ``recon_dir`` (its beta, lighting and albedo); without it,
    the model's mean head."""
    from headcast.model.registry import resolve_model
    from headcast.stream.files import make_init, read_appearance

    if (video is None) == (camera is None):
        raise HeadcastError("give exactly one of --video FILE or --camera N")
    if not to.startswith(("ws://", "wss://")):
        raise HeadcastError(f"--to {to!r} must be a ws:// URL")
    beta, name = None, model_spec
    if recon_dir is not None:
        from headcast.io.recon import read_params

        p = read_params(recon_dir)
        beta, name = p.beta, model_spec or p.model
    model = resolve_model(name or "ict", progress=log)
    if beta is None:
        beta = np.zeros(model.n_shape)
    key = auth.load_private_key(key_path)
    log(f"send: identity {auth.fingerprint(auth.public_bytes(key))} ({sender!r})")
    src, fps = track_source(video if video is not None else int(camera), model, max_frames=max_frames, log=log)
    # the compact steps for the placement depend on the head's scale in the image: track up to the
    # first frame with a face before connecting
    src, first = primed(src)
    meta = {"beta": beta, "model": model.name, "eta_kind": 0, "fps": fps, "n_expr": model.n_expr}
    info = make_init(meta, profile, read_appearance(recon_dir), model, sender, eta_ref=first.eta)
    return asyncio.run(send(src, info, key, to, log=log))


def run_receiver(listen: str, out: str | None, trust_path: str | None = None, idle_timeout: float | None = None,
                 max_frames: int | None = None, model_spec: str = "ict", size: int = 512,
                 max_lag: int | None = None, web_port: int | None = None, log: Log = print) -> ReceiveStats:
    """``headcast receive``: listen on HOST:PORT and render what trusted senders stream into ``out``.

    With ``web_port`` (0: any free port) the stream is also shown live in the viewer page at
    ``http://127.0.0.1:PORT/live``; ``out`` may then be None (no MP4, nothing rendered here)."""
    if out is None and web_port is None:
        raise HeadcastError("give --out FILE.mp4, --web, or both")
    host, port = parse_listen(listen)
    trust = auth.Trust.from_file(trust_path)
    if trust.pinned is not None:
        log(f"receive: trusting only {auth.fingerprint(trust.pinned)}")
    else:
        log(f"receive: trust on first use ({trust.store})")
    from headcast.model.registry import resolve_model

    model = resolve_model(model_spec, build_missing=model_spec == "ict", progress=log)  # ready before a sender comes
    web = None
    if web_port is not None:
        from headcast.view.live import LiveWeb

        web = LiveWeb(web_port, model, log=log)
    try:
        return asyncio.run(receive(host, port, out, trust, log=log, idle_timeout=idle_timeout, max_frames=max_frames,
                                   model=model, size=size, max_lag=max_lag, web=web, render=out is not None))
    except KeyboardInterrupt:
        log("receive: stopped")
        raise
