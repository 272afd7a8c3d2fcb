"""Rendering benchmark: the OpenGL preview (:func:`headcast.render.gl.render_head`, llvmpipe on the CPU)
against the exact ray caster (:mod:`headcast.render.raycast`) on the same head and camera.

The head is the default model with a seeded random identity and expression, 0.5 m in front of a camera
whose focal length makes it fill most of a ``size`` x ``size`` image; the texture is a seeded random
``tex`` x ``tex`` image on the model's UVs. Per renderer: median and 90th-percentile milliseconds per frame
over ``frames`` frames (the head turns a little each frame, so every frame uploads new vertices), after
one warm-up frame (GL context, shader compilation and texture upload are reported separately as
``setup_ms``). Agreement: the fraction of pixels whose coverage (head / background) matches between the
GL and ray-cast images.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from headcast.core.camera import Intrinsics
from headcast.core.params import N_POSE, HeadParams
from headcast.model.layer import HeadLayer
from headcast.model.registry import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)


def _frames(model, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    layer = HeadLayer(model, dtype=torch.float64)
    beta, psi = rng.normal(0, 1, model.n_shape), np.clip(rng.normal(0, 0.3, model.n_expr), 0, 1)
    out = []
    for i in range(n):
        theta = np.zeros(N_POSE)
        theta[1] = 0.4 * np.sin(2 * np.pi * i / max(n, 1))
        out.append(HeadParams(beta, psi, theta, 1.0, np.array([0.0, 0.02, 0.5])).vertices(layer))
    return out


def run(size: int = 512, frames: int = 30, tex: int = 1024, model: str = DEFAULT_MODEL, seed: int = 0,
        raycast_frames: int = 5) -> dict:
    """Time both renderers; returns a dict of figures (milliseconds, fractions)."""
    from headcast.io.validate import MAX_TEXTURE_SIZE, check_number
    from headcast.render.gl import MeshRenderer, render_head
    from headcast.render.images import render_shaded

    check_number(size, "--size", 16, 4096, integer=True, unit="pixels")
    check_number(frames, "--frames", 1, None, integer=True)
    check_number(tex, "--texture", 16, MAX_TEXTURE_SIZE, integer=True, unit="texels")
    m = resolve_model(model)
    verts = _frames(m, frames, seed)
    K = Intrinsics(fx=1.1 * size, fy=1.1 * size, cx=size / 2 - 0.5, cy=size / 2 - 0.5, width=size, height=size)
    texture = np.random.default_rng(seed).integers(0, 256, (tex, tex, 3), dtype=np.uint8)
    uv = m.uv / np.maximum(1.0, np.ceil(m.uv.max(0)))  # fold multi-tile UVs (ICT: u in 0..2) into one tile

    def timed(fn, vs):
        ms = []
        for v in vs:
            t0 = time.perf_counter()
            img = fn(v)
            ms.append(1000 * (time.perf_counter() - t0))
        return ms, img

    t0 = time.perf_counter()
    r = MeshRenderer(m.faces, m.n_vertices, uv=uv, uv_faces=m.uv_faces, texture=texture)
    r.render(verts[0], K)
    setup = 1000 * (time.perf_counter() - t0)
    tex_ms, _ = timed(lambda v: r.render(v, K)[0], verts)
    shaded = MeshRenderer(m.faces, m.n_vertices)
    shaded.render(verts[0], K)
    flat_ms, _ = timed(lambda v: shaded.render(v, K)[0], verts)
    cached_ms, _ = timed(lambda v: render_head(v, m.faces, K, uv, m.uv_faces, texture), [verts[0]] + verts)
    cached_ms = cached_ms[1:]
    rc_ms, _ = timed(lambda v: render_shaded(v, m.faces, K)[1], verts[:raycast_frames])
    hits, _ = render_shaded(verts[0], m.faces, K)
    _, mask = shaded.render(verts[0], K)
    r.release()
    shaded.release()
    q = lambda a: (float(np.median(a)), float(np.percentile(a, 90)))  # noqa: E731
    return {"size": size, "frames": frames, "texture": tex, "model": m.name, "vertices": m.n_vertices,
            "triangles": int(len(m.faces)), "gl_setup_ms": setup,
            "gl_textured_ms": q(tex_ms), "gl_shaded_ms": q(flat_ms), "render_head_ms": q(cached_ms),
            "raycast_shaded_ms": q(rc_ms), "coverage_agreement": float(np.mean(mask == hits.hit))}


def markdown(res: dict) -> str:
    """Lines for bench/RESULTS.md."""
    f = lambda k: f"{res[k][0]:.1f} ms (p90 {res[k][1]:.1f})"  # noqa: E731
    s = res["size"]
    return "\n".join([
        f"### Preview rendering, {s}x{s}, model {res['model']} ({res['vertices']} vertices, {res['triangles']} triangles)",
        "",
        "| renderer | median per frame |",
        "|---|---|",
        f"| OpenGL (moderngl EGL, llvmpipe), textured {res['texture']}^2 | {f('gl_textured_ms')} |",
        f"| OpenGL, shaded (no texture) | {f('gl_shaded_ms')} |",
        f"| `render_head` (cached GL objects), textured | {f('render_head_ms')} |",
        f"| ray caster (Open3D), shaded | {f('raycast_shaded_ms')} |",
        "",
        f"GL set-up (context, shaders, texture upload) {res['gl_setup_ms']:.0f} ms once; coverage masks of GL "
        f"and ray caster agree on {100 * res['coverage_agreement']:.2f}% of pixels. "
        f"Command: `headcast bench render --size {s} --frames {res['frames']}`.",
    ])
