"""A sweep reconstruction seen from the left, the front, the right and above, beside the nearest real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from headcast.io import recon
from headcast.io.mesh import read_obj_vertices
from headcast.io.validate import read_image
from headcast.render import images
from headcast.texture.render import comparison_picture, render_textured, seen_from


def render_view(model, folder: Path, verts: np.ndarray, K, T: np.ndarray) -> np.ndarray:
    """The mesh (``verts`` (V, 3), output frame) seen by a camera with head-to-camera transform ``T`` (4, 4),
    textured and lit by its fitted SH light turned into that camera (the room's light stays with the room:
    :func:`headcast.texture.render.seen_from`), when the folder has a texture (unlit albedo when it has no
    lighting.json), else shaded; uint8."""
    tex = recon.read_texture(folder, model.faces)
    light = recon.read_lighting(folder)
    v, sh = seen_from(verts, None if light is None else np.asarray(light.sh), T)
    if tex is None:
        return images.render_shaded(v, model.faces, K)[1]
    img, _ = render_textured(v, model.faces, tex.uv, tex.uv_faces, tex.image().astype(np.float32) / 255, sh, K)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def views_picture(model, folder: Path, out: Path, scale: float = 2.0) -> Path:
    """Write ``out``: top row the reconstruction in the cameras of the used frames furthest left, in the
    middle and furthest right, and from above; bottom row those real frames (the middle one under "above")."""
    folder = Path(folder)
    verts = read_obj_vertices(folder / recon.MESH_OBJ)
    K = recon.read_intrinsics(folder)
    used = [f for f in recon.read_poses(folder) if f["used"] and f["head_to_camera"] is not None]
    centre = verts.mean(0)

    def angle(f: dict) -> float:
        T = f["head_to_camera"]
        eye = -T[:3, :3].T @ T[:3, 3] - centre  # the camera's centre seen from the head, output frame
        return float(np.arctan2(eye[0], -eye[2]))

    used.sort(key=angle)
    picks = [used[0], used[len(used) // 2], used[-1]]
    Kb = K.scaled(scale)
    renders, photos, labels = [], [], []
    for f, name in zip(picks, ("left", "front", "right")):
        renders.append(render_view(model, folder, verts, Kb, f["head_to_camera"]))
        photo = read_image(folder / recon.FRAMES / f"{f['index']:03d}_color.png", "sweep frame", formats=("PNG",))
        photos.append(images.side_by_side([photo], Kb.height))
        labels.append(f"{name}: frame {f['name']}")
    T = np.asarray(picks[1]["head_to_camera"], dtype=np.float64)
    c = verts.mean(0) @ T[:3, :3].T + T[:3, 3]
    tip = np.eye(4)  # the head tipped towards the camera about its centre: its top shows
    tip[:3, :3] = Rotation.from_euler("x", 55, degrees=True).as_matrix()
    tip[:3, 3] = c - tip[:3, :3] @ c
    renders.append(render_view(model, folder, verts, Kb, tip @ T))
    photos.append(photos[1])
    labels.append("from above")
    top = comparison_picture(renders, labels)
    bottom = comparison_picture(photos, ["real frame"] * 3 + ["real frame (front)"])
    images.save_png(out, np.concatenate([top, bottom[:, : top.shape[1]]], axis=0))
    return out


def look_at(centre: np.ndarray, direction: np.ndarray, distance: float) -> np.ndarray:
    """Head-to-camera transform (4, 4) of a camera ``distance`` metres from ``centre`` (3,) along the unit
    ``direction`` (3,), looking at it, its image rows along the output frame's +y as far as possible."""
    z = -np.asarray(direction, dtype=np.float64)
    down = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.95 else np.array([0.0, 0.0, 1.0])
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ (centre + distance * np.asarray(direction))
    return T


