"""Ray-cast RGB-D rendering of a synthetic subject in front of a wall, with shoulders.

Open3D's RaycastingScene (Embree, CPU) finds the triangle each pixel's ray hits; the depth is then
recomputed in float64 as the exact intersection of the pixel-centre ray with that triangle, so
``depth_clean`` back-projects onto the ground-truth mesh to float64 precision. Colour is
``albedo * SH shading`` of barycentric-interpolated vertex albedo and normals (see
:mod:`headcast.core.sh`), averaged over ``aa x aa`` rays on silhouette and depth-edge pixels; the
sensor profile then adds depth noise and holes (:mod:`headcast.synth.sensor`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from headcast.core.camera import FLIP, Intrinsics, project
from headcast.core.errors import HeadcastError
from headcast.core.geometry import vertex_normals
from headcast.core.params import pose_slice
from headcast.core.scene import MeshScene
from headcast.core.sh import sh_shading, to_view
from headcast.model.head_model import HeadModel
from headcast.synth import mesh as M
from headcast.synth.appearance import smooth_field
from headcast.synth.sensor import depth_jumps, get_profile, sensor_depth
from headcast.synth.subject import SynthSubject, streams, subject_geometry

HEAD, TORSO, WALL, MOUTH = 0, 1, 2, 3  # object ids in SynthFrame.labels (-1 = nothing); MOUTH: the interior
CLOTHES = np.array([[0.15, 0.17, 0.22], [0.55, 0.12, 0.12], [0.20, 0.35, 0.25], [0.75, 0.73, 0.70],
                    [0.10, 0.10, 0.10], [0.30, 0.40, 0.60], [0.55, 0.45, 0.30]])
WALLS = np.array([[0.85, 0.84, 0.80], [0.78, 0.80, 0.82], [0.80, 0.74, 0.64], [0.62, 0.70, 0.72],
                  [0.70, 0.70, 0.68]])


@dataclass
class SynthFrame:
    """One rendered RGB-D frame and its ground truth (camera frame, metres).

    Attributes:
        color: (H, W, 3) uint8 RGB.
        depth: (H, W) float32 sensor depth in metres, 0 = no depth.
        depth_clean: (H, W) float32 exact z-depth of the surface hit by each pixel-centre ray, 0 = none.
        face_mask: (H, W) bool, pixel-centre rays that hit a face triangle (all corners in mask 'face'),
            whether or not the sensor gave depth there.
        labels: (H, W) int8 object hit by the pixel-centre ray: 0 head, 1 torso, 2 wall, 3 mouth interior
            (teeth, cavity), -1 nothing.
        triangle_ids: (H, W) int32 head triangle hit by the pixel-centre ray, -1 elsewhere.
        vertices: (V, 3) float64 posed head vertices.
        landmarks: (68, 3) float64 landmarks of the posed head.
        landmarks_2d: (68, 2) their pixel coordinates.
        K: the intrinsics.
        profile: the sensor profile's name.
        seed: the seed of the sensor noise.
    """

    color: np.ndarray
    depth: np.ndarray
    depth_clean: np.ndarray
    face_mask: np.ndarray
    labels: np.ndarray
    triangle_ids: np.ndarray
    vertices: np.ndarray
    landmarks: np.ndarray
    landmarks_2d: np.ndarray
    K: Intrinsics
    profile: str
    seed: int


@dataclass
class _Object:
    vertices: np.ndarray  # (N, 3) camera frame
    faces: np.ndarray  # (F, 3)
    albedo: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3) camera frame


def _torso(head_vertices: np.ndarray, root_rotvec: np.ndarray, rng: np.random.Generator) -> _Object:
    """Shoulders and chest: a boxy superellipsoid with sloping shoulders, turned with the root joint,
    whose top lies a few centimetres above the lowest head vertices so the neck's cut end is hidden."""
    y_bottom = head_vertices[:, 1].max()  # camera y points down: the neck's lowest point
    base = head_vertices[head_vertices[:, 1] > y_bottom - 0.015].mean(0)
    radii = np.array([rng.uniform(0.17, 0.22), 0.30, rng.uniform(0.10, 0.13)])
    v, f = M.superellipsoid(radii, e_vertical=0.35, e_horizontal=0.8)
    v[:, 1] -= 0.25 * np.maximum(np.abs(v[:, 0]) - 0.07, 0) * np.clip(v[:, 1] / 0.1, 0, 1)  # shoulder slope
    F = FLIP.astype(np.float64)
    R = F @ Rotation.from_rotvec(root_rotvec).as_matrix() @ F  # the root rotation in camera axes
    v = v * np.array([1.0, -1.0, 1.0])  # pole axis up in the camera frame (y down)
    top = y_bottom - rng.uniform(0.04, 0.06)
    centre = np.array([base[0], top + radii[1], base[2] + rng.uniform(0.0, 0.02)])
    verts = v @ R.T + centre
    f = f[:, ::-1].copy()  # the y mirror flipped the winding
    cloth = CLOTHES[rng.integers(len(CLOTHES))] * rng.uniform(0.8, 1.15)
    albedo = cloth[None, :] * (1 + 0.05 * smooth_field(v, rng, (0.05, 0.2)))[:, None]
    return _Object(verts, f, np.clip(albedo, 0, 1), vertex_normals(verts, f))


