"""The live sender: streams parameter frames to a receiver over WebSocket, reconnecting when the
connection drops.

The sender connects to the receiver (``ws://HOST:PORT``); the receiver speaks first with a HELLO,
the sender answers with its signed INIT and then streams FRAME messages, one WebSocket binary
message each. When the connection drops the sender reconnects (backoff 0.2 s doubling to 2 s), runs
a new handshake (new session key) and starts with a keyframe; frames made while disconnected are
dropped, as a live link would.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterator

from headcast.core.errors import HeadcastError
from headcast.stream import codec as K
from headcast.stream.metrics import SendStats
from headcast.stream.session import SenderSession
from headcast.stream.transport import websockets_api
from headcast.stream.wire import InitInfo, ProtocolError

logger = logging.getLogger(__name__)


async def send(source: Iterator[tuple[K.ParamFrame, float]], template: InitInfo, key, url: str,
               connect_timeout: float = 10.0) -> SendStats:
    """Stream ``source`` to the receiver at ``url``, reconnecting when the connection drops."""
    websockets, connect, _ = websockets_api()
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
                    sess = SenderSession(template, key, ordered=True)  # a WebSocket: the receiver counts
                    await ws.send(sess.init(hello if isinstance(hello, bytes) else b""))
                    link["ws"], link["session"] = ws, sess
                    stats.sessions += 1
                    first_contact.set()
                    logger.info("send: connected to %s (session %d)", url, stats.sessions)
                    backoff = 0.2
                    await ws.wait_closed()
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, ProtocolError) as e:
                if not done.is_set():
                    logger.info(f"send: no connection to {url} ({e.__class__.__name__}: {e}); retrying in {backoff:.1f} s")
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
    logger.info(f"send: {stats.sent} of {stats.frames} frames sent in {stats.sessions} session(s), {stats.bytes} bytes")
    return stats
