"""``headcast receive --web``: the viewer page showing a live stream, pushed to it over WebSocket.

One port on 127.0.0.1 serves both the page (HTTP: ``/live``, its script, three.js, the head's GLB: the
viewer's :class:`~headcast.view.server.PageServer`) and a WebSocket at ``/socket``, which answers only
the page this server served, with the run's random token from the page's URL (``/live?token=...``). On a sender's INIT
the head is rebuilt as a GLB (identity beta baked, the expression basis as morph targets, the five
joints as a skin, the sent albedo when there is one) and each page is told to load it; every decoded
frame is then pushed as JSON ``{"type": "frame", "seq", "theta" (15 axis-angle radians), "psi" (E)}``
and the page poses the skinned mesh with it. A slow page gets the newest frame, never a backlog.

Messages to the page (text, JSON): ``{"type": "head", "url", "version", "sender", "model", "expressions"}``
then frames. The page sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.stream.peers import clean, shown
from headcast.stream.recorder import head_key
from headcast.stream.renderer import init_head
from headcast.view.server import PageServer, Site

logger = logging.getLogger(__name__)


def model_atlas(model):
    """The texture atlas of ``model`` (None without UVs). It depends on the model only, so a receiver builds
    it once, when its page server starts, not after each INIT (~1 s, plus ~2 s importing
    :mod:`headcast.texture` the first time, measured on a shared 2-core machine)."""
    if model is None or model.uv is None:
        return None
    from headcast.texture.atlas import build_atlas

    return build_atlas(model.uv, model.uv_faces, model.v_template, model.faces)


def head_glb_bytes(info, model=None, atlas=None) -> bytes:
    """The GLB of the head an INIT describes: its model (``model`` when the names match, else resolved),
    beta zero-padded to the model's components, the sent albedo in the model's atlas when present
    (``atlas``: that model's :func:`model_atlas` when already built)."""
    from headcast.export.gltf import GlbHead, build_glb

    model, beta = init_head(info, model)
    uv = uv_faces = png = None
    if info.albedo_png and model.uv is not None:
        atlas = atlas or model_atlas(model)
        uv, uv_faces, png = atlas.uv, atlas.uv_faces, bytes(info.albedo_png)
    return build_glb(GlbHead(model, beta, uv=uv, uv_faces=uv_faces, texture_png=png, name=info.sender or "head",
                              light=info.lam))


def frame_message(f) -> str:
    """A decoded frame as the page's JSON (5 decimals: 10 urad, well under the stream's quantisation)."""
    return json.dumps({"type": "frame", "seq": int(f.seq),
                       "theta": np.round(np.asarray(f.theta, float), 5).tolist(),
                       "psi": np.round(np.asarray(f.psi, float), 5).tolist()}, separators=(",", ":"))


class LiveWeb:
    """The live page's server, a :class:`headcast.stream.receiver.Sink`. Use as ``async with
    LiveWeb(port, model) as web:`` inside the receiver's event loop and call :meth:`init` on each INIT
    and :meth:`frame` on each decoded frame (both from the loop, never blocking it). ``port`` 0 picks a
    free one (``web.port`` once started)."""

    def __init__(self, port: int = 0, model=None, host: str = "127.0.0.1"):
        self.model = model
        self.glb: bytes | None = None
        self.head: dict | None = None     # the last "head" message
        self.latest: str | None = None    # the last frame message
        self.server = PageServer(Site(lambda: self.glb, page="/live"), port, host, socket=self._client)
        self._key = None
        self._wake: asyncio.Event | None = None
        self._build: asyncio.Task | None = None
        self._closing = False
        self._atlas: asyncio.Task | None = None  # the page's model's atlas, built as the server starts

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    async def __aenter__(self) -> "LiveWeb":
        self._wake = asyncio.Event()
        await self.server.__aenter__()
        self._atlas = asyncio.get_running_loop().create_task(asyncio.to_thread(model_atlas, self.model))
        logger.info("receive: live page at %s", self.url)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in (self._build, self._atlas):
            if task is not None:
                task.cancel()
        self._closing = True  # page handlers waiting for news return
        self._wake.set()
        await self.server.__aexit__(*exc)

    # -- stream side -------------------------------------------------------------------------
    def init(self, info, model=None) -> None:
        """A shown session's INIT and its admitted model (None: the page's): rebuild the head (in a worker
        thread) unless it is the one already shown."""
        key = head_key(info)
        if key == self._key:
            return
        self._key = key
        if self._build is not None:
            self._build.cancel()
        self._build = asyncio.get_running_loop().create_task(self._make_head(info, model or self.model))

    async def _make_head(self, info, model) -> None:
        try:
            atlas = await self._atlas if model is self.model else None
            glb = await asyncio.to_thread(head_glb_bytes, info, model, atlas)
        except HeadcastError as e:
            logger.info("receive: cannot show the head: %s", clean(e))
            return
        version = (self.head or {}).get("version", 0) + 1
        self.glb = glb
        self.head = {"type": "head", "url": f"/head.glb?v={version}", "version": version, "sender": info.sender,
                     "model": info.model, "expressions": int(info.n_expr)}
        logger.info(f"receive: head of {shown(info.sender)} ready for the page ({len(glb) / 1e6:.1f} MB)")
        self._wake.set()

    def frame(self, f) -> None:
        """A decoded frame: becomes the newest one every page is sent next."""
        self.latest = frame_message(f)
        self._wake.set()

    # -- page side ---------------------------------------------------------------------------
    async def _client(self, ws) -> None:
        sent_head = sent_frame = None
        try:
            while not self._closing:
                if self.head is not None and self.head is not sent_head:
                    sent_head = self.head
                    await ws.send(json.dumps(sent_head))
                if sent_head is not None and self.latest is not None and self.latest is not sent_frame:
                    sent_frame = self.latest
                    await ws.send(sent_frame)
                    continue
                # wait for news; one shared event, re-armed by whoever sees it set
                self._wake.clear()
                if (self.head is not sent_head) or (sent_head is not None and self.latest is not sent_frame):
                    continue
                await self._wake.wait()
        except Exception:  # the page went away (ConnectionClosed) or the server stops
            pass