def _mouth(model: HeadModel, interior: np.ndarray | None) -> _Object | None:
    """The mouth interior (teeth, cavity; :mod:`headcast.model.interior`) from its posed camera-frame vertices
    (P, 3) (:func:`subject_geometry`'s ``interior``)."""
    from headcast.model.cavity import interior_of

    if interior is None:
        return None
    inner = interior_of(model)
    n = vertex_normals(interior, inner.faces)
    n[np.einsum("nc,nc->n", n, interior) > 0] *= -1  # towards the camera: the cavity is seen from inside
    return _Object(interior, inner.faces, inner.colors.astype(np.float64), n)


def _wall(z_wall: float, K: Intrinsics, rng: np.random.Generator) -> _Object:
    """A slightly turned plane at depth ``z_wall`` that fills the whole view."""
    half = 2.0 * z_wall * max(K.width / K.fx, K.height / K.fy) + 0.5
    uv, f = M.grid_mesh(41, 41)
    local = np.column_stack([(uv - 0.5) * 2 * half, np.zeros(len(uv))])
    yaw = np.deg2rad(rng.uniform(-15, 15))
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    verts = local @ R.T + np.array([0, 0, z_wall])
    normals = np.tile(R @ np.array([0, 0, -1.0]), (len(verts), 1))
    # grid faces are wound for +z normals; flip them to face the camera
    f = f[:, ::-1].copy()
    paint = WALLS[rng.integers(len(WALLS))] * rng.uniform(0.85, 1.05)
    albedo = paint[None, :] * (1 + 0.05 * smooth_field(local, rng, (0.3, 1.2)))[:, None]
    return _Object(verts, f, np.clip(albedo, 0, 1), normals)


