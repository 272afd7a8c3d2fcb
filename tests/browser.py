"""Headless Chromium driven over the DevTools protocol (websocket), shared by the viewer tests."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np

BG = np.array([0x20, 0x23, 0x28])  # the viewer page's background colour
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--window-size=480,480", "--remote-debugging-port=0"]


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(f"page never satisfied {expr}; state: {self.eval('JSON.stringify(window.__headcast)')}")

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return iio.imread(io.BytesIO(base64.b64decode(data)))[..., :3]


def chromium_exe() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def launch(exe: str, profile: Path):
    """A headless Chromium with a fresh ``profile`` folder: yields the :class:`Page` of its first tab."""
    from websockets.sync.client import connect

    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        with connect(url, max_size=64 * 2 ** 20, open_timeout=20) as ws:
            page = Page(ws)
            page.call("Page.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def head_pixels(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that differ from the page's background."""
    return np.abs(img.astype(int) - BG).sum(-1) > 30
