"""The live receiver: accepts authenticated senders over WebSocket and hands every new session's
INIT and every decoded frame to its sinks: the MP4 render worker and, when given, a page (any
object with the :class:`Sink` methods that is also an async context manager, e.g. the viewer's
live page, built by whoever serves the page)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Protocol

from headcast.io.outputs import staged_file
from headcast.stream import auth
from headcast.stream.metrics import ReceiveStats
from headcast.stream.renderer import RenderWorker
from headcast.stream.session import DecodedFrame, ReceiverSession
from headcast.stream.transport import websockets_api
from headcast.stream.wire import InitInfo, ProtocolError

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Something that shows a received stream. Both calls come from the receiver's event loop and must
    not block it."""

    def init(self, info: InitInfo) -> None:
        """A new session's INIT (the head to show)."""

    def frame(self, f: DecodedFrame) -> None:
        """A decoded frame, in order."""


class _Link:
    """The receiving side shared by the connections: counts, sinks, when to stop."""

    def __init__(self, trust: auth.Trust, sinks: list[Sink], max_frames: int | None, stats: ReceiveStats,
                 closed: type):
        self.trust, self.sinks, self.max_frames, self.stats = trust, sinks, max_frames, stats
        self.closed = closed  # the library's ConnectionClosed
        self.stop = asyncio.Event()
        self.last_msg: float | None = None

    def reject(self, line: str) -> None:
        self.stats.rejected += 1
        self.stats.reasons.append(line)
        logger.info("receive: %s", line)

    def deliver(self, new_info: InitInfo | None, frames: list[DecodedFrame]) -> None:
        if new_info is not None:
            self.stats.sessions += 1
            for s in self.sinks:
                s.init(new_info)
        now = time.perf_counter()
        for f in frames:
            self.stats.frames += 1
            self.stats.arrived_at[f.seq] = now
            for s in self.sinks:
                s.frame(f)

    async def handler(self, ws) -> None:
        """One sender's connection: HELLO, then every message authenticated and decoded."""
        rx = ReceiverSession(self.trust, label="receive: ")
        await ws.send(rx.hello())
        try:
            async for msg in ws:
                self.last_msg = time.perf_counter()
                if not isinstance(msg, bytes):
                    self.reject("rejected: text message")
                    continue
                had_info = rx.info
                try:
                    frames = rx.handle(msg)
                except ProtocolError as e:
                    self.reject(f"rejected: {e}")
                    continue
                self.deliver(rx.info if rx.info is not None and rx.info is not had_info else None, frames)
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    self.stop.set()
                    break
        except self.closed:
            pass
        logger.info("receive: sender disconnected")

    async def wait(self, idle_timeout: float | None) -> None:
        """Until stopped, or ``idle_timeout`` seconds without a message once a sender has been seen."""
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
            if idle_timeout is not None and self.last_msg is not None and time.perf_counter() - self.last_msg > idle_timeout:
                break


async def receive(host: str, port: int, out: str | Path | None, trust: auth.Trust,
                  max_frames: int | None = None, idle_timeout: float | None = None, size: int = 512,
                  model=None, ready: Callable | None = None, render: bool = True,
                  max_lag: int | None = None, web=None, force: bool = False) -> ReceiveStats:
    """Listen on ``host:port``, accept authenticated senders, render into ``out`` (MP4).

    Stops after ``max_frames`` decoded frames, or ``idle_timeout`` seconds without a message once a
    sender has been seen, or on cancellation (Ctrl-C, SIGTERM), which ends the recording and is raised
    again once the MP4 is in place. Rejected messages are logged with their reason.
    ``out`` is written under a staging name and renamed into place at the end (:func:`staged_file`:
    refused at the start when it exists, unless ``force``, or cannot be written); nothing is written
    when no frame was rendered.
    ``max_lag``: frames the renderer may fall behind before it skips to the newest (default:
    ``renderer.LAG_SECONDS`` of frames, 3 at 30 fps; 0: never skip, so the MP4 has every frame however late).
    ``model``: a preloaded model, used when the stream names it. ``render`` False: no render worker.
    ``web``: a :class:`Sink` that is also an async context manager (not yet entered), e.g.
    :class:`headcast.view.live.LiveWeb`; it runs in this event loop for as long as the receiver listens.
    ``ready``: called with the started server (its ``.sockets``, ``.connections``).
    """
    stats = ReceiveStats()
    if not render or out is None:
        if await _listen(host, port, RenderWorker(None, stats, size, model, max_lag) if render else None, trust,
                         max_frames, idle_timeout, stats, ready, web):
            raise asyncio.CancelledError()
        return stats
    try:
        with staged_file(out, force=force) as tmp:
            worker = RenderWorker(tmp, stats, size, model, max_lag)
            cancelled = await _listen(host, port, worker, trust, max_frames, idle_timeout, stats, ready, web)
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
                  idle_timeout: float | None, stats: ReceiveStats, ready: Callable | None, web) -> bool:
    """Serve until stopped (see :func:`receive`), then finish the render worker; True when cancelled."""
    websockets, _, serve = websockets_api()
    if worker:
        worker.start()
    link = _Link(trust, [s for s in (worker, web) if s is not None], max_frames, stats,
                 websockets.exceptions.ConnectionClosed)
    cancelled = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            if web is not None:
                await stack.enter_async_context(web)
            server = await stack.enter_async_context(serve(link.handler, host, port, max_size=1 << 24))
            logger.info("receive: listening on ws://%s:%s", host, port)
            if ready is not None:
                ready(server)
            await link.wait(idle_timeout)
    except asyncio.CancelledError:  # the recording ends here; receive() raises it again
        cancelled = True
    finally:
        if worker:
            worker.q.put(None)
            await asyncio.to_thread(worker.join)
    if worker and worker.error is not None:
        raise worker.error
    logger.info(f"receive: {stats.frames} frames decoded, {stats.written} written, {stats.rejected} rejected")
    return cancelled
