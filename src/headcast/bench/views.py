"""Held-out views benchmark (``headcast bench views``) on the real TrueDepth sweep.

The head is reconstructed and textured from one frame (default 050, frontal) or from the sweep
(``source="sweep"``: every frame registered, :data:`headcast.fit.sweep` picks the frames it fits and
textures from; the others are held out). The camera moves around the still mannequin, so every other frame
sees the same head from another side: the head is registered to that frame's depth by its pose only (rigid
ICP, point-to-plane, Open3D, started from the sweep's own pose of that frame, or, for a one-frame head,
chained through the sweep in frame order outwards from the source frame, each frame started from its
neighbour's pose and from yaw candidates about the head's vertical axis; a frame whose fitness stays below
:data:`LOW_FITNESS` times the median frame's is left out, logged), rendered with its albedo and the fitted
SH light (turned with the head: the light is fixed to the room, like the head), and compared with the photo
over the head pixels: the pixels of the mesh's triangles outside the neck mask where the measured depth
agrees with the rendered one within :data:`DEPTH_TOL` (hair, neck, background and the render's occlusion
errors are left out; eyes, ears and scalp are in). L1: mean absolute difference over those pixels and RGB,
0..1. SSIM: scikit-image on grey (7x7 windows), the render pasted into the photo (pixels outside the head
keep the photo's, so a window at the head's border compares the head's border, not a black background), the
SSIM map averaged over the head pixels. The phone sets exposure and white balance per frame, which no head
model can know: both are also given after one least-squares gain per colour channel between render and photo
over the head pixels (``*_exposure_matched``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from headcast.bench import machine, truedepth_folder
from headcast.core.errors import HeadcastError

logger = logging.getLogger(__name__)
DEPTH_TOL = 0.012  # metres: photo pixels whose depth is farther from the render show something else
YAWS = (-90, -60, -30, 0, 30, 60, 90)  # degrees: ICP starts
ICP_COARSE, ICP_FINE = (0.03,), (0.01, 0.005)  # metres: ICP's correspondence distances (:func:`register`)
LOW_FITNESS = 0.75  # a frame registered with less than this times the median fitness is left out


def source_head(work: Path, source: str, size: int):
    """Reconstruct and texture ``source`` (a frame of the sweep, or ``sweep``: all of it) into
    ``work/source`` (reused when already there): the model, vertices (V, 3) in the output frame (the
    camera of a single frame), albedo (S, S, 3) 0..1, uv, uv_faces, SH light (9, 3), and for a sweep
    ``{frame name: (used by the fit, head_to_camera (4, 4))}`` (else an empty dict)."""
    from headcast.fit.reconstruct import reconstruct_frame
    from headcast.fit.sweep import reconstruct_sweep
    from headcast.io import recon
    from headcast.io.mesh import read_obj_vertices
    from headcast.model.registry import resolve_model
    from headcast.preprocess.rgbd import load_rgbd
    from headcast.texture.pipeline import texture_reconstruction

    d = Path(work) / source
    if not (d / recon.LIGHTING).is_file():
        if source == "sweep":
            reconstruct_sweep([truedepth_folder()], resolve_model("ict"), d, force=True)
        else:
            reconstruct_frame(load_rgbd(str(truedepth_folder() / source)), resolve_model("ict"), d)
        texture_reconstruction(d, size=size, force=True, fit_frames_only=True)
    m = resolve_model(recon.read_params(d).model)
    tex = recon.read_texture(d, m.faces)
    poses = {f["name"]: (bool(f["used"]), f["head_to_camera"]) for f in recon.read_poses(d) or []
             if f["head_to_camera"] is not None}
    return (m, read_obj_vertices(d / recon.MESH_OBJ), tex.image().astype(np.float32) / 255, tex.uv,
            tex.uv_faces, recon.read_lighting(d).sh, poses)


def register(vertices: np.ndarray, depth_points: np.ndarray, starts: list[np.ndarray] | tuple = (),
             yaws: tuple[float, ...] = YAWS) -> tuple[np.ndarray, float]:
    """Rigid (4, 4) transform putting the head ``vertices`` onto ``depth_points`` (N, 3) (camera frame),
    and its fitness (the share of depth points with a mesh point within 5 mm). Point-to-plane ICP runs from
    each of ``starts`` (4, 4: poses known to be near, a neighbouring frame's or the sweep's) over the fine
    distances :data:`ICP_FINE` only, and from ``yaws`` (degrees) about the head's vertical axis over
    :data:`ICP_COARSE` first (the coarse distance lets the shoulders and the background pull a side view's
    head round, so a near start skips it); the best fitness wins, a given start competing with its own ICP."""
    import open3d as o3d
    from scipy.spatial.transform import Rotation

    from headcast.fit.register import icp

    mesh_pts = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(vertices))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(depth_points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.01, max_nn=30))
    c = vertices.mean(0)
    tries = [(np.asarray(T), True) for T in starts]
    for yaw in yaws:
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        # the head's centre moves to the cloud's centre, pushed back by the head's half depth
        T[:3, 3] = depth_points.mean(0) + [0, 0, 0.06] - T[:3, :3] @ c
        tries.append((T, False))

    def fitness(T: np.ndarray) -> float:
        return o3d.pipelines.registration.evaluate_registration(cloud, mesh_pts, 0.005, np.linalg.inv(T)).fitness

    best, fit = np.eye(4), -1.0
    for T, given in tries:
        moved, _, _ = icp(vertices, cloud, T, stages=ICP_FINE if given else ICP_COARSE + ICP_FINE, voxel=None)
        for T in ([T, moved] if given else [moved]):  # a given start competes with its own ICP
            if fitness(T) > fit:
                best, fit = np.asarray(T), fitness(T)
    return best, float(fit)


def register_chain(vertices: np.ndarray, clouds: list[np.ndarray], at: int) -> list[tuple[np.ndarray, float]]:
    """The head ``vertices`` (V, 3), built in the camera of a frame that sits at position ``at`` of a sweep,
    registered (:func:`register`) to each frame's depth points ``clouds`` (N, 3) in sequence order: outwards
    from ``at``, each frame from its neighbour's registered pose (the first from the head's own frame) as
    well as from :data:`YAWS` (the camera moves smoothly round a still head, so the neighbour's pose is
    near; the yaws take over where it is not). Returns (transform (4, 4), fitness) per cloud."""
    out: list = [None] * len(clouds)
    for side in (range(at - 1, -1, -1), range(at, len(clouds))):
        last = np.eye(4)
        last_fit = 0.0
        for i in side:
            out[i] = register(vertices, clouds[i], [last])
            if out[i][1] >= LOW_FITNESS * last_fit:  # a frame fitting far worse than the last does not pass on its pose
                last, last_fit = out[i]
    return out


def left_out(fitness: list[float], share: float = LOW_FITNESS) -> list[str]:
    """Per frame, why it is not scored ('' when it is): its registration's ``fitness`` below ``share``
    times the median frame's (the head is not where the photo shows it, so a score would measure the
    registration, not the head)."""
    floor = share * float(np.median(fitness)) if len(fitness) else 0.0
    return [f"fitness {f:.2f} < {share} x median {floor / share:.2f}" if f < floor else "" for f in fitness]


def frame_points(frame) -> np.ndarray:
    """The depth points (N, 3) of an RGBDFrame within 25 cm of its nearest one (camera frame, metres): the
    head and what is just behind it. HeadcastError with fewer than 500."""
    from headcast.core.camera import depth_to_points

    z = frame.depth
    near = z[z > 0].min() if (z > 0).any() else 0
    pts = depth_to_points(np.where(z < near + 0.25, z, 0), frame.K)[0]
    if len(pts) < 500:
        raise HeadcastError(f"{frame.name}: too little depth near the camera to register the head")
    return pts


def compare_view(model, vertices, albedo, uv, uv_faces, light, frame, T: np.ndarray) -> dict:
    """Render the head placed in ``frame`` (an RGBDFrame) by ``T`` (4, 4, :func:`register`) and score it
    against the photo (see the module docstring)."""
    from headcast.texture.render import render_textured, seen_from

    z = frame.depth
    v, lit = seen_from(vertices, light, T)
    img, hits = render_textured(v, model.faces, uv, uv_faces, albedo, lit, frame.K)
    skin = ~np.isin(model.faces, model.masks.get("neck", [])).any(1)
    tri = np.where(hits.hit, hits.tri, 0)
    mask = hits.hit & skin[tri] & (z > 0) & (np.abs(hits.depth - z) < DEPTH_TOL)
    photo = frame.color.astype(np.float32) / 255
    out = {"pixels": int(mask.sum()), "render": img, "mask": mask}
    if not mask.any():
        return dict(out, l1=np.nan, ssim=np.nan, l1_exposure_matched=np.nan, ssim_exposure_matched=np.nan, gain=[1] * 3)
    gain = exposure_gain(photo, img, mask)
    for key, g in (("", np.ones(3)), ("_exposure_matched", gain)):
        out["l1" + key], out["ssim" + key] = scores(photo, np.clip(img * g, 0, 1), mask)
    return dict(out, gain=gain.tolist())


def exposure_gain(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares gain per colour channel (3,) taking ``render`` to ``photo`` (H, W, 3) over ``mask``:
    the phone's exposure and white balance of that frame, which no head model can know."""
    p, r = photo[mask].astype(np.float64), render[mask].astype(np.float64)
    return (p * r).sum(0) / np.maximum((r**2).sum(0), 1e-9)


