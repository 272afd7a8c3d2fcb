"""``headcast view``: a local web page (three.js, orbit controls, the animation playing) for a head.

A stdlib HTTP server on 127.0.0.1 serves four things: the page and its script (``static/``), the head as
``/head.glb`` (a .glb file as it is, or a reconstruction folder exported on the fly) and three.js under
``/three/`` from the ``node_modules`` the set-up installed with npm (nothing from a CDN: works offline).
"""

from __future__ import annotations

import mimetypes
import os
import signal
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from headcast.core.errors import HeadcastError

STATIC = Path(__file__).resolve().parent / "static"


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


def head_glb(target: str | Path, anim_dir: str | Path | None = None, workdir: Path | None = None) -> Path:
    """The GLB to show: ``target`` itself when it is a .glb file, else the export of the reconstruction
    folder ``target`` (animated by ``anim_dir``) into ``workdir``."""
    p = Path(target)
    if p.is_file() and p.suffix.lower() == ".glb":
        if anim_dir is not None:
            raise HeadcastError("--anim applies to a reconstruction folder, not to a .glb file")
        return p
    if p.is_dir():
        from headcast.export.gltf import export_glb

        out = Path(workdir or tempfile.mkdtemp(prefix="headcast-view-")) / "head.glb"
        return export_glb(p, anim_dir, out)
    raise HeadcastError(f"{p} is neither a .glb file nor a reconstruction folder")


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, glb: Path, three: Path, **kw):
        self.glb, self.three = glb, three
        super().__init__(*args, directory=str(STATIC), **kw)

    def translate_path(self, path: str) -> str:
        p = unquote(urlsplit(path).path)
        if p == "/head.glb":
            return str(self.glb)
        if p.startswith("/three/"):
            f = (self.three / p[len("/three/"):]).resolve()
            return str(f) if f.is_relative_to(self.three.resolve()) else str(STATIC / "missing")
        if p in ("/", "/index.html", "/viewer.js"):
            return str(STATIC / (p.lstrip("/") or "index.html"))
        return str(STATIC / "missing")  # nothing else is served

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args) -> None:  # quiet; the CLI prints the address
        pass


mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("model/gltf-binary", ".glb")


def serve(glb: str | Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A started server (daemon thread) showing ``glb``; ``port`` 0 picks a free one. Its address is
    ``http://{host}:{server.server_port}/``; stop it with ``server.shutdown()``."""
    glb = Path(glb)
    if not glb.is_file():
        raise HeadcastError(f"no GLB file at {glb}")
    handler = partial(_Handler, glb=glb.resolve(), three=find_three())
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise HeadcastError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="headcast-view", daemon=True).start()
    return server


def _say(line: str) -> None:
    print(line, flush=True)  # the address must reach a pipe (a script waiting for it) at once


def _stop_on_sigterm() -> None:
    """Let SIGTERM end ``view`` like Ctrl-C, so the exported temporary GLB is removed."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def view(target: str | Path, anim_dir: str | Path | None = None, port: int = 0, open_browser: bool = False,
         say=_say) -> None:
    """Serve ``target`` (RESULT_DIR or head.glb) until Ctrl-C or SIGTERM."""
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="headcast-view-") as tmp:
        glb = head_glb(target, anim_dir, Path(tmp))
        server = serve(glb, port=port)
        url = f"http://127.0.0.1:{server.server_port}/"
        say(f"headcast: showing {glb.name} at {url} (Ctrl-C to stop)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()