def seen_shares(model, folder: Path, size: int = 256, n_sphere: int = 80) -> dict:
    """Shares of the atlas's texels (and, as ``head_*``, of the head surface's: :func:`head_texels`) seen
    (confidence above :data:`headcast.texture.multiview.SEEN`) from
    (a) the sweep's registered cameras with the measured depth (what the texture used), (b) the same cameras
    on the fitted mesh alone (no depth check), (c) ``n_sphere`` cameras all around the head (what any
    capture could see: not the inside of the mouth, the eyeballs' backs, the ear's folds)."""
    from headcast.texture.multiview import SEEN, observe_frames
    from headcast.texture.observe import head_texels

    verts, K, tri, _, X, n, frames = _texels_and_frames(model, Path(folder), size)
    blank = np.zeros((K.height, K.width, 3), np.uint8)

    head = head_texels(model.faces, len(verts), tri, model.masks.get("eyes"))

    def share(fr) -> tuple[float, float]:
        best = np.zeros(len(tri))
        for s in observe_frames(model.faces, verts, fr, K, X, n, tri):
            np.maximum.at(best, s.texels, s.conf)
        return float((best > SEEN).mean()), float((best[head] > SEEN).mean())

    k = np.arange(n_sphere) + 0.5  # a Fibonacci sphere of directions
    dirs = np.stack([np.sqrt(1 - (1 - 2 * k / n_sphere) ** 2) * np.cos(np.pi * (1 + 5 ** 0.5) * k),
                     1 - 2 * k / n_sphere, np.sqrt(1 - (1 - 2 * k / n_sphere) ** 2) * np.sin(np.pi * (1 + 5 ** 0.5) * k)], 1)
    centre = verts.mean(0)
    shares = {"sweep_with_depth": share(frames),
              "sweep_mesh_only": share([(i, blank, None, T) for i, _, _, T in frames]),
              "all_around": share([(j, blank, None, look_at(centre, d, 0.5)) for j, d in enumerate(dirs)])}
    return {**{k: a for k, (a, _) in shares.items()}, **{f"head_{k}": h for k, (_, h) in shares.items()},
            "frames": len(frames), "size": size, "n_sphere": n_sphere}


def _texels_and_frames(model, folder: Path, size: int):
    """A textured sweep folder's mesh: vertices (V, 3) and intrinsics K, the atlas's texels at ``size``:
    triangles (N,), barycentric weights (N, 3), points X (N, 3) and unit normals n (N, 3) in the output frame,
    and its registered frames
    (:func:`headcast.texture.multiview.read_frames`)."""
    from headcast.core.geometry import vertex_normals
    from headcast.texture.core import texture_space
    from headcast.texture.multiview import read_frames
    from headcast.texture.observe import interpolate

    verts = read_obj_vertices(folder / recon.MESH_OBJ)
    K = recon.read_intrinsics(folder)
    _, tri, bary = texture_space(model, size).texmap.texels()
    Xn = interpolate(model.faces, tri, bary, np.hstack([verts, vertex_normals(verts, model.faces)]))
    return verts, K, tri, bary, Xn[:, :3], Xn[:, 3:] / np.linalg.norm(Xn[:, 3:], axis=1, keepdims=True), \
        read_frames(folder, K)


REASONS = ("not visible", "grazing view only", "near an edge only", "depth disagrees", "shading trust", "seen")
REASON_COLORS = np.array([[40, 40, 40], [50, 100, 255], [255, 230, 25], [255, 50, 200], [255, 115, 0], [75, 215, 75]],
                         np.uint8)


def seen_reasons(model, folder: Path, size: int = 1024) -> tuple[np.ndarray, dict]:
    """Why each covered texel of a textured sweep folder is or is not seen in its albedo (confidence above
    :data:`headcast.texture.multiview.SEEN`), the first reason that holds, per texel (N,) index into
    :data:`REASONS`: no registered frame sees it at all (ray cast); every view is too grazing
    (the view-angle factor of :meth:`headcast.texture.observe.View.factors`); every view is too close
    to the silhouette, a depth edge of the mesh or the image border (with the angle factor, the confidence
    on the mesh alone); only the measured depth's agreement rejects it; only the albedo's shading trust
    (:func:`headcast.texture.multiview.shading_trust`) does. Returns those (N,) and the shares of the atlas
    and of the head surface (:func:`headcast.texture.observe.head_texels`) by reason."""
    from headcast.texture.multiview import SEEN, blend_frames
    from headcast.texture.observe import View, head_texels

    folder = Path(folder)
    verts, K, tri, bary, X, n, frames = _texels_and_frames(model, folder, size)
    seen_at_all, by_angle, on_mesh, best = (np.zeros(len(tri)) for _ in range(4))
    for _, color, depth, T in frames:
        R, t = np.asarray(T)[:3, :3], np.asarray(T)[:3, 3]
        Xc, nc = X @ R.T + t, n @ R.T
        with_depth = View.make(verts @ R.T + t, model.faces, color, K, depth)
        _, ok, w_cos, w_edge = with_depth.factors(Xc, nc, tri=tri)
        w_mesh = View.make(with_depth.vertices, model.faces, color, K).factors(Xc, nc, tri=tri)[3]
        np.maximum(seen_at_all, ok, out=seen_at_all)
        np.maximum(by_angle, ok * w_cos, out=by_angle)
        np.maximum(on_mesh, ok * w_cos * w_mesh, out=on_mesh)
        np.maximum(best, ok * w_cos * w_edge, out=best)
    albedo = blend_frames(model.faces, verts, frames, K, recon.read_lighting(folder).sh, tri, bary, fit=True).best
    reason = np.select([seen_at_all == 0, by_angle <= SEEN, on_mesh <= SEEN, best <= SEEN, albedo <= SEEN],
                       [0, 1, 2, 3, 4], 5)
    head = head_texels(model.faces, len(verts), tri, model.masks.get("eyes"))
    shares = {name: {"atlas": float((reason == k).mean()), "head": float((reason[head] == k).mean())}
              for k, name in enumerate(REASONS)}
    return reason, shares


