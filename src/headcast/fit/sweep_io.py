"""Writing a sweep's reconstruction folder: the single-frame folder's files for the first frame, plus
poses.json, fused.ply and every registered frame (``frames/``, for the texture; docs/formats.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from headcast.fit.reconstruct import Reconstruction
from headcast.fit.register import transform
from headcast.io import recon
from headcast.io.mesh import write_obj, write_ply
from headcast.io.outputs import staged_dir
from headcast.model.head_model import HeadModel
from headcast.render import images


def frame_inputs(frames) -> list:
    """The files the frames were read from (an output may not replace or lie inside them)."""
    return [p for f in frames for p in (f.color_path, f.depth_path, f.intrinsics_path) if p is not None]


def frame_name(frame) -> str:
    """A frame's name for reports: its color file's name without ``_color.png``."""
    if frame.color_path is None:
        return "frame"
    name = Path(frame.color_path).name
    return name.split("_color")[0] if "_color" in name else Path(name).stem


def pose_entries(sw) -> list[dict]:
    """poses.json's frames: name, head_to_camera (4x4 or None), registered, used, how, ICP figures, why not,
    and the frame's own expression (``--expression per-frame``; None for frames without one)."""
    out = []
    for i, (f, r, A) in enumerate(zip(sw.frames, sw.registered, sw.poses)):
        used = i in sw.used
        why = sw.skipped.get(i) or r.reason or ("" if used else "not among the frames spread over the view angles")
        out.append({"index": i, "name": frame_name(f), "registered": A is not None, "used": used,
                    "head_to_camera": None if A is None else np.linalg.inv(A).round(9).tolist(),
                    "how": r.how if A is not None else None, "face_found": sw.obs[i] is not None,
                    "icp_fitness": round(r.fitness, 4),
                    "icp_rmse_mm": None if not np.isfinite(r.rmse) else round(r.rmse * 1000, 3),
                    "why_not_used": None if used else why,
                    "expression": None if i not in sw.expressions else np.round(sw.expressions[i], 6).tolist()})
    return out


def fused_points(sw, max_points: int = 200000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every registered frame's head points (N, 3) in the output frame with their colours (N, 3) uint8."""
    from headcast.core.camera import project

    pts, cols = [], []
    for f, r, A in zip(sw.frames, sw.registered, sw.poses):
        if A is None:
            continue
        uv = np.round(project(r.cloud, f.K)).astype(int)
        uv[:, 0] = uv[:, 0].clip(0, f.K.width - 1)
        uv[:, 1] = uv[:, 1].clip(0, f.K.height - 1)
        pts.append(transform(A, r.cloud))
        cols.append(f.color[uv[:, 1], uv[:, 0]])
    p, c = np.concatenate(pts), np.concatenate(cols)
    if len(p) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(p), max_points, replace=False))
        p, c = p[keep], c[keep]
    return p, c


def write_sweep(out_dir: Path, sw, rec: Reconstruction, model: HeadModel, force: bool = False,
                inputs: list = ()) -> Path:
    """The reconstruction folder of a sweep, written whole (``force``: replace an earlier one)."""
    first = sw.frames[sw.first]
    with staged_dir(out_dir, recon.KIND, force=force, inputs=inputs) as tmp:
        recon.write_params(tmp, rec.params, first.K, rec.offsets)
        write_obj(tmp / recon.MESH_OBJ, rec.vertices, model.faces, model.uv, model.uv_faces)
        write_ply(tmp / recon.MESH_PLY, rec.vertices, model.faces)
        images.save_png(tmp / recon.COLOR, first.color)
        images.save_depth_mm(tmp / recon.DEPTH, first.depth)
        first.K.to_json(tmp / recon.INTRINSICS)
        hits, shaded = images.render_shaded(rec.vertices, model.faces, first.K)
        images.save_png(tmp / recon.OVERLAY_PNG, images.blend(first.color, shaded, hits.hit, 0.6))
        recon.write_poses(tmp, pose_entries(sw), frame_name(first))
        pts, cols = fused_points(sw)
        write_ply(tmp / recon.FUSED, pts, colors=cols)
        (tmp / recon.FRAMES).mkdir()
        for i in (i for i, A in enumerate(sw.poses) if A is not None):
            images.save_png(tmp / recon.FRAMES / f"{i:03d}_color.png", sw.frames[i].color)
            images.save_depth_mm(tmp / recon.FRAMES / f"{i:03d}_depth_mm.png", sw.frames[i].depth)
        report = dict(rec.report)
        report["input"] = {"frames": len(sw.frames), "first": str(first.color_path),
                           "rotation_deg_cw": first.rotation, "size": [first.K.width, first.K.height]}
        report["frames"] = {"registered": sum(p is not None for p in sw.poses), "used": len(sw.used),
                            "skipped": {frame_name(sw.frames[i]): why for i, why in sw.skipped.items()}}
        (tmp / recon.FIT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return Path(out_dir)
