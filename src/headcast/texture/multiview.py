"""Albedo from every frame of a sweep: each texel blended from the frames that see it.

A sweep's reconstruction folder holds every registered frame (``frames/``) and its head-to-camera transform
(``poses.json``). Each frame sees the texels with the confidence of :meth:`View.observe` (view angle,
distance from silhouettes and depth edges, agreement with the measured depth). The texels' colours are
blended with weights confidence^2 x cos(view angle)^:data:`POWER`: a few frames a few degrees apart agree,
while frames far apart would ghost the features wherever the fitted surface misses the real one by a
little (the eyelids, the nostrils). A gain per frame and channel (the median ratio of the other frames'
blend to the frame's own colour, over the texels both see well, three rounds, the output frame's gain 1)
compensates exposure and white balance.

The head is still in a still room, so one SH light in the output frame shades every frame alike: the
multi-view colours cannot tell it from the albedo (a Lambertian texel looks the same from every side), so
it is fitted as for one photo (a uniform albedo, robustly, so that brows, lips and clothes lose their say)
but over the blended colours of the whole seen head, both sides, instead of one frame's side; the albedo
is then colour / shading, trusted less where the shading is small unless it agrees with its surroundings
(:func:`shading_trust`). Where the blend is not trusted or no frame sees a texel, the blend's own completion
over the mesh fills in (:func:`sweep_fill`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.geometry import vertex_normals
from headcast.core.sh import sh_shading, to_view
from headcast.io import recon
from headcast.io.validate import clean_depth, read_depth_raw, read_image
from headcast.texture import fill
from headcast.texture.core import MIN_SHADING, SHADING_RAMP, part_priors, region_faces
from headcast.texture.lighting import fit_light, loss4, normalise_light
from headcast.texture.observe import View, head_texels, interpolate, mesh_parts

logger = logging.getLogger(__name__)

SEEN = 0.5             # a texel counts as seen when a frame sees it with this confidence (as for one photo)
FULL = 0.25            # squared confidences summing to this make the blend replace the fill (sweep_fill)
GAIN_RANGE = (0.4, 2.5)  # per-frame exposure gains are clipped to this (the real sweep needs up to 2)
POWER = 16             # the blend's preference for head-on views: cos^16 is 0.61 at 10 degrees, 0.13 at 20
GAIN_ROUNDS = 3        # rounds of the per-frame gains against the other frames' blend
LIGHT_TEXELS = 40000   # texels (seeded subsample) the sweep's light is fitted on
CONSISTENT = (1.2, 1.5)  # albedo / its robust local mean: a dim texel is trusted in full within the first, not beyond the second
LOCAL_ITERATIONS = 64  # neighbour averages of the local mean albedo (about 8 edges, 2-3 cm of the head)


@dataclass
class Blend:
    """Per covered texel: blended albedo (N, 3) in 0..1, confidence (N,) in 0..1 (:func:`replace_weight`
    times the shading trust), the best single frame's confidence (N,) times that trust, and per frame
    its gain (3,) and the share of texels it saw; the light (9, 3) the albedo was divided by."""

    albedo: np.ndarray
    weight: np.ndarray
    best: np.ndarray
    gains: list
    frames: list
    light: np.ndarray | None = None


@dataclass
class Seen:
    """One frame's view of the texels: its index, the texels it sees (M,), their colours (M, 3) float32
    0..1, confidences (M,) and blend weights (M,) (confidence^2 x cos^POWER)."""

    frame: int
    texels: np.ndarray
    color: np.ndarray
    conf: np.ndarray
    weight: np.ndarray


def read_frames(folder: Path, K, used_only: bool = False) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The registered frames of a sweep folder whose images it holds (every registered one since the
    reconstruction writes them all; ``used_only``: only those the fit used, so that the others stay held
    out): (index, color (H, W, 3) uint8, depth (H, W) m, head_to_camera (4, 4))."""
    poses = recon.read_poses(folder) or []
    out = []
    for f in poses:
        if f.get("head_to_camera") is None or (used_only and not f.get("used")):
            continue
        i = int(f["index"])
        cp, dp = folder / recon.FRAMES / f"{i:03d}_color.png", folder / recon.FRAMES / f"{i:03d}_depth_mm.png"
        if not cp.is_file() and not f.get("used"):
            continue  # a folder written when only the used frames were kept
        color = read_image(cp, "sweep frame", formats=("PNG",))
        depth = clean_depth(read_depth_raw(dp, "sweep depth"), 0.001)
        if color.shape[:2] != (K.height, K.width) or depth.shape != color.shape[:2]:
            raise HeadcastError(f"{cp} does not match {recon.INTRINSICS}'s size {K.width}x{K.height}")
        out.append((i, color, depth, f["head_to_camera"]))
    return out


