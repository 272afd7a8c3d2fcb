"""Texturing benchmark: albedo and lighting against synthetic ground truth, Loss4 on real frames.

Synthetic subjects (``headcast.synth``) have a known per-vertex albedo and SH light. The albedo
is baked into the model's texture atlas and compared with the estimate over the *visible face
texels* (texels of 'face' triangles that the camera sees with confidence > 0.5), as the mean
absolute error over texels and channels on the 0..1 scale:

- ``raw``: as estimated. Without an albedo model, albedo and light are only known up to a scale
  per colour channel; the estimate fixes it by convention (mean face shading 1), so the raw
  error includes that convention's miss;
- ``aligned``: after the best per-channel scale (least squares), the usual scale-invariant
  measure of intrinsic-image work; it measures the albedo's pattern.

Lighting: the relative error of the shading over the face pixels (raw and with the inverse of
the albedo's scale), the relative error of the 27 coefficients after that scale, and the angle
between the estimated and true dominant light directions (first-order terms).

Geometry: ``gt`` textures the ground-truth mesh (the texturing stage alone); ``fit`` first runs
the full reconstruction on the frame (the whole pipeline). Real frames: the three TrueDepth
mannequin captures are reconstructed, then textured; Loss4 and seconds of the texturing stage.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path

import numpy as np

from headcast.bench import REAL_FRAMES, finish, machine, truedepth_folder
from headcast.core.errors import HeadcastError
from headcast.core.sh import sh_shading, to_view
from headcast.io.validate import check_number
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.synth import default_intrinsics, random_subject, render_rgbd
from headcast.texture.atlas import bake
from headcast.texture.core import region_faces, texture_frame

logger = logging.getLogger(__name__)
SIZE = inspect.signature(texture_frame).parameters["size"].default  # the texturing stage's atlas side


def albedo_errors(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """Mean absolute errors (0..1) of albedo textures (S, S, 3) over ``mask`` (S, S): raw and after
    the least-squares scale per channel; also the scales (3,) that map the estimate onto the truth."""
    e, g = estimate[mask].astype(np.float64), truth[mask].astype(np.float64)
    k = (e * g).sum(0) / np.maximum((e * e).sum(0), 1e-12)
    return {"raw": float(np.abs(e - g).mean()), "aligned": float(np.abs(e * k - g).mean()), "scale": k.tolist()}


def light_direction(light: np.ndarray) -> np.ndarray:
    """Unit view-frame direction of a SH light's first-order terms (averaged over colours)."""
    d = np.asarray(light)[1:4].mean(1)
    return d / max(np.linalg.norm(d), 1e-12)


def lighting_errors(estimate: np.ndarray, truth: np.ndarray, normals_view: np.ndarray, scale: np.ndarray) -> dict:
    """Errors of an SH light (9, 3) against the truth over view-frame ``normals`` (N, 3).

    ``scale`` (3,) is the albedo scale (truth / estimate): the light it implies is ``estimate / scale``.
    """
    s_est = sh_shading(normals_view, estimate)
    s_gt = sh_shading(normals_view, truth)
    s_al = s_est / np.asarray(scale)[None, :]
    L_al = estimate / np.asarray(scale)[None, :]
    cosang = float(np.clip(light_direction(estimate) @ light_direction(truth), -1, 1))
    return {
        "shading_raw": float(np.abs(s_est - s_gt).mean() / np.abs(s_gt).mean()),
        "shading_aligned": float(np.abs(s_al - s_gt).mean() / np.abs(s_gt).mean()),
        "coefficients_aligned": float(np.linalg.norm(L_al - truth) / np.linalg.norm(truth)),
        "direction_deg": float(np.degrees(np.arccos(cosang))),
    }


