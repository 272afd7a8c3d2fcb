"""Network security (docs/protocol.md, "Threat model"): real ``headcast receive`` processes on loopback,
attacked by scripted clients while a trusted sender streams. The trusted sender's frames all reach the
MP4 with its own texture, every refused peer gets one (escaped) log line, memory stays bounded, the
receiver exits 0. Plus the local web servers' Host/Origin/token checks and the start-up refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import shared_path
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.session import SenderSession
from headcast.stream.wire import COMPACT, ETA_PAPER, FRAME, InitInfo, pack_message

SRC = Path(__file__).resolve().parents[1] / "src"
FPS = 25.0
MEMORY_BOUND_MB = 500


def png(rgb, side: int = 64) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, np.full((side, side, 3), rgb, np.uint8), extension=".png")
    return buf.getvalue()


def png_bomb(side: int = 8192) -> bytes:
    """A valid grey PNG of side x side zeros (64 MB decoded) in about 65 KB."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    idat = zlib.compress(b"\0" * ((side + 1) * side), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


GREEN, RED = png((40, 210, 40)), png((230, 30, 30))


def make_info(sender="alice", model="tiny", n_expr=4, albedo=GREEN) -> InitInfo:
    n = 15 + n_expr + 3
    steps = np.r_[np.full(15, 0.002), np.full(n_expr, 0.01), 0.001, 0.05, 0.05].astype(np.float32).astype(float)
    assert steps.size == n
    return InitInfo(model, 8, n_expr, np.zeros(8), None, None, albedo, FPS, COMPACT, 15, ETA_PAPER, 10, steps, sender)


def frame(seq: int, n_expr: int = 4) -> K.ParamFrame:
    theta = np.zeros(15)
    theta[1] = 0.3 * np.sin(seq / 10)  # the head turns
    return K.ParamFrame(seq, seq / FPS, theta, np.full(n_expr, 0.2), np.array([2500.0, 32, 32]), True)


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """Two HEADCAST_HOMEs holding the model 'tiny' (FLAME topology, 4 expressions), and two sender keys."""
    shared_path("models", "flame-assets")
    sys.path.insert(0, str(Path(__file__).parent))
    from headcast.model.head_model import save_model
    from tiny_model import flame_template_model

    root = tmp_path_factory.mktemp("security")
    m = flame_template_model(n_shape=8, n_expr=4)
    m.meta["name"] = "tiny"
    for h in ("pinned", "tofu"):
        save_model(m, root / h / "models" / "tiny.npz")
    keys = {}
    for name in ("alice", "mallory"):
        auth.generate_key(root / f"{name}.pem")
        keys[name] = auth.load_private_key(root / f"{name}.pem")
    return root, keys