def observe_frames(faces: np.ndarray, vertices: np.ndarray, frames: list, K, X: np.ndarray, n: np.ndarray,
                   tri: np.ndarray) -> list[Seen]:
    """Each frame's view (:class:`Seen`) of the texel points ``X`` (N, 3) with unit normals ``n`` (N, 3) on
    triangles ``tri`` (N,) of the mesh ``vertices`` (V, 3), all in the output frame."""
    out = []
    for i, color, depth, T in frames:
        R, t = np.asarray(T)[:3, :3], np.asarray(T)[:3, 3]
        view = View.make(vertices @ R.T + t, faces, color, K, depth)
        Xc, nc = X @ R.T + t, n @ R.T
        col, w = view.observe(Xc, nc, tri=tri)
        k = np.flatnonzero(w > 0)
        cos = np.clip(-np.einsum("nc,nc->n", Xc[k], nc[k]) / np.linalg.norm(Xc[k], axis=1), 0, 1)
        out.append(Seen(i, k, col[k].astype(np.float32), w[k].astype(np.float32),
                        (w[k] ** 2 * cos ** POWER).astype(np.float32)))
    return out


def _accumulate(seen: list[Seen], gains: list[np.ndarray], N: int) -> tuple[np.ndarray, np.ndarray]:
    acc, wsum = np.zeros((N, 3)), np.zeros(N)
    for s, g in zip(seen, gains):
        acc[s.texels] += s.weight[:, None] * s.color * g
        wsum[s.texels] += s.weight
    return acc, wsum


def frame_gains(seen: list[Seen], N: int) -> list[np.ndarray]:
    """Per frame (3,) gains making its colours meet the other frames' blend (module docstring); the
    first frame's (the output frame's) are 1, the others follow in turn (each against the blend with the
    gains found so far), over :data:`GAIN_ROUNDS` rounds."""
    gains = [np.ones(3) for _ in seen]
    acc, wsum = _accumulate(seen, gains, N)
    for _ in range(GAIN_ROUNDS):
        for f, s in enumerate(seen[1:], 1):
            others = wsum[s.texels] - s.weight
            ok = (s.conf > SEEN) & (others > 0.05) & (s.color.min(1) > 0.02)
            if ok.sum() < 200:
                continue
            mine = s.weight[:, None] * s.color * gains[f]
            ref = (acc[s.texels] - mine)[ok] / others[ok, None]
            g = np.clip(np.exp(np.median(np.log(np.maximum(ref, 1e-3) / s.color[ok]), axis=0)), *GAIN_RANGE)
            acc[s.texels] += s.weight[:, None] * s.color * g - mine
            gains[f] = g
    return gains


def sweep_light(color: np.ndarray, weight: np.ndarray, n: np.ndarray, seed: int = 0) -> np.ndarray:
    """One SH light (9, 3) in the output frame for the blended colours (N, 3) of texels with confidence
    (N,) and unit normals (N, 3) (camera axes): a robust fit with a uniform albedo, scaled so that the
    mean shading over the fitted texels is 1 (:func:`headcast.texture.lighting.normalise_light`)."""
    sel = np.flatnonzero(weight > SEEN)
    if len(sel) > LIGHT_TEXELS:
        sel = np.sort(np.random.default_rng(seed).choice(sel, LIGHT_TEXELS, replace=False))
    nv = to_view(n[sel])
    light, _ = fit_light(color[sel], nv, weights=weight[sel])
    return normalise_light(light, nv)[0]