def reasons_picture(model, folder: Path, reason: np.ndarray, out: Path, size: int = 1024) -> Path:
    """Write ``out``: the sweep's head (``folder``) seen from the front (the middle registered frame's side),
    its left, back, right, top and below, each texel coloured by :func:`seen_reasons`' ``reason`` (N,), with
    a key."""
    import cv2

    from headcast.texture.core import texture_space

    folder = Path(folder)
    verts = read_obj_vertices(folder / recon.MESH_OBJ)
    K = recon.read_intrinsics(folder)
    space = texture_space(model, size)
    idx = space.texmap.texels()[0]
    tex = np.zeros((size * size, 3), np.float32)
    tex[idx] = REASON_COLORS[reason] / 255.0
    tex = tex.reshape(size, size, 3)
    centre = verts.mean(0)
    eyes = [-np.asarray(f["head_to_camera"])[:3, :3].T @ np.asarray(f["head_to_camera"])[:3, 3] - centre
            for f in recon.read_poses(folder) if f["head_to_camera"] is not None]
    eyes.sort(key=lambda e: float(np.arctan2(e[0], -e[2])))
    front = eyes[len(eyes) // 2] / np.linalg.norm(eyes[len(eyes) // 2])
    up = np.array([0.0, -1.0, 0.0]) - front * -front[1]
    up /= np.linalg.norm(up)
    side = np.cross(up, front)
    views = {"front": front, "left": side, "back": -front, "right": -side, "above": 0.95 * up + 0.3 * front,
             "below": -0.9 * up + 0.45 * front}
    panels = []
    for d in views.values():
        T = look_at(centre, d / np.linalg.norm(d), 0.45)
        a = space.atlas
        panels.append(render_textured(verts @ T[:3, :3].T + T[:3, 3], model.faces, a.uv, a.uv_faces, tex, None, K)[0])
    key = np.full((K.height, K.width, 3), 255, np.uint8)
    for k, name in enumerate(REASONS):
        cv2.rectangle(key, (20, 40 + 40 * k), (50, 70 + 40 * k), tuple(int(c) for c in REASON_COLORS[k]), -1)
        cv2.putText(key, name, (60, 62 + 40 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    top = comparison_picture(panels[:4], list(views)[:4])
    bottom = comparison_picture(panels[4:] + [key], list(views)[4:] + [""])
    bottom = np.pad(bottom, ((0, 0), (0, max(top.shape[1] - bottom.shape[1], 0)), (0, 0)), constant_values=255)
    images.save_png(out, np.concatenate([top, bottom[:, : top.shape[1]]], axis=0))
    return out


ANGLE_BINS = (0.2, 0.3, 0.38, 0.45, 0.5, 0.7, 0.9, 1.0)  # cos of the view angle: 78, 73, 68, 63, 60, 46, 26, 0 deg
EDGE_BINS = (0.0, 1.1, 2.1, 3.1, 5.0, np.inf)  # pixels from the silhouette or a depth edge of the fitted mesh
DEPTH_BINS = (-np.inf, -0.01, -0.003, 0.003, 0.01, 0.04, np.inf)  # metres, measured depth minus the fitted surface's


def _observations(model, folder: Path, size: int) -> tuple[list[dict], np.ndarray]:
    """Every registered frame's view of the atlas's texels (``size``) of a textured sweep folder: per frame
    the texels it sees (M,), their log colours after the blend's frame gains (M, 3), cos of the view angle
    (M,), pixels from the mesh's edges (M,) and from those or pixels the measured depth rejects (M,), and the
    measured depth minus the surface's (M,) metres (NaN without depth); and the head texels (N,) bool."""
    from headcast.texture.multiview import blend_frames
    from headcast.texture.observe import View, head_texels

    verts, K, tri, bary, X, n, frames = _texels_and_frames(model, folder, size)
    gains = blend_frames(model.faces, verts, frames, K, recon.read_lighting(folder).sh, tri, bary, fit=True).gains
    out = []
    for (_, color, depth, T), g in zip(frames, gains):
        R, t = np.asarray(T)[:3, :3], np.asarray(T)[:3, 3]
        Xc, nc = X @ R.T + t, n @ R.T
        view = View.make(verts @ R.T + t, model.faces, color, K, depth)
        uv, ok, _, _ = view.factors(Xc, nc, tri=tri)
        k = np.flatnonzero(ok)
        col, row = np.rint(uv[k]).astype(np.int64).T
        mesh_edge = View.make(view.vertices, model.faces, color, K).edge_dist[row, col]
        measured = view.depth[row, col]
        out.append({"texels": k, "log_color": np.log(np.maximum(view.observe(Xc[k], nc[k], tri=tri[k])[0] * g, 2e-3)),
                    "cos": -np.einsum("nc,nc->n", Xc[k], nc[k]) / np.linalg.norm(Xc[k], axis=1),
                    "mesh_edge_px": mesh_edge, "edge_px": view.edge_dist[row, col],
                    "depth_diff": np.where(measured > 0, measured - Xc[k, 2], np.nan)})
    return out, head_texels(model.faces, len(verts), tri, model.masks.get("eyes"))


def observation_errors(model, folder: Path, size: int = 512) -> dict:
    """How far one frame's colour of a texel is from the same texel's head-on colour, on a textured sweep
    folder: median and 90th percentile over observations of |log(colour / reference)| (mean over RGB, after
    the blend's frame gains), where the reference is the mean log colour of the texel's *other* clean
    head-on observations (cos > 0.9, more than 5 pixels from any edge, measured depth within 3 mm; two or
    more), head texels only (:func:`head_texels`). Tables by the view angle (observations more than 5 pixels
    from any edge; :data:`ANGLE_BINS`), by the distance to the fitted mesh's silhouette and depth edges (cos
    > 0.7; :data:`EDGE_BINS`) and by the measured depth's disagreement with the fitted surface (cos > 0.7, more
    than 5 pixels from the mesh's edges; :data:`DEPTH_BINS`). ``angle_paired``: per texel, its grazing
    observations (cos 0.2-0.5, by bin) against its own 46-60 degree ones (cos 0.5-0.7), both more than 5 pixels
    from any edge: the medians over texels and the share where the grazing ones are further off. These are
    the colours each confidence factor of :meth:`headcast.texture.observe.View.factors` admits or rejects."""
    obs, head = _observations(model, Path(folder), size)
    N = len(head)
    total, count = np.zeros((N, 3)), np.zeros(N)
    for o in obs:
        o["clean"] = (o["cos"] > 0.9) & (o["edge_px"] > 5) & (np.abs(o["depth_diff"]) < 0.003)
        np.add.at(total, o["texels"][o["clean"]], o["log_color"][o["clean"]])
        np.add.at(count, o["texels"][o["clean"]], 1)
    for o in obs:  # the reference without the observation's own frame
        k, own = o["texels"], o["clean"][:, None] * o["log_color"]
        others = count[k] - o["clean"]
        o["error"] = np.abs(o["log_color"] - (total[k] - own) / np.maximum(others, 1)[:, None]).mean(1)
        o["has_reference"] = (others >= 2) & head[k]

    def table(key: str, bins, where) -> list[dict]:
        rows = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            e = np.concatenate([o["error"][o["has_reference"] & where(o) & (o[key] >= lo) & (o[key] < hi)] for o in obs])
            rows.append({"bin": [float(lo), float(hi)], "observations": int(len(e)),
                         "median": float(np.median(e)) if len(e) else None,
                         "p90": float(np.percentile(e, 90)) if len(e) else None})
        return rows

    def per_texel(lo: float, hi: float) -> np.ndarray:
        """(N,) mean error of the texel's observations with cos in [lo, hi), more than 5 pixels from any edge."""
        acc, num = np.zeros(N), np.zeros(N)
        for o in obs:
            sel = o["has_reference"] & (o["edge_px"] > 5) & (o["cos"] >= lo) & (o["cos"] < hi)
            np.add.at(acc, o["texels"][sel], o["error"][sel])
            np.add.at(num, o["texels"][sel], 1)
        return np.where(num > 0, acc / np.maximum(num, 1), np.nan)

    ref_band = per_texel(0.5, 0.7)
    paired = []
    for lo, hi in zip(ANGLE_BINS[:4], ANGLE_BINS[1:5]):
        e = per_texel(lo, hi)
        both = np.isfinite(e) & np.isfinite(ref_band)
        stats = (np.median(e[both]), np.median(ref_band[both]), (e[both] > ref_band[both]).mean()) if both.any() else ()
        paired.append({"bin": [lo, hi], "texels": int(both.sum()),
                       **{key: float(v) for key, v in zip(("median", "median_46_60_deg", "worse"), stats)}})
    return {"size": size, "frames": len(obs), "angle_paired": paired,
            "angle": table("cos", ANGLE_BINS, lambda o: (o["edge_px"] > 5)),
            "mesh_edge": table("mesh_edge_px", EDGE_BINS, lambda o: o["cos"] > 0.7),
            "depth": table("depth_diff", DEPTH_BINS, lambda o: (o["cos"] > 0.7) & (o["mesh_edge_px"] > 5))}
