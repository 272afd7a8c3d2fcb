"""End to end in headless Chromium: `headcast receive --web` shows a live stream. A real sender streams
over ws://127.0.0.1 to a real receiver whose page (served on another loopback port) follows the stream
over its own WebSocket: the head it draws turns and opens its jaw as the frames arrive."""

import asyncio
import io
import itertools
import threading
import time

import imageio.v3 as iio
import numpy as np

from browser import head_pixels
from headcast.export.motion import axis_angle_to_quat
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.wire import COMPACT, ETA_PAPER, InitInfo

FPS, SECONDS, MAX_SECONDS = 25.0, 6.0, 60.0


def sweep(model, n: int, period: int | None = None) -> list[K.ParamFrame]:
    """Motion repeating every ``period`` frames (default n), monotonic within a period (so two moments
    under a period apart differ): the head turns from -0.5 to 0.5 rad of yaw and nods a little, the jaw
    opens to 0.25 rad, the first expressions rise from 0 to 0.8."""
    period = period or n
    s = (np.arange(n) % period) / (period - 1)
    frames = []
    for i in range(n):
        theta = np.zeros(15)
        theta[0:3] = [0.1 * s[i], -0.5 + s[i], 0.0]
        theta[6] = 0.25 * s[i]
        psi = np.zeros(model.n_expr)
        psi[:8] = 0.8 * s[i]
        frames.append(K.ParamFrame(i, i / FPS, theta, psi, np.array([2500.0, 256, 256]), True))
    return frames


def albedo_png() -> bytes:
    u = np.linspace(0, 1, 64)
    tex = np.stack([np.broadcast_to(200 + 40 * u[None], (64, 64)), np.broadcast_to(150 + 50 * u[:, None], (64, 64)),
                    np.full((64, 64), 120.0)], -1).astype(np.uint8)
    buf = io.BytesIO()
    iio.imwrite(buf, tex, extension=".png")
    return buf.getvalue()


def test_live_stream_moves_the_head_in_the_page(chromium, ict_model, tmp_path):
    from headcast.stream import receiver, sender, source
    from headcast.view.live import LiveWeb

    m = ict_model
    web = LiveWeb(0, m)
    key = auth.Ed25519PrivateKey.generate()
    # a 6 s sweep, repeated until both screenshots are taken (the page may get its head seconds after
    # the INIT on a busy machine): the shots are always taken while frames arrive
    frames = sweep(m, int(FPS * MAX_SECONDS), period=int(FPS * SECONDS))
    shots_taken = threading.Event()
    beta = np.random.default_rng(3).normal(0, 1, m.n_shape)
    info = InitInfo("ict", m.n_shape, m.n_expr, beta, None, None, albedo_png(), FPS, COMPACT, 15, ETA_PAPER, 10,
                    K.steps_for(m, beta, 15, ETA_PAPER, frames[0].eta), "dora")
    result, ready = {}, threading.Event()

    def run_receiver():
        try:
            result["got"] = asyncio.run(receiver.receive(
                "127.0.0.1", 0, None, auth.Trust(auth.public_bytes(key)), idle_timeout=2.0,
                model=m, render=False, web=web,
                ready=lambda s: (result.update(port=next(iter(s.sockets)).getsockname()[1]), ready.set())))
        except BaseException as e:
            result["error"] = e
            ready.set()

    def run_sender():
        url = f"ws://127.0.0.1:{result['port']}"
        until_shots = itertools.takewhile(lambda _: not shots_taken.is_set(), frames)
        result["sent"] = asyncio.run(sender.send(source.paced(until_shots), info, key, url))

    rx = threading.Thread(target=run_receiver, daemon=True)
    rx.start()
    assert ready.wait(20) and "error" not in result, result
    chromium.call("Page.navigate", url=web.url)
    chromium.wait_for("window.__headcast && window.__headcast.live && window.__headcast.connected", timeout=30)
    tx = threading.Thread(target=run_sender, daemon=True)
    tx.start()

    ready_expr = "window.__headcast.headVersion >= 1 && window.__headcast.received >= 3 && window.__headcast"
    a = chromium.wait_for(ready_expr, timeout=20)
    shot_a = chromium.screenshot()
    time.sleep(1.0)
    b = chromium.eval("window.__headcast")
    shot_b = chromium.screenshot()
    shots_taken.set()
    tx.join(30)
    rx.join(30)
    assert not tx.is_alive() and not rx.is_alive() and "error" not in result, result
    iio.imwrite(tmp_path / "live.png", np.hstack([shot_a, shot_b]))

    # the page loaded the sender's head: skinned, 53 morph targets, its albedo; it saw a moving stream
    assert a["error"] is None and a["textured"] and a["morphTargets"] == m.n_expr and a["meshes"] == 1
    assert b["seq"] - a["seq"] >= 0.5 * FPS, (a["seq"], b["seq"])  # ~1 s later, however the page was late
    for s in (a, b):  # what the page applied is what was sent for that frame (within the stream's steps)
        f = frames[s["seq"]]
        q = axis_angle_to_quat(f.theta.reshape(5, 3))
        got = np.array(s["pose"])
        assert np.allclose(np.abs(np.sum(got * q, axis=1)), 1.0, atol=1e-4), (got, q)
        half_step = 0.5 * info.steps[15:15 + m.n_expr]  # the page's JSON has 5 decimals
        assert np.all(np.abs(np.array(s["weights"]) - f.psi) <= half_step + 1e-5), (s["weights"], f.psi)
    assert np.abs(np.array(b["pose"]) - np.array(a["pose"])).max() > 0.05  # the head turned

    # the picture: a head in the middle, in the albedo's warm colours, moved between the two shots
    mask = head_pixels(shot_a)
    assert 0.05 < mask.mean() < 0.9, f"head covers {mask.mean():.2f} of the picture"
    skin = shot_a[mask].astype(float).mean(0)
    assert skin[0] > skin[2] + 20
    assert np.mean(np.any(np.abs(shot_a.astype(int) - shot_b) > 10, axis=-1)) > 0.02

    got, sent = result["got"], result["sent"]
    assert b["seq"] < sent.frames < len(frames), "the stream ran out before the screenshots"
    assert sent.sessions == 1 and got.frames == sent.sent == sent.frames and got.rejected == 0


def test_live_page_serves_only_its_files(ict_model):
    """The live server answers the page, its script and three.js, refuses paths outside them, and has
    no head before a sender's INIT."""
    import urllib.error
    import urllib.request

    from headcast.view.live import LiveWeb

    web = LiveWeb(0, ict_model)

    async def main():
        async with web:
            def get(path):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{web.port}{path}", timeout=10) as r:
                        return r.status, r.headers.get("Content-Type"), r.read()
                except urllib.error.HTTPError as e:
                    return e.code, None, b""
            return {p: await asyncio.to_thread(get, p) for p in
                    ("/", "/viewer.js", "/three/build/three.module.js", "/three/../../pyproject.toml", "/head.glb")}

    r = asyncio.run(main())
    assert r["/"][0] == 200 and b"importmap" in r["/"][2]  # redirected to /live
    assert r["/viewer.js"][1].startswith("text/javascript") and b"/socket" in r["/viewer.js"][2]
    assert r["/three/build/three.module.js"][0] == 200
    assert r["/three/../../pyproject.toml"][0] == 404 and r["/head.glb"][0] == 404
