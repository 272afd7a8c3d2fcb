"""Held-out views benchmark (``headcast bench views``) on the real TrueDepth sweep.

The head is reconstructed and textured from one frame (default 050, frontal). The camera moves
around the still mannequin, so every other frame sees the same head from another side: the head is
registered to that frame's depth by its pose only (rigid ICP, point-to-plane, Open3D, started from
yaw candidates about the head's vertical axis), rendered with its albedo and the fitted SH light
(turned with the head: the light is fixed to the room, like the head), and compared with the photo
over the head pixels (the mesh's skin triangles, neck left out, where the measured depth agrees with
the rendered one within :data:`DEPTH_TOL`): L1 (mean absolute difference, 0..1, RGB) and SSIM
(scikit-image, grey, averaged over the head pixels), by view angle (the registered yaw, degrees).
The phone sets exposure and white balance per frame, so L1 is also given after one least-squares
gain per colour channel (``l1_exposure_matched``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from headcast.bench import machine, truedepth_folder
from headcast.core.camera import FLIP
from headcast.core.errors import HeadcastError
from headcast.core.sh import sh_rotate

logger = logging.getLogger(__name__)
DEPTH_TOL = 0.012  # metres: photo pixels whose depth is farther from the render show something else
YAWS = (-90, -60, -30, 0, 30, 60, 90)  # degrees: ICP starts


def source_head(work: Path, source: str, size: int):
    """Reconstruct and texture ``source`` of the sweep into ``work/source`` (reused when already there):
    the model, camera-frame vertices (V, 3), albedo (S, S, 3) 0..1, uv, uv_faces and SH light (9, 3)."""
    from headcast.fit.reconstruct import reconstruct_frame
    from headcast.io import recon
    from headcast.model.layer import HeadLayer
    from headcast.model.registry import resolve_model
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.texture.pipeline import texture_reconstruction

    d = Path(work) / source
    if not (d / recon.LIGHTING).is_file():
        frame = load_rgbd(str(truedepth_folder() / source))
        reconstruct_frame(frame, resolve_model("ict"), d)
        texture_reconstruction(d, size=size, force=True)
    params = recon.read_params(d)
    m = resolve_model(params.model)
    tex = recon.read_texture(d, m.faces)
    return (m, params.vertices(HeadLayer(m)), tex.image().astype(np.float32) / 255, tex.uv, tex.uv_faces,
            recon.read_lighting(d).sh)


def register(vertices: np.ndarray, faces: np.ndarray, depth_points: np.ndarray) -> tuple[np.ndarray, float]:
    """Rigid (4, 4) camera-frame transform putting the head ``vertices`` onto ``depth_points`` (N, 3), and
    its fitness (the share of mesh points with a depth point within 5 mm)."""
    import open3d as o3d
    from scipy.spatial.transform import Rotation

    mesh_pts = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(vertices))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(depth_points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.01, max_nn=30))
    c = vertices.mean(0)
    best, fit = np.eye(4), -1.0
    for yaw in YAWS:
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        # the head's centre moves to the cloud's centre, pushed back by the head's half depth
        T[:3, 3] = depth_points.mean(0) + [0, 0, 0.06] - T[:3, :3] @ c
        for dist in (0.03, 0.01, 0.005):
            T = o3d.pipelines.registration.registration_icp(
                mesh_pts, cloud, dist, T, o3d.pipelines.registration.TransformationEstimationPointToPlane()).transformation
        ev = o3d.pipelines.registration.evaluate_registration(cloud, mesh_pts.transform(T), 0.005, np.eye(4))
        mesh_pts = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(vertices))
        if ev.fitness > fit:
            best, fit = np.asarray(T), ev.fitness
    return best, float(fit)


def compare_view(model, vertices, albedo, uv, uv_faces, light, frame) -> dict:
    """Register the head to ``frame`` (an RGBDFrame), render it, and score it against the photo."""
    from skimage.metrics import structural_similarity

    from headcast.texture.render import render_textured

    z = frame.depth
    H, W = z.shape
    vv, uu = np.mgrid[0:H, 0:W]
    K = frame.K
    near = z[z > 0].min() if (z > 0).any() else 0
    sel = (z > 0) & (z < near + 0.25)
    pts = np.stack([(uu[sel] - K.cx) / K.fx * z[sel], (vv[sel] - K.cy) / K.fy * z[sel], z[sel]], 1)
    if len(pts) < 500:
        raise HeadcastError(f"{frame.name}: too little depth near the camera to register the head")
    head = np.setdiff1d(np.arange(model.n_vertices), model.masks.get("neck", []))
    T, fitness = register(vertices[head], model.faces, pts)
    v = vertices @ T[:3, :3].T + T[:3, 3]
    R_view = FLIP @ T[:3, :3] @ FLIP
    img, hits = render_textured(v, model.faces, uv, uv_faces, albedo, sh_rotate(light, R_view), K)
    skin = ~np.isin(model.faces, model.masks.get("neck", [])).any(1)
    tri = np.where(hits.hit, hits.tri, 0)
    mask = hits.hit & skin[tri] & (z > 0) & (np.abs(hits.depth - z) < DEPTH_TOL)
    photo = frame.color.astype(np.float32) / 255
    l1 = float(np.abs(photo[mask] - img[mask]).mean()) if mask.any() else float("nan")
    # the phone sets its exposure and white balance per frame: the same after one gain per channel
    gain = (photo[mask] * img[mask]).sum(0) / np.maximum((img[mask] ** 2).sum(0), 1e-9) if mask.any() else 1.0
    l1_gain = float(np.abs(photo[mask] - gain * img[mask]).mean()) if mask.any() else float("nan")
    _, smap = structural_similarity(photo.mean(2), img.mean(2), data_range=1.0, full=True)
    yaw = float(np.degrees(np.arctan2(T[0, 2], T[2, 2])))
    ssim = float(smap[mask].mean()) if mask.any() else float("nan")
    return {"yaw_deg": yaw, "l1": l1, "l1_exposure_matched": l1_gain, "ssim": ssim,
            "pixels": int(mask.sum()), "fitness": fitness, "render": img, "mask": mask}


def run_views_bench(work: Path, source: str = "frame-050", frames: list[str] | None = None, size: int = 512,
                    figure: Path | None = Path("bench/figures/views.png")) -> dict:
    """Every frame of the sweep (or ``frames``) but the source, scored (see the module docstring); a
    picture of photo | render pairs at the angles nearest -60, -30, 30, 60 degrees in ``figure``."""
    from headcast.preprocess.rgbd import load_rgbd

    folder = truedepth_folder()
    if not folder.is_dir():
        raise HeadcastError(f"no TrueDepth sweep at {folder}")
    model, verts, albedo, uv, uvf, light = source_head(Path(work), source, size)
    names = frames or sorted({p.name[: len("frame-000")] for p in folder.glob("frame-*_color.png")})
    rows, shots = [], []
    for name in names:
        if name == source:
            continue
        frame = load_rgbd(str(folder / name), rotate=90)
        r = compare_view(model, verts, albedo, uv, uvf, light, frame)
        logger.info(f"bench views: {name} yaw {r['yaw_deg']:+.0f} deg, L1 {r['l1']:.3f}, SSIM {r['ssim']:.3f}")
        shots.append((r.pop("yaw_deg"), frame.color, r.pop("render"), r.pop("mask"), name))
        rows.append(dict(r, frame=name, yaw_deg=shots[-1][0]))
    if figure is not None and shots:
        _figure(figure, shots)
    return {"machine": machine(), "source": source, "texture_size": size, "views": rows,
            "by_angle": by_angle(rows)}


def by_angle(rows: list[dict], bins=(-90, -45, -15, 15, 45, 90)) -> list[dict]:
    """Mean L1 and SSIM per yaw bin (degrees)."""
    out = []
    for a, b in zip(bins[:-1], bins[1:]):
        sel = [r for r in rows if a <= r["yaw_deg"] < b and np.isfinite(r["l1"])]
        if sel:
            out.append({"yaw_deg": [a, b], "views": len(sel), "l1": float(np.mean([r["l1"] for r in sel])),
                        "l1_exposure_matched": float(np.mean([r["l1_exposure_matched"] for r in sel])),
                        "ssim": float(np.mean([r["ssim"] for r in sel]))})
    return out


def _figure(path: Path, shots) -> None:
    from headcast.render.images import save_png
    from headcast.texture.render import comparison_picture

    picks = []
    for target in (-60, -30, 30, 60):
        s = min(shots, key=lambda s: abs(s[0] - target))
        if s not in picks:
            picks.append(s)
    panels, labels = [], []
    for yaw, photo, img, mask, name in picks:
        panels += [photo, np.where(mask[..., None], img, photo.astype(np.float32) / 255 * 0.3)]
        labels += [f"{name} photo", f"avatar, yaw {yaw:+.0f}"]
    save_png(path, comparison_picture(panels, labels, min_height=320))


def markdown(res: dict) -> str:
    lines = [f"Held-out views of the TrueDepth sweep, head from {res['source']} (texture {res['texture_size']}), "
             "registered by pose only, textured render with the fitted SH light vs the photo over head pixels.", "",
             "| yaw (deg) | views | L1 (0..1) | L1, exposure matched | SSIM |", "|---|---|---|---|---|"]
    for b in res["by_angle"]:
        lines.append(f"| {b['yaw_deg'][0]}..{b['yaw_deg'][1]} | {b['views']} | {b['l1']:.3f} | "
                     f"{b['l1_exposure_matched']:.3f} | {b['ssim']:.3f} |")
    return "\n".join(lines)
