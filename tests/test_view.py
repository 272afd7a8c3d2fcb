"""End to end in headless Chromium: `headcast view`'s page loads an exported GLB with three.js (served
from node_modules), draws a non-blank head, and the picture changes while the animation plays.
The browser is driven over the DevTools protocol (tests/browser.py, the session's `chromium` fixture)."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from browser import head_pixels
from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.export.gltf import export_glb
from headcast.export.motion import keyframe_animation
from headcast.io.mesh import write_obj
from headcast.io.recon import write_params
from headcast.model.layer import HeadLayer


@pytest.fixture(scope="module")
def glb(ict_model, tmp_path_factory):
    """An animated, textured GLB of a seeded random head (a reconstruction folder exported)."""
    d = tmp_path_factory.mktemp("result")
    m = ict_model
    rng = np.random.default_rng(5)
    p = HeadParams(rng.normal(0, 1, m.n_shape), np.zeros(m.n_expr), np.zeros(15), 1.0, np.array([0, 0, 0.5]), m.name)
    K = Intrinsics(fx=500, fy=500, cx=160, cy=120, width=320, height=240)
    write_params(d, p, K)
    K.to_json(d / "intrinsics.json")
    write_obj(d / "mesh_textured.obj", p.vertices(HeadLayer(m, dtype=torch.float64)), m.faces, m.uv * 0.5,
              m.uv_faces)
    u = np.linspace(0, 1, 128)
    tex = np.stack([200 + 40 * u[None] + 0 * u[:, None], 150 + 50 * u[:, None] + 0 * u[None],
                    np.full((128, 128), 120.0)], -1).astype(np.uint8)  # a smooth skin-like gradient
    iio.imwrite(d / "albedo.png", tex, extension=".png")
    a = keyframe_animation(m.n_expr, m.meta.get("expression_names"), seconds=4.0, fps=10)
    return export_glb(d, out=d / "head.glb", model=m, animation=a)


@pytest.fixture(scope="module")
def server(glb):
    from headcast.view import serve

    s = serve(glb)  # set-up installs three.js (npm ci); without it this fails with the set-up hint
    assert s.url.startswith("http://127.0.0.1:") and s.url.endswith("/")
    yield s.url
    s.close()


def test_page_shows_textured_head_and_plays_animation(chromium, server, tmp_path):
    chromium.call("Page.navigate", url=server)
    state = chromium.wait_for("window.__headcast && (window.__headcast.loaded || window.__headcast.error) "
                              "&& window.__headcast.frames > 3 && window.__headcast")
    assert state["error"] is None
    assert state["loaded"] and state["textured"] and state["animations"] == 1
    assert state["morphTargets"] == 53 and state["duration"] == pytest.approx(4.0, abs=0.01)
    assert state["meshes"] == 1 and state["primitives"] == 4  # the head and its mouth interior's 3 parts

    # playing: animation time and rendered frame count advance, and the pictures differ
    t0, f0 = state["time"], state["frames"]
    shot0 = chromium.screenshot()
    time.sleep(1.0)
    shot1 = chromium.screenshot()
    later = chromium.eval("window.__headcast")
    assert later["frames"] > f0 and later["time"] != t0
    assert np.mean(np.any(shot0 != shot1, axis=-1)) > 0.005

    # deterministic poses: a head covers the middle of the picture, in the texture's colours, and moves
    chromium.eval("window.__headcast.seek(0.0)")
    time.sleep(0.5)
    a = chromium.screenshot()
    chromium.eval("window.__headcast.seek(1.0)")  # head turned, jaw open
    time.sleep(0.5)
    b = chromium.screenshot()
    iio.imwrite(tmp_path / "frames.png", np.hstack([a, b]))
    H, W = a.shape[:2]
    mask = head_pixels(a)
    assert 0.1 < mask.mean() < 0.9, f"head covers {mask.mean():.2f} of the picture"
    assert mask[H // 4:3 * H // 4, 2 * W // 5:3 * W // 5].mean() > 0.9  # the face, centred
    skin = a[mask].astype(float).mean(0)
    assert skin[0] > skin[2] + 20  # warm texture colour (red over blue), not a flat grey
    assert np.mean(np.any(np.abs(a.astype(int) - b) > 10, axis=-1)) > 0.02


def test_view_command_serves_a_reconstruction_until_stopped(glb, tmp_path):
    """`headcast view RESULT_DIR` as a user runs it: prints the address at once, serves the page, the
    exported head and three.js, nothing outside them, and on SIGINT / SIGTERM exits 0 leaving no temporary files."""
    exe = Path(sys.executable).parent / "headcast"
    for sig in (signal.SIGINT, signal.SIGTERM):
        tmp = tmp_path / sig.name
        tmp.mkdir()
        proc = subprocess.Popen([str(exe), "view", str(glb.parent)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "TMPDIR": str(tmp)})
        try:
            line = proc.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
            get = lambda p: urllib.request.urlopen(url + p, timeout=30).read()  # noqa: E731
            assert b"<title>headcast viewer</title>" in get("") and b"GLTFLoader" in get("viewer.js")
            assert get("head.glb")[:4] == b"glTF"
            assert b"export" in get("three/build/three.module.js")[:100000]
            with pytest.raises(urllib.error.HTTPError):
                get("three/../../../etc/passwd")
            assert list(tmp.iterdir()), "the exported GLB lives in a temporary folder while serving"
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not list(tmp.iterdir())


def test_view_refuses_bad_target(tmp_path):
    from headcast.view import head_glb

    with pytest.raises(HeadcastError):
        head_glb(tmp_path / "nothing.glb")


def test_preview_renderer_matches_ray_caster(ict_model):
    """render_head (OpenGL, EGL) covers the same pixels as the exact ray caster, draws the texture where
    textured, and follows the vertices."""
    from headcast.render.gl import render_head
    from headcast.render.images import render_shaded

    m = ict_model
    p = HeadParams(np.zeros(m.n_shape), np.zeros(m.n_expr), np.zeros(15), 1.0, np.array([0, 0.02, 0.5]), m.name)
    v = p.vertices(HeadLayer(m, dtype=torch.float64))
    K = Intrinsics(fx=180, fy=180, cx=63.5, cy=63.5, width=128, height=128)
    shaded = render_head(v, m.faces, K)
    hits, _ = render_shaded(v, m.faces, K)
    cover = np.any(shaded > 0, axis=-1)
    assert shaded.shape == (128, 128, 3) and shaded.dtype == np.uint8
    assert np.mean(cover == hits.hit) > 0.99
    green = np.zeros((16, 16, 3), np.uint8)
    green[..., 1] = 255
    tex = render_head(v, m.faces, K, uv=m.uv * 0.5, uv_faces=m.uv_faces, texture=green)
    assert np.all(tex[cover][:, [0, 2]] == 0) and tex[cover][:, 1].mean() > 60
    moved = render_head(v + [0.02, 0, 0], m.faces, K)
    shift = np.nonzero(np.any(moved > 0, axis=-1))[1].mean() - np.nonzero(cover)[1].mean()
    assert 5 < shift < 10  # 2 cm to the right at ~0.5 m with f = 180 px: about 7 px
