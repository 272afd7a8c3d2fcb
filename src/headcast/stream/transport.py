"""The WebSocket library of the live link, imported when a live command needs it."""

from __future__ import annotations

from headcast.core.errors import HeadcastError


def websockets_api():
    """(the ``websockets`` module, its asyncio ``connect``, its asyncio ``serve``); HeadcastError when
    the package is missing."""
    try:
        import websockets
        from websockets.asyncio.client import connect
        from websockets.asyncio.server import serve
    except ImportError:
        raise HeadcastError("live streaming needs the 'websockets' package (pip install websockets)") from None
    return websockets, connect, serve