class Receiver:
    """A ``headcast receive`` process; its stderr lines collected, its port read from the log."""

    def __init__(self, home: Path, out: Path, *args: str):
        env = {**os.environ, "HEADCAST_HOME": str(home), "PYTHONPATH": str(SRC)}
        argv = [sys.executable, "-m", "headcast.cli", "receive", "--listen", "127.0.0.1:0", "--out", str(out),
                "--model", "tiny", "--size", "64", "--max-lag", "0", "--idle-timeout", "4", *args]
        self.p = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
                                  encoding="utf-8", errors="replace")
        self.lines: list[str] = []
        self.raw = ""
        self.port: int | None = None
        self.listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.raw += line
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.listening.set()

    @property
    def url(self) -> str:
        assert self.listening.wait(120), self.lines
        return f"ws://127.0.0.1:{self.port}"

    def peak_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), MB."""
        text = Path(f"/proc/{self.p.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024

    def lines_about(self, port: int) -> list[str]:
        return [s for s in self.lines if f"127.0.0.1:{port}:" in s or s.endswith(f"127.0.0.1:{port})")]


@pytest.fixture(scope="module")
def receivers(homes, tmp_path_factory):
    """Both receivers, started together (their start-up overlaps): one trusting alice's key, one on
    trust on first use with an empty store."""
    root, _ = homes
    out = tmp_path_factory.mktemp("security-out")
    procs = {"pinned": Receiver(root / "pinned", out / "pinned.mp4", "--trust", str(root / "alice.pem.pub")),
             "tofu": Receiver(root / "tofu", out / "tofu.mp4")}
    yield procs, out
    for r in procs.values():
        if r.p.poll() is None:
            r.p.kill()
            r.p.wait()


# -- scripted clients --------------------------------------------------------------------------
async def connect(url):
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(url, max_size=1 << 16, compression=None, open_timeout=20)


async def stream(url, info, key, seqs, pace: float = 1 / FPS, until: threading.Event | None = None):
    """A well-behaved sender: HELLO, INIT, the frames ``seqs`` at ``pace`` seconds apart (stopping early
    once ``until`` is set); the INIT it sent and the number of frames."""
    ws = await connect(url)
    tx = SenderSession(info, key)
    init = tx.init(await ws.recv())
    await ws.send(init)
    for s in seqs:
        if until is not None and until.is_set():
            break
        await ws.send(tx.frame(frame(s, info.n_expr)))
        await asyncio.sleep(pace)
    await ws.close()
    return init, tx.frames


class Background:
    """A coroutine run in a thread of its own (its own event loop), so that the attackers' work never
    stalls it; ``result()`` waits for it."""

    def __init__(self, coro):
        self.out: dict = {}
        self.t = threading.Thread(target=lambda: self.out.update(r=asyncio.run(coro)), daemon=True)
        self.t.start()

    async def result(self):
        await asyncio.to_thread(self.t.join, 120)
        return self.out["r"]


async def attack(url, first=None, info=None, key=None) -> int:
    """One connection sending ``first`` (bytes or text), or a signed INIT of ``info`` by ``key``, then
    a few frames; returns its local port once the receiver has closed it."""
    ws = await connect(url)
    port = ws.local_address[1]
    hello = await ws.recv()
    tx = None
    if info is not None:
        tx = SenderSession(info, key)
        first = tx.init(hello)
    try:
        await ws.send(first)
        for s in range(3):
            await ws.send(tx.frame(frame(s, info.n_expr)) if tx else b"\0" * 40)
        await asyncio.wait_for(ws.wait_closed(), 10)
    except Exception:  # closed by the receiver while sending
        pass
    assert ws.close_code is not None
    return port


async def flood(url, seconds: float) -> list[int]:
    """Strangers for ``seconds``: connections sending the largest message allowed (4 MB of noise), bursts of
    small random messages, oversized messages; the local ports of the connections that were opened (the
    others were answered 503) and the number of connections tried."""
    rng = np.random.default_rng(7)
    big, huge = rng.bytes((4 << 20) - 64), rng.bytes(6 << 20)
    small = [rng.bytes(int(n)) for n in rng.integers(1, 300, 64)]
    ports: list[int] = []
    attempts = [0]
    end = time.monotonic() + seconds

    async def client(kind):
        while time.monotonic() < end:
            try:
                attempts[0] += 1
                ws = await connect(url)
                ports.append(ws.local_address[1])
                if kind == "big":
                    await ws.send(big)
                elif kind == "huge":
                    await ws.send(huge)
                else:
                    for m in small * 4:
                        await ws.send(m)
                await asyncio.wait_for(ws.wait_closed(), 5)
            except Exception:
                await asyncio.sleep(0.01)

    await asyncio.gather(*(client(k) for k in ["big"] * 8 + ["huge"] * 2 + ["small"] * 8))
    return ports, attempts[0]


# -- the receivers under attack ----------------------------------------------------------------
def test_pinned_receiver_under_attack(homes, receivers):
    """``receive --trust alice.pub``: strangers, bad INITs signed with alice's own key, injections, a replayed
    INIT, garbage and a flood, while alice streams; then alice forges sequence gaps."""
    root, keys = homes
    rx, out = receivers[0]["pinned"], receivers[1]
    alice, mallory = keys["alice"], keys["mallory"]
    url = rx.url
    injected = "tiny\nreceive: forged line\x1b]0;pwned\x07\x1b[31m"

    bomb = png_bomb()
    done = threading.Event()

    async def main():
        # alice streams throughout: from before the first attack until after the flood
        trusted = Background(stream(url, make_info(), alice, range(100_000), until=done))
        await asyncio.sleep(0.5)
        named = {
            "not the trusted key": await attack(url, info=make_info(albedo=RED), key=mallory),
            "is not a model name": await attack(url, info=make_info(model="/etc/passwd"), key=alice),
            "not a model name ": await attack(url, info=make_info(model=injected), key=alice),
            "expression components": await attack(url, info=make_info(n_expr=5), key=alice),
            "does not decode": await attack(url, info=make_info(albedo=GREEN[:60] + b"\0" * 40 + GREEN[100:]),
                                            key=alice),
            "side cap": await attack(url, info=make_info(albedo=bomb), key=alice),
            "bad magic": await attack(url, b"\0garbage" * 8),
            "text message": await attack(url, "hello"),
            "FRAME before an accepted INIT": await attack(url, pack_message(FRAME, 0, b"\0" * 20) + b"\0" * 8),
        }
        before = rx.peak_mb()
        flooded, tried = await flood(url, 2.0)
        done.set()
        init, n = await trusted.result()
        named["not an answer to this receiver's HELLO"] = await attack(url, init)  # replayed INIT
        peak = rx.peak_mb()
        # alice (trusted) forges sequence gaps: 1000 frames each
        await stream(url, make_info(), alice, range(n + 1000, n + 11000, 1000), pace=0.0)
        return named, flooded, tried, (before, peak), n

    named, flooded, tried, (before, peak), n = asyncio.run(main())
    assert rx.p.wait(60) == 0, rx.lines
    lines = rx.lines
    print(f"receiver peak memory: {before:.0f} MB before the flood, {peak:.0f} MB after it ({tried} stranger "
          f"connections tried, {len(flooded)} opened)")
    for reason, port in named.items():
        about = rx.lines_about(port)
        assert len(about) == 1 and "refused" in about[0] and reason.strip() in about[0], (reason, about)
    assert all(len(rx.lines_about(p)) <= 1 for p in flooded)
    assert tried >= 20 and peak < MEMORY_BOUND_MB and peak - before < 150  # the strangers' share is bounded
    # the injection is escaped: no forged line, no escape sequence reached the terminal
    assert "\x1b" not in rx.raw and "\x07" not in rx.raw
    assert not any(s.startswith("receive: forged") for s in lines)
    assert "/etc/passwd" not in "".join(s for s in lines if "refused" not in s)

    video = np.stack(list(iio.imiter(out / "pinned.mp4", plugin="FFMPEG")))
    # alice's n frames, then her 10 gap frames; the gaps held only as long as the wall clock allows
    assert n > 50 and n + 10 <= len(video) <= n + 10 + 100, (n, len(video))
    head = np.abs(video.astype(int) - video[:, :1, :1].astype(int)).sum(-1) > 40  # not the corner's background
    assert head[:n].mean(axis=(1, 2)).min() > 0.05
    for img, mask in zip(video, head):  # every picture is alice's green head, never the stranger's red
        r, g, b = img[mask].astype(float).mean(0)
        assert g > r + 30 and g > b + 30, (r, g, b)
    summary = next(s for s in lines if "frames decoded" in s)
    assert re.search(rf"\b{n + 10} frames decoded, {n + 10} written", summary), summary


def test_trust_on_first_use_trusts_the_first_sender_only(homes, receivers):
    """An empty store: alice (first) is trusted; mallory under a new name, and under alice's name, are
    refused with one line each while alice streams; the store holds alice only."""
    root, keys = homes
    rx, out = receivers[0]["tofu"], receivers[1]
    url = rx.url

    async def main():
        trusted = Background(stream(url, make_info(), keys["alice"], range(40)))
        await asyncio.sleep(1.0)
        ports = {"new sender 'mallory'": await attack(url, info=make_info("mallory", albedo=RED), key=keys["mallory"]),
                 "was trusted on first use": await attack(url, info=make_info("alice", albedo=RED), key=keys["mallory"])}
        await trusted.result()
        return ports

    ports = asyncio.run(main())
    peak = rx.peak_mb()
    assert rx.p.wait(60) == 0, rx.lines
    for reason, port in ports.items():
        about = rx.lines_about(port)
        assert len(about) == 1 and reason in about[0], (reason, about)
    store = json.loads((root / "tofu" / "trust" / "known_senders.json").read_text())
    assert store == {"alice": auth.public_bytes(keys["alice"]).hex()}
    video = np.stack(list(iio.imiter(out / "tofu.mp4", plugin="FFMPEG")))
    assert len(video) == 40
    print(f"receiver peak memory without a flood: {peak:.0f} MB")
    head = np.abs(video[20].astype(int) - video[20, :1, :1].astype(int)).sum(-1) > 40
    r, g, b = video[20][head].astype(float).mean(0)
    assert g > r + 30


# -- start-up refusals -------------------------------------------------------------------------
def test_corrupt_trust_store_and_missing_out_folder_refused_at_start(tmp_path, monkeypatch, capsys):
    from headcast.cli import main

    monkeypatch.setenv("HEADCAST_HOME", str(tmp_path / "home"))
    store = tmp_path / "home" / "trust" / "known_senders.json"
    store.parent.mkdir(parents=True)
    store.write_text('{"alice": "not a key"')
    assert main(["receive", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trust store" in err[0] and "Traceback" not in err[0], err
    store.write_text('{"alice": "00"}')
    assert main(["receive", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "a.mp4")]) == 2
    assert "fix or delete it" in capsys.readouterr().err
    assert main(["receive", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "no" / "a.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()


# -- local web servers -------------------------------------------------------------------------
def _get(port: int, path: str, host: str) -> int:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host})
    status = c.getresponse().status
    c.close()
    return status


def test_live_page_checks_host_origin_and_token():
    """``receive --web``: a request naming another host (DNS rebinding) and a socket from another page or
    without the run's token are answered 403; the page's own socket connects."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    from headcast.view.live import LiveWeb

    web = LiveWeb(0, None)

    async def main():
        async with web:
            port, token = web.port, web.server.token
            assert f"?token={token}" in web.url and len(token) >= 16
            status = {h: await asyncio.to_thread(_get, port, "/live", h)
                      for h in (f"127.0.0.1:{port}", f"localhost:{port}", f"evil.example:{port}", "127.0.0.1:1")}
            sockets = {}
            for name, origin, tok in (("good", f"http://127.0.0.1:{port}", token),
                                      ("other page", "http://evil.example", token),
                                      ("no origin", None, token), ("no token", f"http://127.0.0.1:{port}", ""),
                                      ("wrong token", f"http://127.0.0.1:{port}", token[:-1] + "x")):
                try:
                    async with ws_connect(f"ws://127.0.0.1:{port}/socket?token={tok}", origin=origin):
                        sockets[name] = 101
                except InvalidStatus as e:
                    sockets[name] = e.response.status_code
            return status, sockets

    status, sockets = asyncio.run(main())
    assert list(status.values()) == [200, 200, 403, 403], status
    assert sockets == {"good": 101, "other page": 403, "no origin": 403, "no token": 403, "wrong token": 403}


def test_view_server_checks_host(tmp_path):
    from headcast.view.server import serve

    (tmp_path / "h.glb").write_bytes(b"glTF" + b"\0" * 60)
    server = serve(tmp_path / "h.glb")
    try:
        port = server.server.port
        assert _get(port, "/head.glb", f"127.0.0.1:{port}") == 200
        assert _get(port, "/head.glb", f"localhost:{port}") == 200
        assert _get(port, "/head.glb", f"rebound.example:{port}") == 403
    finally:
        server.close()
