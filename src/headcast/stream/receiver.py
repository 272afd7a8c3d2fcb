"""The live receiver: accepts authenticated senders over WebSocket, one isolated session per connection
(its own decoder and head state), and hands the *shown* session's INIT and decoded frames to its sinks:
the MP4 render worker and, when given, a page (any object with the :class:`Sink` methods that is also
an async context manager, e.g. the viewer's live page, built by whoever serves the page).

The shown sender is the trusted key (``--trust``), or under trust on first use the first sender this
receiver accepts; its newest session is shown, other accepted sessions are decoded and counted only.

What a stranger can cost is bounded (docs/protocol.md, "Threat model"): connections at a time and per
second, one message (its INIT, within :data:`INIT_TIMEOUT`) before a connection is accepted or
refused, message sizes, message rates per connection and overall, queue lengths, log lines; what is
over a bound is dropped and counted. A refused peer gets one log line and its connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Protocol

from headcast.core.errors import HeadcastError
from headcast.io.outputs import staged_file
from headcast.stream import auth
from headcast.stream.heads import Heads
from headcast.stream.metrics import ReceiveStats
from headcast.stream.peers import Bucket, PeerLog, clean
from headcast.stream.recorder import RenderWorker
from headcast.stream.session import DecodedFrame, ReceiverSession, describe
from headcast.stream.transport import websockets_api
from headcast.stream.wire import FRAME, MAX_FRAME_BODY, MAX_VARINT, TAG_SIZE, InitInfo, message_type

logger = logging.getLogger(__name__)

MAX_PEERS = 64                 # connections at a time; more are answered 503 before the WebSocket opens
MAX_UNACCEPTED = 8             # of them without an accepted INIT yet
CONNECT_RATE = (20.0, 20.0)    # new connections per second, burst
INIT_TIMEOUT = 5.0             # seconds a connection has to send its INIT
CLOSE_TIMEOUT = 1.0            # seconds a refused connection gets to answer the close
MAX_INIT_BYTES = 4 << 20       # a message before the INIT is accepted: an INIT with a 2048^2 albedo PNG
MAX_FRAME_BYTES = 1 + MAX_VARINT + MAX_FRAME_BODY + TAG_SIZE  # every message after it (a live FRAME)
TOTAL_RATE = (2000.0, 4000.0)  # messages per second over all connections, burst
LOG_RATE = (20.0, 40.0)        # log lines about peers per second over all of them, burst
LOG_PER_PEER = 3               # log lines about one connection (its INIT's, its rejected messages')


class Sink(Protocol):
    """Something that shows the received stream. Both calls come from the receiver's event loop and must
    not block it."""

    def init(self, info: InitInfo, model) -> None:
        """A new shown session's INIT and the model it was admitted with (the head to show)."""

    def frame(self, f: DecodedFrame) -> None:
        """A decoded frame of the shown session, in order."""


def _peer(connection) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else "a peer"


class _Refused(Exception):
    """A connection refused at its start (the reason is its text, one line, remote strings escaped)."""