def shading_trust(faces: np.ndarray, n_vertices: int, tri: np.ndarray, bary: np.ndarray, albedo: np.ndarray,
                  shading: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(N,) trust in [0, 1] of the albedos (N, 3) = colour / ``shading`` (N, 3) of texels on triangles ``tri``
    (N,) with weights ``bary`` (N, 3), seen with best confidence ``best`` (N,).

    As for one photo, in folds (lids, lips, under the jaw, the ear) a small misfit of the fitted normal makes
    a small shading and a bright albedo, so the trust falls with the shading relative to the seen texels'
    median (:data:`SHADING_RAMP`). A sweep also sees large smooth parts the light leaves dim (the side of the
    head away from it), where colour / shading is as good as anywhere: there a texel keeps full trust when its
    albedo is within :data:`CONSISTENT` of the robust local mean albedo (:func:`local_albedo`); a fold's band
    is narrow, so that mean is its surroundings' and the fold's too-bright (or too-dark) albedo stays out."""
    seen = best > SEEN
    rel = shading.min(1) / max(float(np.median(shading.mean(1)[seen])) if seen.any() else 1.0, 1e-6)
    lit = np.clip((rel - SHADING_RAMP[0]) / (SHADING_RAMP[1] - SHADING_RAMP[0]), 0, 1)
    dim = seen & (lit < 1)
    if not dim.any():
        return lit
    ref = local_albedo(faces, n_vertices, tri, bary, albedo, np.where(seen, best, 0.0))
    dev = np.abs(np.log(np.maximum(albedo[dim], 1e-3) / np.maximum(ref[dim], 1e-3))).max(1)
    lo, hi = np.log(CONSISTENT)
    out = lit.copy()
    out[dim] = np.maximum(lit[dim], np.clip((hi - dev) / (hi - lo), 0, 1))
    return out


def pool_vertices(faces: np.ndarray, n_vertices: int, tri: np.ndarray, bary: np.ndarray, values: np.ndarray,
                  weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texel ``values`` (N, C) on triangles ``tri`` (N,) (weights ``bary`` (N, 3)) pooled at the triangles'
    corners by ``weight`` (N,): the weighted mean per vertex (V, C) and the summed weight (V,)."""
    on = weight > 0
    corners = np.asarray(faces)[tri[on]].ravel()
    wb = (bary[on] * weight[on, None]).ravel()
    den = np.bincount(corners, wb, n_vertices)
    num = np.stack([np.bincount(corners, wb * np.repeat(values[on, c], 3), n_vertices) for c in range(values.shape[1])], 1)
    return num / np.maximum(den, 1e-9)[:, None], den


def local_albedo(faces: np.ndarray, n_vertices: int, tri: np.ndarray, bary: np.ndarray, albedo: np.ndarray,
                 weight: np.ndarray, rounds: int = 3) -> np.ndarray:
    """(N, 3) robust local mean of the albedos (N, 3) of texels on triangles ``tri`` (N,) (weights ``bary``
    (N, 3)), weighted by ``weight`` (N,): texels are pooled at their triangles' corners, averaged over the
    mesh (:data:`LOCAL_ITERATIONS` neighbour averages), and vertices far from that mean (beyond
    :data:`CONSISTENT`) lose their say in the next of ``rounds``; interpolated back to the texels."""
    a_v, den = pool_vertices(faces, n_vertices, tri, bary, albedo, weight)
    w_v = den.copy()
    lo, hi = np.log(CONSISTENT)
    for _ in range(rounds):
        ref, _ = fill.smooth_weighted(a_v, w_v, faces, LOCAL_ITERATIONS)
        dev = np.abs(np.log(np.maximum(a_v, 1e-3) / np.maximum(ref, 1e-3))).max(1)
        w_v = den * np.clip((hi - dev) / (hi - lo), 0, 1)
    return interpolate(faces, tri, bary, ref)


def replace_weight(seen: list[Seen], N: int) -> np.ndarray:
    """(N,) how far the frames' blend replaces the fill (:func:`sweep_fill`) at each of N texels: the
    squared confidences of the views that see it with confidence above :data:`SEEN`, summed, over
    :data:`FULL`, clipped to 1. Views below it (grazing, beyond about 63 degrees, or at an edge) do not count,
    however many: on the real sweep, on texels also seen head-on, the colour of the grazing views alone is
    further from the head-on colour than the fill there (median |log ratio| 0.21 against 0.05-0.08 in
    holes of 10-20 mm; 0.36 against 0.18 on the brows, lips and marks; bench/RESULTS.md, "texels: the head's
    denominator, grazing views measured, the sweep's own fill")."""
    out = np.zeros(N)
    for s in seen:
        ok = s.conf > SEEN
        out[s.texels[ok]] += s.conf[ok].astype(np.float64) ** 2
    return np.clip(out / FULL, 0, 1)


def blend_frames(faces: np.ndarray, vertices: np.ndarray, frames: list, K, light: np.ndarray, tri: np.ndarray,
                 bary: np.ndarray, fit: bool = False) -> Blend:
    """Blend the frames (:func:`read_frames`) onto the texels (triangles ``tri`` (N,), weights ``bary`` (N, 3))
    of the mesh ``vertices`` (V, 3) in the output frame, lit by ``light`` (9, 3) there, or with ``fit`` by
    the light fitted to every frame's colours (:func:`sweep_light`; ``light`` is kept when fewer than
    1000 texels are seen)."""
    Xn = interpolate(faces, tri, bary, np.hstack([vertices, vertex_normals(vertices, faces)]))
    X, n = Xn[:, :3], Xn[:, 3:]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    N = len(tri)
    seen = observe_frames(faces, vertices, frames, K, X, n, tri)
    gains = frame_gains(seen, N)
    acc, wsum = _accumulate(seen, gains, N)
    color = acc / np.maximum(wsum, 1e-12)[:, None]
    best, conf2 = np.zeros(N), np.zeros(N)
    for s in seen:
        np.maximum.at(best, s.texels, s.conf)
        conf2[s.texels] += s.conf.astype(np.float64) ** 2
    if fit and (best > SEEN).sum() >= 1000:
        light = sweep_light(color, np.clip(conf2 / FULL, 0, 1), n)
    shading = np.maximum(sh_shading(to_view(n), light), 1e-6)
    dark = (shading < MIN_SHADING).any(1)
    albedo = np.clip(color / shading, 0, 1)
    trust = shading_trust(faces, len(vertices), tri, bary, albedo, shading, best)
    weight = np.where(dark | (wsum <= 0), 0.0, replace_weight(seen, N) * trust)
    frames_seen = [{"frame": s.frame, "seen": float((s.conf > SEEN).sum() / N)} for s in seen]
    return Blend(albedo, weight, np.where(dark, 0.0, best * trust), [g.tolist() for g in gains], frames_seen,
                 np.asarray(light))


def sweep_fill(model, vertices: np.ndarray, tri: np.ndarray, bary: np.ndarray, albedo: np.ndarray,
               weight: np.ndarray) -> np.ndarray:
    """(N, 3) the sweep's own completion where its frames' blend is not trusted: the blended ``albedo`` (N, 3)
    of the texels (triangles ``tri`` (N,), weights ``bary`` (N, 3)) pooled at the vertices of ``model``'s
    mesh ``vertices`` (V, 3) with its confidence ``weight`` (N,) in [0, 1], and inpainted over the mesh as
    for one photo (:func:`headcast.texture.fill.inpaint_vertices`, fading to the blend's skin tone, the scalp
    to what was seen of it, the eyeballs to their sclera: :func:`headcast.texture.core.part_priors`).

    It replaces the one-photo albedo (the first frame's, mirrored and completed) as the sweep's fill: on
    the real sweep's texels seen head-on but not by the first frame, held out in 5-20 mm holes, it is
    nearer the head-on colour in 71-85 % of them (bench/RESULTS.md, "texels: the head's denominator, grazing
    views measured, the sweep's own fill")."""
    faces = model.faces
    V = len(vertices)
    a_v, den = pool_vertices(faces, V, tri, bary, albedo, weight)
    full = pool_vertices(faces, V, tri, bary, albedo[:, :1], np.ones(len(tri)))[1]
    w_v = np.clip(den / np.maximum(full, 1e-9), 0, 1)
    skin = region_faces(model, "face", ("eyes", "lips"))[tri] & (weight > SEEN)
    tone = np.median(albedo[skin if skin.sum() >= 20 else weight > SEEN], axis=0)
    prior, decay = part_priors(mesh_parts(faces, V), a_v, w_v, tone, model.masks.get("scalp"))
    return interpolate(faces, tri, bary, fill.inpaint_vertices(a_v, w_v, vertices, faces, prior, decay=decay))


def sweep_albedo(frames: list, model, vertices: np.ndarray, K, light: np.ndarray, tri: np.ndarray,
                 bary: np.ndarray, stats: dict) -> np.ndarray:
    """Per-texel albedo (N, 3) of a sweep's ``frames`` (:func:`read_frames`): the frames' blend where they see
    the texel, the completion of that blend (:func:`sweep_fill`) where none does. The light is fitted over
    every frame (:func:`blend_frames` with ``fit``; ``light``, the first frame's own, is its fallback) and
    put in ``stats['sweep_light']``, with the shares of texels seen and the frames' gains. ``model``: the head
    model (its faces and region masks)."""
    faces = model.faces
    b = blend_frames(faces, vertices, frames, K, light, tri, bary, fit=True)
    w = b.weight[:, None]
    out = w * b.albedo + (1 - w) * sweep_fill(model, vertices, tri, bary, b.albedo, b.weight)
    own = b.best > SEEN
    head = own[head_texels(faces, len(vertices), tri, model.masks.get("eyes"))].mean()
    stats.update(sweep_frames=len(frames), texels_seen_sweep=float(own.mean()), head_texels_seen_sweep=float(head),
                 sweep_gains=b.gains, sweep_seen=b.frames, sweep_light=b.light.tolist())
    logger.info(f"texture: {len(frames)} sweep frames see {own.mean():.0%} of the atlas's texels, {head:.0%} of the "
                f"head surface's (the atlas without the eyeballs and their sockets)")
    return out


def apply_sweep(res, frames: list, photo: np.ndarray, model, vertices: np.ndarray, K) -> None:
    """Set the albedo and the light of a texture result (:class:`headcast.texture.core.TextureResult`, made
    with ``photo_albedo=False``) from a sweep's ``frames`` (:func:`read_frames`): their blend and the light
    fitted over them (:func:`sweep_albedo`); then render it in the first frame (``photo`` (H, W, 3) uint8, its
    colour) for its render and Loss4."""
    from headcast.texture.atlas import dilate
    from headcast.texture.render import render_textured

    idx, tri, bary = res.space.texmap.texels()
    S = res.space.texmap.size
    out = sweep_albedo(frames, model, vertices, K, res.light, tri, bary, res.stats)
    tex = np.zeros((S * S, 3), np.float32)
    tex[idx] = np.clip(out, 0, 1)
    res.albedo = dilate(tex.reshape(S, S, 3), res.space.texmap.covered)
    res.light = np.asarray(res.stats["sweep_light"])
    a = res.space.atlas
    res.render, _ = render_textured(vertices, model.faces, a.uv, a.uv_faces, res.albedo, res.light, K)
    res.loss4 = loss4(photo, res.render, res.face_pixels)