def synthetic_case(model, seed: int, K, geometry: str = "gt", profile: str = "truedepth", size: int = SIZE,
                   fitter=None) -> dict:
    """Texture one synthetic subject and measure it against its ground truth."""
    subj = random_subject(model, seed)
    fr = render_rgbd(model, subj, K, profile=profile, seed=seed)
    verts = fr.vertices
    if geometry == "fit":
        from headcast.fit.reconstruct import fit_observation
        from headcast.preprocess.preprocess import preprocess
        from headcast.preprocess.rgbd import RGBDFrame

        obs = preprocess(RGBDFrame(fr.color, fr.depth, K), "mediapipe", seed=seed)
        verts = fit_observation(obs, fitter, "full").vertices
    t0 = time.perf_counter()
    res = texture_frame(model, verts, fr.color, K, size=size, depth=fr.depth)
    secs = time.perf_counter() - t0
    space = res.space
    truth = bake(space.texmap, model.faces, subj.albedo)
    face_texel = np.zeros(space.texmap.tri.shape, bool)
    cov = space.texmap.covered
    face_texel[cov] = region_faces(model, "face")[space.texmap.tri[cov]]
    mask = face_texel & (res.seen > 0.5)
    alb = albedo_errors(res.albedo, truth, mask)
    n = fr.vertices  # lighting is judged on the true surface's normals at the face pixels
    from headcast.texture.observe import View

    view = View.make(n, model.faces, fr.color, K)
    px = view.region_pixels(region_faces(model, "face"))
    nv = to_view(view.pixel_normals()[px])
    light = lighting_errors(res.light, subj.lighting, nv, np.asarray(alb["scale"]))
    true_mean = sh_shading(nv, subj.lighting).mean(0)
    return {"seed": seed, "yaw_deg": subj.info["yaw_deg"], "texels": int(mask.sum()), "albedo": alb,
            "lighting": light, "true_mean_face_shading": true_mean.tolist(), "loss4": res.loss4,
            "seconds": secs}


def run_synthetic(model, n: int, seed: int, geometry: str, size: int) -> dict:
    K = default_intrinsics(640, 480)
    fitter = None
    if geometry == "fit":
        from headcast.fit.reconstruct import make_fitter

        fitter = make_fitter(model)
    rows = []
    for i in range(n):
        try:
            r = synthetic_case(model, seed + i, K, geometry, size=size, fitter=fitter)
        except HeadcastError as e:  # a detector miss (no face, no depth around it) is counted, not hidden
            if geometry != "fit":
                raise
            logger.info(f"  subject {seed + i}: skipped ({e})")
            continue
        rows.append(r)
        logger.info(f"  subject {seed + i} ({geometry} geometry, yaw {r['yaw_deg']:+.0f}): albedo error raw "
                    f"{r['albedo']['raw']:.3f}, aligned {r['albedo']['aligned']:.3f}; shading error raw "
                    f"{r['lighting']['shading_raw']:.1%}, aligned {r['lighting']['shading_aligned']:.1%}; light "
                    f"direction {r['lighting']['direction_deg']:.0f} deg; Loss4 {r['loss4']:.3f}; {r['seconds']:.1f} s")
    med = lambda f: float(np.median([f(r) for r in rows])) if rows else float("nan")  # noqa: E731
    mean = lambda f: float(np.mean([f(r) for r in rows])) if rows else float("nan")  # noqa: E731
    return {
        "geometry": geometry, "n": n, "used": len(rows),
        "albedo_raw": {"mean": mean(lambda r: r["albedo"]["raw"]), "median": med(lambda r: r["albedo"]["raw"])},
        "albedo_aligned": {"mean": mean(lambda r: r["albedo"]["aligned"]),
                           "median": med(lambda r: r["albedo"]["aligned"])},
        "shading_raw": med(lambda r: r["lighting"]["shading_raw"]),
        "shading_aligned": med(lambda r: r["lighting"]["shading_aligned"]),
        "coefficients_aligned": med(lambda r: r["lighting"]["coefficients_aligned"]),
        "direction_deg": med(lambda r: r["lighting"]["direction_deg"]),
        "loss4": mean(lambda r: r["loss4"]),
        "seconds_per_frame": mean(lambda r: r["seconds"]),
        "subjects": rows,
    }