class _Link:
    """The receiving side shared by the connections: trust, the shown session, bounds, counts, sinks."""

    def __init__(self, trust: auth.Trust, sinks: list[Sink], max_frames: int | None, stats: ReceiveStats,
                 closed: type, model=None):
        self.trust, self.sinks, self.max_frames, self.stats = trust, sinks, max_frames, stats
        self.closed = closed  # the library's ConnectionClosed
        self.heads = Heads(model)
        self.shown_key: bytes | None = trust.pinned
        self.current: ReceiverSession | None = None   # the shown session
        self.stop = asyncio.Event()
        self.last_msg: float | None = None             # the last message of an accepted session
        self.peers = self.unaccepted = 0
        self.connects, self.total = Bucket(*CONNECT_RATE), Bucket(*TOTAL_RATE)
        self.log_budget = Bucket(*LOG_RATE)

    def opening(self, connection, request):
        """The WebSocket handshake's check: over the connection bounds, the answer is 503 and no WebSocket
        opens (so nothing the peer sends is read)."""
        if self.peers < MAX_PEERS and self.unaccepted < MAX_UNACCEPTED and self.connects.take():
            return None
        self.stats.refused_peers += 1
        PeerLog(logger, self.log_budget, 1, self.stats).info(f"receive: refused {_peer(connection)}: too many connections")
        return connection.respond(503, "busy\n")

    async def handler(self, ws) -> None:
        """One connection: HELLO, its INIT (accepted or the connection refused), then its frames."""
        peer = _peer(ws)
        log = PeerLog(logger, self.log_budget, LOG_PER_PEER, self.stats)
        self.peers += 1
        self.unaccepted += 1
        accepted = False
        rx = ReceiverSession(self.trust, label="receive: ", remember=False)
        try:
            await ws.send(rx.hello())
            try:
                await self._accept(ws, rx)
            except _Refused as e:
                self.stats.refused_peers += 1
                log.info(f"receive: refused {peer}: {clean(e)}")
                await ws.close(1008, "refused")
                return
            accepted = True
            self.unaccepted -= 1
            ws.protocol.max_message_size = MAX_FRAME_BYTES
            await self._stream(ws, rx, peer, log)
            log.info(f"receive: sender disconnected ({peer})")
        except self.closed:
            if accepted:
                log.info(f"receive: sender disconnected ({peer})")
        finally:
            self.peers -= 1
            self.unaccepted -= not accepted
            if self.current is rx:
                self.current = None

    async def _accept(self, ws, rx: ReceiverSession) -> None:
        """Read the connection's first message, which must be an INIT this receiver trusts and whose head
        it admits; start showing the session when it is the shown sender's. _Refused otherwise."""
        try:
            msg = await asyncio.wait_for(ws.recv(), INIT_TIMEOUT)
        except asyncio.TimeoutError:
            raise _Refused(f"no INIT within {INIT_TIMEOUT:g} s") from None
        if not isinstance(msg, bytes):
            self.stats.reject("text message")
            raise _Refused("a text message, not an INIT")
        try:
            rx.handle(msg)
            if rx.info is None:
                raise _Refused("its first message is not an INIT")
            model = await asyncio.to_thread(self.heads.admit, rx.info)
            if rx.new_sender:  # trusted on first use: stored now that its head is admitted
                self.trust.remember(rx.info.sender, rx.info.sign_pub)
        except HeadcastError as e:  # ProtocolError, or a trust store that cannot be read
            self.stats.reject(str(e))
            raise _Refused(str(e)) from None
        info = rx.info
        self.stats.sessions += 1
        self.last_msg = time.perf_counter()
        stored = f" (trusted on first use: key stored in {self.trust.store})" if rx.new_sender else ""
        if self.shown_key is None:
            self.shown_key = info.sign_pub
        if info.sign_pub != self.shown_key:
            logger.info(describe(info, "receive: ") + stored + "; not shown (another sender is)")
            return
        logger.info(describe(info, "receive: ") + stored)
        self.current = rx
        for s in self.sinks:
            s.init(info, model)

    async def _stream(self, ws, rx: ReceiverSession, peer: str, log: PeerLog) -> None:
        """An accepted session's frames, within its rate and the receiver's; each decoded frame of the
        shown session goes to the sinks, the others' are counted as dropped."""
        rate = max(60.0, 4 * rx.info.fps)
        own = Bucket(rate, 2 * rate)
        async for msg in ws:
            if not (own.take() and self.total.take()):
                self.stats.dropped += 1
                continue
            self.last_msg = time.perf_counter()
            try:
                if not isinstance(msg, bytes):
                    raise HeadcastError("a text message")
                if message_type(msg) != FRAME:
                    raise HeadcastError("a message other than FRAME after the INIT")
                frames = rx.handle(msg)
            except HeadcastError as e:
                self.stats.reject(str(e))
                log.info(f"receive: {peer}: rejected: {clean(e)}")
                if "bad MAC" in str(e):  # an ordered, reliable link never garbles: a forgery try ends it
                    log.info(f"receive: {peer}: session closed after a bad MAC")
                    break
                continue
            if rx is not self.current:
                self.stats.dropped += len(frames)
                continue
            now = time.perf_counter()
            for f in frames:
                self.stats.frames += 1
                ReceiveStats.timed(self.stats.arrived_at, f.seq, now)
                for s in self.sinks:
                    s.frame(f)
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                self.stop.set()
                break

    async def wait(self, idle_timeout: float | None, worker: RenderWorker | None) -> None:
        """Until stopped, or ``idle_timeout`` seconds without a message of an accepted session once there
        was one, or the render worker ended (its error is raised by the caller)."""
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
            if worker is not None and not worker.is_alive():
                break
            if idle_timeout is not None and self.last_msg is not None and time.perf_counter() - self.last_msg > idle_timeout:
                break