def _rays(K: Intrinsics, u: np.ndarray, v: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Ray directions (N, S, 3) with z = 1 through pixels (u, v) (N,) shifted by offsets (S, 2)."""
    uu = u[:, None] + offsets[None, :, 0]
    vv = v[:, None] + offsets[None, :, 1]
    return np.stack([(uu - K.cx) / K.fx, (vv - K.cy) / K.fy, np.ones_like(uu)], axis=-1)


def _edges(labels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Pixels (H, W) whose 4-neighbours show another object or lie across a depth jump."""
    out = depth_jumps(depth, 0.01, 0.02)
    for axis in (0, 1):
        d = np.diff(labels, axis=axis) != 0
        pad_lo = [(0, 0), (0, 0)]
        pad_hi = [(0, 0), (0, 0)]
        pad_lo[axis], pad_hi[axis] = (1, 0), (0, 1)
        out |= np.pad(d, pad_lo) | np.pad(d, pad_hi)
    return out


def _cast(scene: MeshScene, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    return scene.cast(np.concatenate([np.broadcast_to(origins, dirs.shape), dirs], axis=-1).reshape(-1, 6))


def _interp(objects: list[_Object], hit: dict[str, np.ndarray], attrs: tuple[str, ...]) -> list[np.ndarray]:
    """Barycentric interpolation of per-vertex (N, 3) attributes at every ray hit; 0 on misses."""
    gid, pid, bary = hit["mesh_id"], hit["tri"], hit["bary"]
    out = np.zeros((len(gid), 3 * len(attrs)))
    for g, obj in enumerate(objects):
        m = np.flatnonzero(gid == g)
        if m.size:
            table = np.concatenate([getattr(obj, a) for a in attrs], axis=1)
            tri = obj.faces[pid[m]]
            out[m] = np.einsum("nk,nkc->nc", bary[m], table[tri])
    return [out[:, 3 * i : 3 * i + 3] for i in range(len(attrs))]


def _shade(objects: list[_Object], hit: dict[str, np.ndarray], lighting: np.ndarray):
    """Colour (N, 3) in 0..1 of every ray hit (black on misses) and the unit camera-frame normals."""
    albedo, n = _interp(objects, hit, ("albedo", "normals"))
    n = _unit(n)
    rgb = albedo * sh_shading(to_view(n), lighting)
    ok = hit["mesh_id"] >= 0
    return np.where(ok[:, None], np.clip(rgb, 0, 1), 0.0), n


def _unit(n: np.ndarray) -> np.ndarray:
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _exact_depth(objects: list[_Object], hit: dict[str, np.ndarray], dirs: np.ndarray) -> np.ndarray:
    """float64 z of the intersection of rays (N, 3) from the origin with the triangles Embree found."""
    gid, pid = hit["mesh_id"], hit["tri"]
    z = np.zeros(len(gid))
    for g, obj in enumerate(objects):
        m = gid == g
        if m.any():
            tri = obj.vertices[obj.faces[pid[m]]]
            n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            t = np.einsum("nc,nc->n", n, tri[:, 0]) / np.einsum("nc,nc->n", n, dirs[m])
            z[m] = t * dirs[m, 2]
    return z


def _projector_shadow(scene: MeshScene, baseline, d0: np.ndarray, z: np.ndarray, ok: np.ndarray,
                      normals: np.ndarray) -> np.ndarray:
    """(N,) bool: pixels (rays ``d0`` (N, 3) hitting at depth ``z`` (N,) where ``ok``) that a depth sensor's
    projector at ``baseline`` (3,) metres from the camera (None: no projector) cannot light, being blocked
    or facing away; ``normals`` (N, 3) at the hits."""
    shadowed = np.zeros(len(d0), dtype=bool)
    if baseline is None or not ok.any():
        return shadowed
    P = np.asarray(baseline, dtype=np.float64)
    X = d0[ok] * z[ok, None]
    to_x = X - P
    back = _cast(scene, P, to_x)
    margin = 0.002 / np.linalg.norm(to_x, axis=1)  # ignore the hit on the point's own surface
    blocked = (back["mesh_id"] >= 0) & (back["t"] < 1 - margin)
    facing_away = np.einsum("nc,nc->n", normals[ok], P - X) <= 0
    shadowed[ok] = blocked | facing_away
    return shadowed


def _supersampled(objects: list, scene: MeshScene, K: Intrinsics, u: np.ndarray, v: np.ndarray, aa: int,
                  lighting: np.ndarray) -> np.ndarray:
    """Colours (N, 3) of the pixels (u, v) (N,) as the mean of aa x aa rays each (anti-aliasing)."""
    offs = (np.arange(aa) + 0.5) / aa - 0.5
    sub = np.stack(np.meshgrid(offs, offs, indexing="xy"), -1).reshape(-1, 2)
    dirs = _rays(K, u, v, sub).reshape(-1, 3)
    return _shade(objects, _cast(scene, np.zeros(3), dirs), lighting)[0].reshape(-1, aa * aa, 3).mean(1)


def render_rgbd(model: HeadModel, subject: SynthSubject, K: Intrinsics, profile: str = "truedepth",
                background: bool = True, seed: int = 0, aa: int = 2) -> SynthFrame:
    """Render ``subject`` as an RGB-D frame seen by a pinhole camera ``K`` at the origin.

    Args:
        model: the head model the subject's parameters belong to.
        subject: the subject (parameters, placement, albedo, lighting).
        K: intrinsics; the image is ``K.width`` x ``K.height``.
        profile: depth sensor profile, ``truedepth``, ``zed2`` or ``none`` (exact depth).
        background: add a wall behind the head and shoulders under it (same scene, so occlusions
            are right); without it only the head is drawn, on black, with no depth elsewhere.
        seed: seed of the sensor noise (depth noise, holes, colour noise).
        aa: anti-aliasing: pixels on silhouettes and depth edges average aa x aa colour rays (other
            pixels use their centre ray); depth always uses the pixel-centre ray.

    Returns:
        A :class:`SynthFrame`. Same inputs give identical arrays.
    """
    K.check()
    prof = get_profile(profile)
    if aa < 1:
        raise HeadcastError(f"aa must be at least 1, not {aa}")
    geo = subject_geometry(model, subject)
    verts = geo["vertices"]
    if verts[:, 2].min() <= 0.01:
        raise HeadcastError("the subject is behind or too close to the camera (z <= 1 cm)")
    objects = [_Object(verts, model.faces, subject.albedo.astype(np.float64), vertex_normals(verts, model.faces))]
    kinds = [HEAD]
    if background:
        r_scene = streams(subject.seed)[-1]
        objects.append(_torso(verts, subject.theta[pose_slice("root")], r_scene))
        objects.append(_wall(float(np.median(verts[:, 2])) + r_scene.uniform(0.4, 1.0), K, r_scene))
        kinds += [TORSO, WALL]
    mouth = _mouth(model, geo["interior"])
    if mouth is not None:
        objects.append(mouth)
        kinds.append(MOUTH)

    scene = MeshScene([(obj.vertices, obj.faces) for obj in objects])
    H, W = K.height, K.width

    # pixel centres: depth, labels, incidence, projector/second-camera visibility
    v_pix, u_pix = (a.ravel().astype(np.float64) for a in np.mgrid[0:H, 0:W])
    d0 = _rays(K, u_pix, v_pix, np.zeros((1, 2)))[:, 0]
    hit = _cast(scene, np.zeros(3), d0)
    ok = hit["mesh_id"] >= 0
    z = np.where(ok, _exact_depth(objects, hit, d0), 0.0)
    labels = np.where(ok, np.asarray(kinds)[np.maximum(hit["mesh_id"], 0)], -1)
    rgb, normals = _shade(objects, hit, subject.lighting)
    cos_inc = np.abs(np.einsum("nc,nc->n", normals, d0)) / np.linalg.norm(d0, axis=1)
    shadowed = _projector_shadow(scene, prof.baseline, d0, z, ok, normals)
    rng = np.random.default_rng(seed)
    depth = sensor_depth(z.reshape(H, W), cos_inc.reshape(H, W), shadowed.reshape(H, W), K.fx, prof, rng)
    if aa > 1:
        edge = np.flatnonzero(_edges(labels.reshape(H, W), z.reshape(H, W)).ravel())
        rgb[edge] = _supersampled(objects, scene, K, u_pix[edge], v_pix[edge], aa, subject.lighting)
    rgb = rgb.reshape(H, W, 3)
    if prof.color_noise > 0:
        rgb = rgb + prof.color_noise * rng.standard_normal(rgb.shape)
    color = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)

    head_hit = labels == HEAD
    tri = np.where(head_hit, hit["tri"], -1)
    face_tri = model.region_triangles("face")
    face_mask = head_hit & face_tri[np.maximum(tri, 0)]
    lmk = geo["landmarks"]
    return SynthFrame(color=color, depth=depth, depth_clean=z.reshape(H, W).astype(np.float32),
                      face_mask=face_mask.reshape(H, W), labels=labels.reshape(H, W).astype(np.int8),
                      triangle_ids=tri.reshape(H, W).astype(np.int32), vertices=verts, landmarks=lmk,
                      landmarks_2d=project(lmk, K), K=K, profile=prof.name, seed=int(seed))