def scores(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """L1 and SSIM (module docstring) of ``render`` against ``photo`` (H, W, 3) 0..1 over ``mask`` (H, W)."""
    from skimage.metrics import structural_similarity

    pasted = np.where(mask[..., None], render, photo)
    _, smap = structural_similarity(photo.mean(2), pasted.mean(2), data_range=1.0, full=True)
    return float(np.abs(photo[mask] - render[mask]).mean()), float(smap[mask].mean())


def run_views_bench(work: Path, source: str = "frame-050", frames: list[str] | None = None, size: int = 512,
                    figures: Path | None = None, front: str = "frame-050") -> dict:
    """Every frame of the sweep (or ``frames``) the head was not built from, scored (see the module
    docstring; a frame registered with less than :data:`LOW_FITNESS` times the median fitness is listed with
    its reason in ``left_out`` and kept out of the bins and the picture), the yaw measured from ``front``'s
    view (degrees, + = the camera on the head's left); a picture of photo | render | difference at the
    angles nearest -60, -30, 30, 60 degrees in ``figures/views-SOURCE.png`` (default: in ``work``, the
    bench's own folder)."""
    from headcast.preprocess.rgbd import load_rgbd

    folder = truedepth_folder()
    if not folder.is_dir():
        raise HeadcastError(f"no TrueDepth sweep at {folder}")
    model, verts, albedo, uv, uvf, light, poses = source_head(Path(work), source, size)
    names = frames or sorted({p.name[: len("frame-000")] for p in folder.glob("frame-*_color.png")})
    ref = np.linalg.inv(poses[front][1]) if front in poses else np.eye(4)
    # the frames the head was built from are not held out
    held = [n for n in names if n != source and not poses.get(n, (False,))[0]]
    held_frames = [load_rgbd(str(folder / n), rotate=90) for n in held]
    head = np.setdiff1d(np.arange(model.n_vertices), model.masks.get("neck", []))
    clouds = [frame_points(f) for f in held_frames]
    if all(n in poses for n in held):  # the sweep's own poses
        placed = [register(verts[head], c, [poses[n][1]], yaws=()) for n, c in zip(held, clouds)]
    else:
        placed = register_chain(verts[head], clouds, sum(n < source for n in held))
    why = left_out([fit for _, fit in placed])
    rows, shots = [], []
    for name, frame, (T, fit), reason in zip(held, held_frames, placed, why):
        r = dict(compare_view(model, verts, albedo, uv, uvf, light, frame, T), yaw_deg=_yaw(T @ ref), fitness=fit)
        logger.info(f"bench views: {name} yaw {r['yaw_deg']:+.0f} deg, fitness {fit:.2f}, L1 {r['l1']:.3f}, "
                    f"SSIM {r['ssim']:.3f}" + (f", left out: {reason}" if reason else ""))
        if not reason:
            shots.append((r["yaw_deg"], frame.color, r["render"], r["mask"], name, r["gain"]))
        rows.append(dict({k: v for k, v in r.items() if k not in ("render", "mask")}, frame=name, left_out=reason))
    out = [r for r in rows if r["left_out"]]
    if out:
        logger.info(f"bench views: {len(out)} of {len(rows)} frames left out, registered below {LOW_FITNESS} x "
                    f"the median fitness: {', '.join(r['frame'] for r in out)}")
    if shots:
        _figure(Path(figures if figures is not None else work) / f"views-{source}.png", shots)
    return {"machine": machine(), "source": source, "held_out": len(rows) - len(out), "left_out": len(out),
            "texture_size": albedo.shape[0], "views": rows, "by_angle": by_angle([r for r in rows if not r["left_out"]])}


def _yaw(T: np.ndarray) -> float:
    """The turn of a (4, 4) transform about the camera's vertical axis, degrees."""
    return float(np.degrees(np.arctan2(T[0, 2], T[2, 2])))


def by_angle(rows: list[dict], bins=(-90, -45, -15, 15, 45, 90)) -> list[dict]:
    """Mean L1 and SSIM per yaw bin (degrees)."""
    out = []
    for a, b in zip(bins[:-1], bins[1:]):
        sel = [r for r in rows if a <= r["yaw_deg"] < b and np.isfinite(r["l1"])]
        if sel:
            out.append({"yaw_deg": [a, b], "views": len(sel), "l1": float(np.mean([r["l1"] for r in sel])),
                        "l1_exposure_matched": float(np.mean([r["l1_exposure_matched"] for r in sel])),
                        "ssim": float(np.mean([r["ssim"] for r in sel])),
                        "ssim_exposure_matched": float(np.mean([r["ssim_exposure_matched"] for r in sel]))})
    return out


def _figure(path: Path, shots) -> None:
    from headcast.render.images import save_png
    from headcast.texture.render import comparison_picture

    picks = []
    for target in (-60, -30, 30, 60):
        s = min(shots, key=lambda s: abs(s[0] - target))
        if s not in picks:
            picks.append(s)
    rows = []
    for yaw, photo, img, mask, name, gain in picks:
        ph = photo.astype(np.float32) / 255
        ys, xs = np.nonzero(mask)
        box = (slice(max(ys.min() - 8, 0), ys.max() + 8), slice(max(xs.min() - 8, 0), xs.max() + 8))
        diff = np.where(mask, np.abs(ph - np.clip(img * np.asarray(gain), 0, 1)).mean(2), 0)
        heat = np.stack([np.clip(diff / 0.1, 0, 1), np.clip(diff / 0.1 - 1, 0, 1), np.zeros_like(diff)], 2)
        rows.append(comparison_picture(
            [photo[box], np.where(mask[..., None], img, ph * 0.3)[box], heat[box]],
            [f"{name} photo", f"avatar, yaw {yaw:+.0f}", "|diff|, exposure matched (red 0.1)"], min_height=320))
    width = max(r.shape[1] for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                                   for r in rows]))


def markdown(res: dict) -> str:
    lines = [f"Held-out views of the TrueDepth sweep ({res['held_out']} scored, {res['left_out']} left out: "
             f"registered with fitness below {LOW_FITNESS} x the median), head from {res['source']} "
             f"(texture {res['texture_size']}), "
             "registered by pose only, textured render with the fitted SH light vs the photo over head pixels.", "",
             "| yaw (deg) | views | L1 (0..1) | L1, exposure matched | SSIM | SSIM, exposure matched |",
             "|---|---|---|---|---|---|"]
    for b in res["by_angle"]:
        lines.append(f"| {b['yaw_deg'][0]}..{b['yaw_deg'][1]} | {b['views']} | {b['l1']:.3f} | "
                     f"{b['l1_exposure_matched']:.3f} | {b['ssim']:.3f} | {b['ssim_exposure_matched']:.3f} |")
    return "\n".join(lines)