async def receive(host: str, port: int, out: str | Path | None, trust: auth.Trust,
                  max_frames: int | None = None, idle_timeout: float | None = None, size: int = 512,
                  model=None, ready: Callable | None = None, render: bool = True,
                  max_lag: int | None = None, web=None, force: bool = False) -> ReceiveStats:
    """Listen on ``host:port``, accept authenticated senders, render the shown one into ``out`` (MP4).

    Stops after ``max_frames`` decoded frames, or ``idle_timeout`` seconds without a message of an
    accepted session once there was one, or on cancellation (Ctrl-C, SIGTERM), which ends the recording
    and is raised again once the MP4 is in place. Refused peers are logged, one line each.
    ``out`` is written under a staging name and renamed into place at the end (:func:`staged_file`:
    refused at the start when it exists, unless ``force``, or cannot be written); nothing is written
    when no frame was rendered.
    ``max_lag``: frames the renderer may fall behind before it skips to the newest (default:
    ``recorder.LAG_SECONDS`` of frames, 3 at 30 fps; 0: never skip, so the MP4 has every frame however late).
    ``model``: a preloaded model, used when the stream names it. ``render`` False: no render worker.
    ``web``: a :class:`Sink` that is also an async context manager (not yet entered), e.g.
    :class:`headcast.view.live.LiveWeb`; it runs in this event loop for as long as the receiver listens.
    ``ready``: called with the started server (its ``.sockets``, ``.connections``).
    """
    stats = ReceiveStats()
    if not render or out is None:
        worker = RenderWorker(None, stats, size, model, max_lag) if render else None
        if await _listen(host, port, worker, trust, max_frames, idle_timeout, stats, ready, web, model):
            raise asyncio.CancelledError()
        return stats
    try:
        with staged_file(out, force=force) as tmp:
            worker = RenderWorker(tmp, stats, size, model, max_lag)
            cancelled = await _listen(host, port, worker, trust, max_frames, idle_timeout, stats, ready, web, model)
            if not stats.written:
                raise _NothingRendered()
    except _NothingRendered:
        logger.info("receive: no frame was rendered; %s not written", out)
    if cancelled:
        raise asyncio.CancelledError()
    return stats


class _NothingRendered(Exception):
    """No frame reached the MP4: its staging file is removed rather than put in place."""


async def _listen(host: str, port: int, worker: RenderWorker | None, trust: auth.Trust, max_frames: int | None,
                  idle_timeout: float | None, stats: ReceiveStats, ready: Callable | None, web, model) -> bool:
    """Serve until stopped (see :func:`receive`), then finish the render worker; True when cancelled."""
    websockets, _, serve = websockets_api()
    if worker:
        worker.start()
    link = _Link(trust, [s for s in (worker, web) if s is not None], max_frames, stats,
                 websockets.exceptions.ConnectionClosed, model)
    cancelled = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            if web is not None:
                await stack.enter_async_context(web)
            server = await stack.enter_async_context(serve(
                link.handler, host, port, process_request=link.opening, max_size=MAX_INIT_BYTES, max_queue=1,
                compression=None, close_timeout=CLOSE_TIMEOUT))
            bound = next(iter(server.sockets)).getsockname()
            logger.info("receive: listening on ws://%s:%s", host, bound[1])
            if ready is not None:
                ready(server)
            await link.wait(idle_timeout, worker)
    except asyncio.CancelledError:  # the recording ends here; receive() raises it again
        cancelled = True
    finally:
        if worker:
            worker.stop()
            await asyncio.to_thread(worker.join)
    if worker and worker.error is not None:
        raise worker.error
    logger.info(f"receive: {stats.frames} frames decoded, {stats.written} written, {stats.rejected} messages "
                f"rejected, {stats.refused_peers} peers refused, {stats.dropped} dropped over a bound, "
                f"{stats.log_held} log lines held back")
    return cancelled
