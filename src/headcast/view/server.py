"""The viewer's one HTTP server, for ``headcast view`` and the live page of ``headcast receive --web``.

It serves a page (``static/``: the page and its script), the head as ``/head.glb`` and three.js under
``/three/`` from the ``node_modules`` the set-up installed with npm (nothing from a CDN: works
offline), and nothing else: :class:`Site` holds the one path check. :class:`PageServer` answers on
127.0.0.1 (the ``websockets`` server, so the live page's WebSocket ``/socket`` shares the port);
:func:`serve` runs one in a thread of its own, and :func:`showing` is what ``headcast view`` runs.

Against other web pages in the user's browser: every request must name this server in its ``Host``
(``127.0.0.1:PORT`` or ``localhost:PORT``: a DNS-rebound name is refused), and the WebSocket must
come from the page this server served (its ``Origin``) and carry the run's random token from the
page's URL; anything else is answered 403.
"""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
import os
import secrets
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from headcast.core.errors import HeadcastError

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"/index.html": "index.html", "/viewer.js": "viewer.js"}  # served on every page's site

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("model/gltf-binary", ".glb")


def find_three(start: Path | None = None) -> Path:
    """The ``node_modules/three`` folder: $HEADCAST_NODE_MODULES, else the nearest ``node_modules`` above this
    package (the repository root after ``npm ci``) or above ``start``."""
    candidates = []
    if os.environ.get("HEADCAST_NODE_MODULES"):
        candidates.append(Path(os.environ["HEADCAST_NODE_MODULES"]))
    for base in (Path(__file__).resolve(), (start or Path.cwd()).resolve()):
        candidates += [p / "node_modules" for p in base.parents]
    for c in candidates:
        if (c / "three" / "build" / "three.module.js").is_file():
            return c / "three"
    raise HeadcastError("three.js is not installed: run 'npm ci' in the headcast repository "
                        "(or set HEADCAST_NODE_MODULES to a node_modules folder holding 'three')")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, content type, body; ``location`` for a redirect."""

    status: int
    ctype: str
    body: bytes
    location: str | None = None


class Site:
    """What one page serves: the page at ``page`` ("/" for a head, "/live" for a stream, where "/"
    redirects), its script, three.js and the head from ``head()`` (GLB bytes, or None: not there yet)."""

    def __init__(self, head: Callable[[], bytes | None], page: str = "/", three: Path | None = None):
        self.head, self.page = head, page
        self.three = (three or find_three()).resolve()

    def reply(self, raw_path: str) -> Reply:
        """The answer to a GET of ``raw_path`` (URL path and query)."""
        path = unquote(urlsplit(raw_path).path)
        body = f = None
        if path == self.page or path in FILES:
            f = STATIC / FILES.get(path, "index.html")
        elif path == "/":
            return Reply(302, "text/plain", b"", location=self.page)
        elif path == "/head.glb":
            body = self.head()
        elif path.startswith("/three/"):
            f = (self.three / path[len("/three/"):]).resolve()
            if not (f.is_relative_to(self.three) and f.is_file()):
                f = None
        if f is not None:
            body = f.read_bytes()
        if body is None:
            return Reply(404, "text/plain; charset=utf-8", b"not found\n")
        ctype = mimetypes.guess_type(f.name if f is not None else path)[0] or "application/octet-stream"
        return Reply(200, ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""), body)


class PageServer:
    """An HTTP server for ``site`` on ``host:port`` (0: any free port, ``port`` once started); with
    ``socket``, WebSocket connections to ``/socket`` go to that coroutine. Use as ``async with`` in a
    running event loop."""

    def __init__(self, site: Site, port: int = 0, host: str = "127.0.0.1", socket=None):
        self.site, self.host, self.port, self.socket = site, host, port, socket
        self.token = secrets.token_urlsafe(16) if socket is not None else None  # the socket's, per run
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.site.page}" + (f"?token={self.token}" if self.token else "")

    def allowed(self, headers, path: str) -> bool:
        """Whether a request may be answered: its Host names this server; for the socket, its Origin is a
        page of this server and ``path`` carries the token."""
        hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"{self.host}:{self.port}"}
        host = headers.get("Host", "")
        if host not in hosts:
            return False
        if urlsplit(path).path != "/socket":
            return True
        token = parse_qs(urlsplit(path).query).get("token", [""])[0]
        return (headers.get("Origin") == f"http://{host}" and self.token is not None
                and hmac.compare_digest(token.encode(), self.token.encode()))

    async def __aenter__(self) -> "PageServer":
        from websockets.asyncio.server import serve

        try:
            self._server = await serve(self._connection, self.host, self.port, process_request=self._http,
                                       max_size=1 << 16, compression=None)
        except OSError as e:
            raise HeadcastError(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from None
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _connection(self, ws) -> None:
        if self.socket is not None:
            await self.socket(ws)

    def _http(self, connection, request):
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        if not self.allowed(request.headers, request.path):
            r = Reply(403, "text/plain; charset=utf-8", b"forbidden\n")
        elif self.socket is not None and urlsplit(request.path).path == "/socket":
            return None  # the WebSocket handshake
        else:
            r = self.site.reply(request.path)
        headers = [("Content-Type", r.ctype), ("Content-Length", str(len(r.body))), ("Cache-Control", "no-store"),
                   ("Connection", "close")] + ([("Location", r.location)] if r.location else [])
        reason = {200: "OK", 302: "Found", 403: "Forbidden", 404: "Not Found"}[r.status]
        return Response(r.status, reason, Headers(headers), r.body)


class ServerThread:
    """A :class:`PageServer` running in a daemon thread with its own event loop until :meth:`close`."""

    def __init__(self, server: PageServer):
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="headcast-view", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        return self.server.url

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.server:
                self._started.set()
                await self._stop.wait()
        except BaseException as e:
            self._error = e
            self._started.set()

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
        self._loop.close()


def serve(glb: str | Path, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """A started server (daemon thread) showing ``glb``; ``port`` 0 picks a free one. Its page is
    ``server.url``; stop it with ``server.close()``."""
    glb = Path(glb)
    if not glb.is_file():
        raise HeadcastError(f"no GLB file at {glb}")
    return ServerThread(PageServer(Site(glb.read_bytes), port, host))


def head_glb(target: str | Path, anim_dir: str | Path | None = None, workdir: Path | None = None) -> Path:
    """The GLB to show: ``target`` itself when it is a .glb file, else the export of the reconstruction
    folder ``target`` (animated by ``anim_dir``) into ``workdir``."""
    p = Path(target)
    if p.is_file() and p.suffix.lower() == ".glb":
        if anim_dir is not None:
            raise HeadcastError("--anim applies to a reconstruction folder, not to a .glb file")
        from headcast.io.gltf import read_glb

        read_glb(p)  # its size and framing: a damaged file is refused here, not in the browser
        return p
    if p.is_dir():
        from headcast.export.gltf import export_glb

        out = Path(workdir or tempfile.mkdtemp(prefix="headcast-view-")) / "head.glb"
        return export_glb(p, anim_dir, out)
    raise HeadcastError(f"{p} is neither a .glb file nor a reconstruction folder")


@contextmanager
def showing(target: str | Path, anim_dir: str | Path | None = None, port: int = 0) -> Iterator[tuple[Path, str]]:
    """Serve ``target`` (RESULT_DIR or head.glb) while inside: yields (the GLB shown, the page's URL).
    The server stops and an exported GLB is removed on the way out (also on Ctrl-C, and on SIGTERM under
    the CLI, whose handlers turn it into an exception: :func:`headcast.io.outputs.install_signal_handlers`)."""
    with tempfile.TemporaryDirectory(prefix="headcast-view-") as tmp:
        glb = head_glb(target, anim_dir, Path(tmp))
        server = serve(glb, port=port)
        try:
            yield glb, server.url
        finally:
            server.close()


def wait_until_stopped() -> None:
    """Block until Ctrl-C (or SIGTERM under the CLI)."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