def run_real(model, folder: Path, figures: Path | None, size: int, albedo_model) -> list[dict]:
    """Reconstruct and texture the three TrueDepth frames: Loss4 and timings per frame, and one
    figure (``figures/texture-real.png``: per frame, photo | render | turned left | turned right)."""
    import cv2

    from headcast.fit.reconstruct import fit_observation, make_fitter
    from headcast.preprocess.preprocess import preprocess
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.render.images import save_png
    from headcast.texture.pipeline import picture

    fitter = make_fitter(model)
    out, rows = [], []
    for name in REAL_FRAMES:
        frame = load_rgbd(str(folder / name))
        obs = preprocess(frame, "mediapipe")
        rec = fit_observation(obs, fitter, "full")
        t0 = time.perf_counter()
        res = texture_frame(model, rec.vertices, frame.color, frame.K, albedo_model=albedo_model, size=size,
                            depth=frame.depth)
        secs = time.perf_counter() - t0
        row = {"frame": name, "loss4": res.loss4, "seconds": secs, "face_pixels": res.stats["face_pixels"],
               "texels_seen": res.stats.get("texels_seen"), "texels_mirrored": res.stats.get("texels_mirrored"),
               "light": res.light.tolist()}
        out.append(row)
        logger.info(f"  real {name}: Loss4 {res.loss4:.4f} over {row['face_pixels']} face pixels, texturing {secs:.1f} s")
        if figures is not None:
            rows.append(picture(model, rec.vertices, frame.color, frame.K, res))
    if rows:
        figures.mkdir(parents=True, exist_ok=True)
        w = min(r.shape[1] for r in rows)
        img = np.concatenate([cv2.resize(r, (w, round(r.shape[0] * w / r.shape[1])), interpolation=cv2.INTER_AREA)
                              for r in rows], axis=0)
        scale = min(1.0, 1100 / img.shape[1])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        save_png(figures / "texture-real.png", img)
    return out


def run_texture_bench(n: int = 10, seed: int = 2000, geometry: str = "gt,fit", model_spec: str = DEFAULT_MODEL,
                      size: int = SIZE, albedo_model: str | Path | None = None, real: bool = True,
                      samples: Path | None = None, figures: Path | None = None, out: Path | None = None) -> dict:
    """Run the benchmark (see the module docstring); log a markdown summary; return every figure.

    ``geometry`` is ``gt``, ``fit`` or both (``gt,fit``). ``albedo_model`` applies to the real
    frames only (synthetic albedos are not drawn from one).
    """
    check_number(n, "--n", 0, None, integer=True)  # 0: the real frames alone
    check_number(seed, "--seed", 0, None, integer=True)
    model = resolve_model(model_spec)
    am = None
    if albedo_model is not None:
        from headcast.texture.albedo_model import load_albedo_model

        am = load_albedo_model(albedo_model)
    result = {"model": model.name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "size": size,
              "synthetic": [], "real": []}
    for g in [x.strip() for x in geometry.split(",") if x.strip()]:
        logger.info(f"synthetic subjects, {g} geometry:")
        result["synthetic"].append(run_synthetic(model, n, seed, g, size))
    folder = truedepth_folder(samples)
    if real and folder.is_dir():
        logger.info("real TrueDepth frames:")
        result["real"] = run_real(model, folder, figures, size, am)
    elif real:
        logger.info(f"real frames skipped: {folder} is absent")
    return finish(out, "texture", result, summary_markdown(result))


def summary_markdown(result: dict) -> str:
    lines = [f"Model `{result['model']}`, albedo atlas {result['size']}x{result['size']}; {result['machine']}; "
             f"{result['date']}.", ""]
    if result["synthetic"]:
        lines += ["| geometry | subjects | albedo error raw, mean / median | albedo error aligned, mean / median | "
                  "shading error raw / aligned (median) | light coefficients (aligned) | light direction | "
                  "Loss4 | s per frame |", "|---|---|---|---|---|---|---|---|---|"]
        for s in result["synthetic"]:
            lines.append(
                f"| {s['geometry']} | {s['used']} | {s['albedo_raw']['mean']:.3f} / {s['albedo_raw']['median']:.3f} | "
                f"{s['albedo_aligned']['mean']:.3f} / {s['albedo_aligned']['median']:.3f} | "
                f"{s['shading_raw']:.1%} / {s['shading_aligned']:.1%} | {s['coefficients_aligned']:.1%} | "
                f"{s['direction_deg']:.0f} deg | {s['loss4']:.4f} | {s['seconds_per_frame']:.1f} |")
    if result["real"]:
        lines += ["", "| real frame | Loss4 | face pixels | texels seen | texturing s |", "|---|---|---|---|---|"]
        for r in result["real"]:
            seen = f"{r['texels_seen']:.0%}" if r.get("texels_seen") is not None else "-"
            lines.append(f"| {r['frame']} | {r['loss4']:.4f} | {r['face_pixels']} | {seen} | {r['seconds']:.1f} |")
    return "\n".join(lines)
