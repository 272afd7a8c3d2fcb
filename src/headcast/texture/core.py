"""Texturing one frame: SH lighting and an albedo map in the model's UV atlas from a photo.

The paper's stage: lambda (SH light, 27 numbers) and the albedo minimise Loss4, the mean absolute
difference between the photo and the rendered textured model over the face pixels. Two albedos:

- from an albedo model (``albedo_model``, FLAME UV layout): rho and lambda by IRLS on Loss4;
- by default, from the photo: lambda by a robust fit with a uniform albedo on the face's skin,
  then per texel ``albedo = photo / shading`` where the camera sees the surface, mirrored across
  the face's symmetry plane where only the other side was seen, and a smooth completion towards
  the mean skin tone elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import minimum_filter

from headcast.core.camera import Intrinsics, project
from headcast.core.errors import HeadcastError
from headcast.core.sh import sh_shading, to_view
from headcast.model.head_model import HeadModel
from headcast.texture import fill
from headcast.texture.albedo_model import AlbedoModel, check_flame_layout, fit_albedo_model
from headcast.texture.atlas import Atlas, TexelMap, build_atlas, dilate, rasterize_uv, sample, uv_to_texel
from headcast.texture.lighting import fit_light, loss4, normalise_light
from headcast.texture.observe import View, interpolate
from headcast.texture.render import render_textured

logger = logging.getLogger(__name__)

MIN_SHADING = 0.05  # below this the photo says nothing reliable about the albedo
# confidence of photo / shading by the shading (1 = the face's mean): in the lid folds and eye corners a
# small error of the fitted surface's normal makes a small shading, and dividing by it paints a light
# band that any other light shows; there the mirror and the completion take over
SHADING_RAMP = (0.3, 0.6)
# pixels: a neck point this near a photo pixel that is not skin-like (a shirt's) takes its likeness (_skin_pixels)
SKIN_EDGE_PX = 2
MIRROR_TRUST = 0.9  # a mirrored texel counts a little less than one seen directly
FILL_DECAY = 0.03  # metres over which the completion fades to the mean skin tone
PART_DECAY = 0.004  # the same on small separate parts (eyeballs): their unseen side is not their iris
# share of the seen scalp's vertices whose colour is not skin-like (hair) from which the unseen scalp fades to
# the hair's colour, not the skin tone; a bald scalp has none (bench/RESULTS.md "scalp")
HAIR_SEEN = 0.1
MIN_HAIR = 10  # vertices: the fewest seen hair vertices whose median colour fills the scalp
# metres over which a haired head's completion fades to the hair's colour on the scalp and to the skin tone
# elsewhere: past the last seen skin under the hairline the hair starts within a centimetre, not 3, and a
# skin fade as slow as 3 cm let the hair reach past the scalp (bench/RESULTS.md "scalp")
HAIR_DECAY = 0.01


@dataclass
class TextureMirror:
    """The mirror of every covered texel of a :class:`TextureSpace` (the one-photo albedo's)."""

    xy: np.ndarray  # (N, 2) texel position of each covered texel's mirror image
    ok: np.ndarray  # (N,) bool
    sym: np.ndarray  # (V,) mirror vertex, -1 none
    feature: np.ndarray  # (V,) 1 near the inner facial features (mirrored in full detail), 0 away


@dataclass
class TextureSpace:
    """A model's atlas and its texel map at one size; ``mirror`` is made on first use (:func:`texture_mirror`)."""

    atlas: Atlas
    texmap: TexelMap
    mirror: TextureMirror | None = None


_SPACES: dict[str, TextureSpace] = {}


def texture_space(model: HeadModel, size: int) -> TextureSpace:
    """The model's :class:`TextureSpace` at ``size`` (cached per model content and size)."""
    model.require_uv("texture")
    h = hashlib.sha1()
    for a in (model.uv, model.uv_faces, model.faces, model.v_template):
        h.update(np.ascontiguousarray(a).tobytes())
    key = f"{h.hexdigest()}-{size}"
    if key not in _SPACES:
        atlas = build_atlas(model.uv, model.uv_faces, model.v_template, model.faces)
        texmap = rasterize_uv(atlas.uv, atlas.uv_faces, size)
        if len(_SPACES) >= 4:
            _SPACES.pop(next(iter(_SPACES)))
        _SPACES[key] = TextureSpace(atlas, texmap)
    return _SPACES[key]


def texture_mirror(model: HeadModel, space: TextureSpace) -> TextureMirror:
    """The mirror of ``space`` (the model's own :func:`texture_space`), made once and kept on it: only the
    one-photo albedo uses it (a sweep's blend and an albedo model do not)."""
    if space.mirror is None:
        sym = fill.vertex_symmetry(model.v_template)
        xy, ok = fill.mirror_texels(space.texmap, space.atlas, model.faces, model.v_template, sym)
        space.mirror = TextureMirror(xy, ok, sym, fill.feature_weight(model.v_template, model.landmark_vertices()))
    return space.mirror


@dataclass
class TextureResult:
    """Everything a textured frame produces.

    Attributes:
        albedo: (S, S, 3) float32 albedo atlas in 0..1 (empty texels copied from their neighbours).
        light: (9, 3) SH light, the paper's lambda.
        rho: (K,) albedo-model coefficients, or None for the photo albedo.
        space: the model's texture space (atlas UVs, texel map).
        render: (H, W, 3) float32 the textured, lit model from the photo's camera (0 off the mesh).
        face_pixels: (H, W) bool pixels of Loss4 (face triangles, inside the silhouette).
        loss4: the paper's Loss4 over ``face_pixels`` (0..1).
        seen: (S, S) float32 confidence of each texel's own observation (0 unseen).
        stats: counts, fractions and timings.
    """

    albedo: np.ndarray
    light: np.ndarray
    rho: np.ndarray | None
    space: TextureSpace
    render: np.ndarray
    face_pixels: np.ndarray
    loss4: float
    seen: np.ndarray
    stats: dict = field(default_factory=dict)


def region_faces(model: HeadModel, include: str, exclude: tuple[str, ...] = ()) -> np.ndarray:
    """(F,) bool triangles with all corners in mask ``include`` and none in the ``exclude`` masks."""
    f = model.faces
    m = np.isin(f, model.masks[include]).all(1)
    for name in exclude:
        if name in model.masks:
            m &= ~np.isin(f, model.masks[name]).any(1)
    return m


def texture_frame(model: HeadModel, vertices: np.ndarray, image: np.ndarray, K: Intrinsics,
                  albedo_model: AlbedoModel | None = None, size: int = 1024, depth: np.ndarray | None = None,
                  photo_albedo: bool = True) -> TextureResult:
    """Light and albedo of a fitted head (``vertices`` (V, 3), camera frame, metres) in a photo.

    ``image`` (H, W, 3) uint8 RGB of size ``K.width`` x ``K.height``; ``depth`` (H, W) metres, the
    measured depth (optional: it keeps photo pixels that show something else than the fitted
    surface out of the albedo). ``photo_albedo=False`` (a sweep, whose frames' blend gives the albedo:
    :func:`headcast.texture.multiview.apply_sweep`) fits the light only: the albedo and the render stay
    zeros and Loss4 NaN. See the module docstring.
    """
    t = {"start": time.perf_counter()}
    img = np.asarray(image)
    if img.shape[:2] != (K.height, K.width):
        raise HeadcastError(f"the image is {img.shape[1]}x{img.shape[0]} but the intrinsics are for "
                            f"{K.width}x{K.height}")
    if depth is not None and np.asarray(depth).shape != img.shape[:2]:
        raise HeadcastError(f"the depth map is {depth.shape[1]}x{depth.shape[0]} but the image is "
                            f"{img.shape[1]}x{img.shape[0]}")
    if albedo_model is not None:
        check_flame_layout(model.n_vertices, len(model.uv), model.name, albedo_model.name)
    space = texture_space(model, size)
    t["texture_space"] = time.perf_counter()
    view = View.make(vertices, model.faces, img, K, depth)
    face_tri = region_faces(model, "face")
    skin_tri = region_faces(model, "face", ("eyes", "lips"))
    face_px = view.region_pixels(face_tri)
    fit_px = view.region_pixels(skin_tri)
    if fit_px.sum() < 50:
        raise HeadcastError(f"only {int(fit_px.sum())} face pixels are visible; the face must face the camera")
    npix = view.pixel_normals()
    nview = to_view(npix)
    photo = view.image
    t["view"] = time.perf_counter()

    idx, tri, bary = space.texmap.texels()
    S = space.texmap.size
    rho = None
    stats: dict = {}
    if albedo_model is not None:
        logger.info(f"texture: fitting {albedo_model.n_components} albedo components and the SH light on "
                    f"{int(face_px.sum())} face pixels")
        uvc = model.uv[model.uv_faces].astype(np.float64)
        puv = np.einsum("nk,nkc->nc", view.hits.bary[face_px].astype(np.float64), uvc[view.hits.tri[face_px]])
        mean, basis = albedo_model.sample(puv)
        rho, light, _ = fit_albedo_model(photo[face_px], nview[face_px], mean, basis)
        tuv = np.einsum("nk,nkc->nc", bary.astype(np.float64), uvc[tri])
        values = sample(albedo_model.texture(rho), uv_to_texel(tuv, albedo_model.size))
        seen = np.zeros(len(idx), np.float32)
        stats["albedo"] = f"albedo model {albedo_model.name} ({albedo_model.n_components} components)"
    else:
        logger.info(f"texture: fitting the SH light on {int(fit_px.sum())} skin pixels")
        light_raw, _ = fit_light(photo[fit_px], nview[fit_px])
        light, _ = normalise_light(light_raw, nview[face_px])
        stats["albedo"] = "photo" if photo_albedo else "sweep"
        if not photo_albedo:
            return TextureResult(np.zeros((S, S, 3), np.float32), light, None, space, np.zeros(img.shape, np.float32),
                                 face_px, float("nan"), np.zeros((S, S), np.float32), stats)
        values, seen = _photo_albedo(model, view, space, light, tri, bary, stats)
    t["albedo"] = time.perf_counter()

    tex = np.zeros((S * S, 3), np.float32)
    tex[idx] = np.clip(values, 0, 1)
    tex = dilate(tex.reshape(S, S, 3), space.texmap.covered)
    seen_img = np.zeros(S * S, np.float32)
    seen_img[idx] = seen
    render, _ = render_textured(view.vertices, model.faces, space.atlas.uv, space.atlas.uv_faces, tex, light, K,
                                hits=view.hits)
    l4 = loss4(photo, render, face_px)
    t["render"] = time.perf_counter()
    stats.update(face_pixels=int(face_px.sum()), fit_pixels=int(fit_px.sum()),
                 seconds={k: round(t[k] - t[p], 3) for p, k in zip(list(t)[:-1], list(t)[1:])})
    logger.info(f"texture: Loss4 {l4:.4f} over {int(face_px.sum())} face pixels")
    return TextureResult(tex, light, rho, space, render, face_px, l4, seen_img.reshape(S, S), stats)


def _photo_albedo(model: HeadModel, view: View, space: TextureSpace, light: np.ndarray, tri: np.ndarray,
                  bary: np.ndarray, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per covered texel: albedo (N, 3) from the photo, mirror and completion, and the confidence
    (N,) of the texel's own observation."""
    faces = model.faces
    S = space.texmap.size
    # seen texels: photo / shading
    Xn = interpolate(faces, tri, bary, np.hstack([view.vertices, view.normals]))
    X, n = Xn[:, :3], Xn[:, 3:]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    col, w = view.observe(X, n, tri=tri)
    a_s, w = _divide(col, w, sh_shading(to_view(n), light))

    # the same at the vertices, for the completion
    V = len(view.vertices)
    col_v, w_v = view.observe(view.vertices, view.normals, vertex_ids=np.arange(V))
    a_v, w_v = _divide(col_v, w_v, sh_shading(to_view(view.normals), light))
    # mean skin tone: confidently seen skin texels of the face
    skin = region_faces(model, "face", ("eyes", "lips"))[tri] & (w > 0.5)
    if skin.sum() < 20:
        skin = w > 0.5
    if skin.sum() < 20:
        raise HeadcastError("the camera sees too little of the head to estimate its albedo")
    tone = np.median(a_s[skin], axis=0)
    # the neck is mostly behind clothes in photos: only skin-like colours count there, and not next to others
    skin_px = _skin_pixels(view, light, tone)
    neck_t = region_faces(model, "neck")[tri]
    w = np.where(neck_t, w * sample(skin_px, project(X, view.K))[:, 0], w)
    neck_v = np.isin(np.arange(V), model.masks["neck"])
    w_v = np.where(neck_v, w_v * sample(skin_px, project(view.vertices, view.K))[:, 0], w_v)

    # mirrored colour: in full near the facial features, smoothed elsewhere (see fill)
    mirror = texture_mirror(model, space)
    sym = mirror.sym
    has = sym >= 0
    ms = np.maximum(sym, 0)
    # the smooth colour leaves out what does not look like skin (a sticker, a mole) where skin is
    # around, yet still follows hair or brows where they are all there is; on a haired scalp hair is what
    # is there (left out, the hair mirrored near the hairline came out in the skin's colour)
    hair_v, hair = haired_scalp(view.part, a_v, w_v, tone, model.masks.get("scalp"))
    skin_only = np.where(hair_v & (hair is not None), 1.0, 0.05 + 0.95 * _skin_likeness(a_v, tone))
    low_v, _ = fill.smooth_weighted(a_v, w_v * skin_only, faces)
    g_v = mirror.feature
    w_mv = np.where(has, w_v[ms], 0.0) * MIRROR_TRUST
    shift = _mirror_shift(low_v, w_v, sym, view.vertices, faces)
    a_mv = g_v[:, None] * a_v[ms] + (1 - g_v[:, None]) * low_v[ms] + shift
    tot = w_v + w_mv
    data = (w_v[:, None] * a_v + w_mv[:, None] * a_mv) / np.maximum(tot, 1e-9)[:, None]

    prior, decay = part_priors(view.part, data, np.clip(tot, 0, 1), tone, model.masks.get("scalp"))
    filled_v = fill.inpaint_vertices(data, np.clip(tot, 0, 1), view.vertices, faces, prior, decay=decay)
    per_texel = interpolate(faces, tri, bary, np.hstack([filled_v, low_v[ms], g_v[:, None], shift]))
    a_f, low_m, g, shift_t = per_texel[:, :3], per_texel[:, 3:6], per_texel[:, 6:7], per_texel[:, 7:]

    # mirror texels: premultiplied sampling of the seen albedo at each texel's mirror image
    idx = np.flatnonzero(space.texmap.tri.ravel() >= 0)
    pre = np.zeros((S * S, 4), np.float32)
    pre[idx, :3] = a_s * w[:, None]
    pre[idx, 3] = w
    m = sample(pre.reshape(S, S, 4), mirror.xy)
    w_m = np.where(mirror.ok, m[:, 3], 0.0)
    a_m = m[:, :3] / np.maximum(m[:, 3:], 1e-6)
    w_m = np.clip(w_m, 0, 1) * MIRROR_TRUST
    a_m = g * a_m + (1 - g) * low_m + shift_t

    out = w[:, None] * a_s + (1 - w)[:, None] * (w_m[:, None] * a_m + (1 - w_m)[:, None] * a_f)
    own = w > 0.5
    mirrored = ~own & (w_m > 0.5)
    stats.update(skin_tone=tone.tolist(), texels=int(len(tri)), texels_seen=float(own.mean()),
                 texels_mirrored=float(mirrored.mean()), texels_filled=float((~own & ~mirrored).mean()))
    logger.info(f"texture: {own.mean():.0%} of texels seen, {mirrored.mean():.0%} mirrored, "
                f"{(~own & ~mirrored).mean():.0%} completed")
    return out, w.astype(np.float32)


def _mirror_shift(low: np.ndarray, weight: np.ndarray, sym: np.ndarray, vertices: np.ndarray,
                  faces: np.ndarray) -> np.ndarray:
    """(V, 3) colour to add to a vertex's mirrored albedo so that it meets the albedo seen on its own side.

    The two halves of a face are seldom lit alike beyond what the SH light explains (cast shadows, the
    camera's exposure falloff), so a mirrored colour copied as it is leaves a visible line where the
    seen side ends. The smooth colours ``low`` (V, 3) of both sides are compared where both were seen
    (confidence ``weight`` (V,)), and the difference is carried smoothly into the region only the mirror
    saw, fading to 0 over :data:`FILL_DECAY`."""
    has = sym >= 0
    ms = np.maximum(sym, 0)
    both = np.where(has, np.minimum(weight, weight[ms]), 0.0)
    diff = np.where(has[:, None], low - low[ms], 0.0)
    return fill.inpaint_vertices(diff, np.clip(both, 0, 1), vertices, faces, np.zeros(3), decay=FILL_DECAY)


def part_priors(part: np.ndarray, data: np.ndarray, weight: np.ndarray, tone: np.ndarray,
                scalp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per vertex, the colour (V, 3) the completion fades to and over how many metres (V,).

    The largest part of the mesh (the head) fades to the skin tone over :data:`FILL_DECAY`, but for the
    ``scalp`` (vertex ids, the model's mask), which fades to the colour of the hair seen on it
    (:func:`_seen_hair`) when there is some, the head then over :data:`HAIR_DECAY`. Hair seen at the front and
    sides then goes on round the unseen back of the head, where a fade to the face's skin tone drew a bald
    patch ringed by a dark smudge (the hair's border smoothed into the skin colour); a bald scalp keeps the
    face's tone, measured on more skin.
    Smaller separate parts (eyeballs) fade quickly (:data:`PART_DECAY`) to the brighter end of
    what was seen of them (the 95th percentile by brightness: an eyeball's sclera, not its
    iris), or keep the skin tone when hardly any of them was seen.
    """
    prior = np.broadcast_to(tone, data.shape).copy()
    decay = np.full(len(part), FILL_DECAY)
    main = np.argmax(np.bincount(part))
    on, hair = haired_scalp(part, data, weight, tone, scalp)
    if hair is not None:  # the whole head at the hair's pace: else the hair reaches past the scalp
        prior[on] = hair
        decay[part == main] = HAIR_DECAY
    for p in np.unique(part):
        if p == main:
            continue
        on = part == p
        decay[on] = PART_DECAY
        sel = on & (weight > 0.5)
        if sel.sum() >= 5:
            seen = data[sel]
            lum = seen.mean(1)
            prior[on] = seen[np.argsort(lum)[int(0.95 * (len(lum) - 1))]]
    return prior, decay


def haired_scalp(part: np.ndarray, data: np.ndarray, weight: np.ndarray, tone: np.ndarray,
                 scalp: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The scalp's vertices (V,) bool (the model's mask ``scalp``, on the largest part of the mesh) and the
    colour (3,) of the hair seen on it (:func:`_seen_hair`: colours ``data`` (V, 3) seen with ``weight`` > 0.5),
    or None for a bald scalp or none."""
    on = np.zeros(len(part), bool)
    if scalp is None or not len(scalp):
        return on, None
    on[np.asarray(scalp)] = True
    on &= part == np.argmax(np.bincount(part))
    return on, _seen_hair(data[on & (weight > 0.5)], tone)


def _seen_hair(seen: np.ndarray, tone: np.ndarray) -> np.ndarray | None:
    """The hair's colour (3,) among a scalp's seen vertex colours (N, 3), or None (a bald scalp, or a few dark
    marks on one) unless those that are not skin-like (:func:`_skin_likeness` under 0.5) are at least
    :data:`HAIR_SEEN` of the seen ones and :data:`MIN_HAIR`. The colour is the median of the least skin-like:
    those beyond 2x of the skin tone in a channel (likeness 0) when there are :data:`MIN_HAIR` of them, else all
    the not skin-like ones; the seen hair nearest the hairline is mixed with the skin beneath it.

    How much of the scalp was seen does not decide (bench/RESULTS.md "scalp": over 40 synthetic subjects a
    bald scalp's seen colours were all skin-like however much of it was seen, and a haired one's 4 % seen
    already gave its hair); nor does the median of all the seen scalp, which mixes in the skin under the
    hairline and filled the back with a colour halfway to the skin."""
    likeness = _skin_likeness(seen, tone)
    hair = likeness < 0.5
    if hair.sum() < max(HAIR_SEEN * len(seen), MIN_HAIR):
        return None
    purest = likeness == 0
    return np.median(seen[purest if purest.sum() >= MIN_HAIR else hair], axis=0)


def _skin_pixels(view: View, light: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """(H, W, 1) float32 per photo pixel, the lowest :func:`_skin_likeness` of the albedo (photo / shading, light
    (9, 3), skin ``tone`` (3,)) of the mesh's pixels within :data:`SKIN_EDGE_PX` of it (1 off the mesh).

    Sampled bilinearly at a neck point, the likeness of its own colour let through the pixels that mix skin and a
    shirt at the collar's edge: half skin-like, half weighted, they drew a dotted reddish line along the
    collar (bench/RESULTS.md "collar"). The lowest likeness around keeps such points out."""
    hit = view.hits.hit
    n = to_view(view.pixel_normals()[hit])
    a = np.clip(view.image[hit] / np.maximum(sh_shading(n, light), MIN_SHADING), 0, 1)
    like = np.ones(hit.shape, np.float32)
    like[hit] = _skin_likeness(a, tone)
    return minimum_filter(like, size=2 * SKIN_EDGE_PX + 1)[..., None]


def _skin_likeness(albedo: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """(N,) 1 for colours within a factor 1.4 of the skin tone in every channel, 0 beyond a factor 2."""
    d = np.abs(np.log(np.maximum(albedo, 1e-3) / np.maximum(tone, 1e-3))).max(1)
    return np.clip((np.log(2.0) - d) / (np.log(2.0) - np.log(1.4)), 0, 1)


def _divide(color: np.ndarray, weight: np.ndarray, shading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """albedo = color / shading, clipped to 0..1; the weight fades with the shading (:data:`SHADING_RAMP`)."""
    a = np.clip(color / np.maximum(shading, MIN_SHADING), 0, 1)
    lo, hi = SHADING_RAMP
    trust = np.clip((shading.min(1) - lo) / (hi - lo), 0, 1)
    return a, weight * trust
