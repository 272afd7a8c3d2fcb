"""ICT-FaceKit Light as a FLAME-format :class:`HeadModel`: the open default head (``ict``).

Source: the public repository ``ICT-VGL/ICT-FaceKit`` (MIT licence) at commit ``da5f95a``,
folder ``FaceXModel/``: a neutral mesh, 100 identity modes (one standard deviation each) and 53
ARKit-style expressions (weights in [0, 1]), all on one topology in centimetres with y up, the
face towards +z and +x on the subject's left, as FLAME. :func:`build_ict_model` keeps the face,
head and neck, eye sockets and eyeballs (not the mouth socket, gums, teeth, lashes or helper
meshes), converts to metres and adds a rig designed here from the geometry.

Joints. Each is an affine combination (weights summing to 1, minimum norm) of anchor vertices
that reproduces the chosen point on the template, so the joints follow beta and psi linearly:

- jaw (2): the lower teeth move rigidly in ``jawOpen`` (about 25 degrees about x). A Kabsch fit
  of that motion gives the opening rotation; its fixed point on the mid-sagittal plane is the
  pivot, in front of the ears near the temporomandibular joints. Anchors: the skin vertices
  nearest the pivot's x axis that no expression moves more than 2 mm.
- left eye (3, +x) and right eye (4): the centre of a least-squares sphere through the sclera;
  anchors: all the eyeball's vertices.
- neck (1, the head's rotation pivot): the midpoint of the nape (the most forward point of the
  back profile) and the cervicomental point (the deepest point of the chin-throat angle), i.e.
  the top of the neck column; anchors as for the jaw.
- root (0): the centroid of the neck's open bottom rim (uniform weights on the rim).

Skinning weights. Eyeballs are rigid on their eye joint. The jaw weight w of a vertex is the
least-squares value for which linear blend skinning's ``v + w (T_jaw v - v)`` reproduces its
``jawOpen`` offset, in [0, 1], regularised by the strain the jaw rotation puts on each edge (no
edge stretches or shrinks more than 2.5x at the full jawOpen angle, on the mean head and on 8
random identities), and 0 on the upper lip and above. The rest, ``1 - w``, is rigid on the neck
joint above the plane through the nape and the cervicomental point and fades (smoothstep) to the
root at the bottom rim. No pose correctives (posedirs are zero); parents ``[-1, 0, 1, 1, 1]``.

Landmarks: upstream's 68 vertices (iBUG-68 order) as barycentric corners. Dynamic contour (rows
are yaw -39..39 degrees; positive yaw turns the face towards +x, as ``lbs.head_yaw_degrees``):
on the side turning away, each contour point slides along the horizontal slice of the face at
its own height to the point outermost along x after the yaw, but never behind its frontal point
(so the points beside the chin, which sit inside the frontal silhouette, move only once the
silhouette reaches them); the near side and the chin keep their frontal points.

UV: upstream's tiles packed into one [0, 1] atlas: face top-left, back of head and eye sockets
top-right, left eyeball bottom-left, right eyeball bottom-right (``meta["uv_layout"]``: u0, v0,
u1, v1 per region).

Masks: face (upstream's narrow face area), eyes (sockets and eyeballs), lips (inside the outer
lip landmarks grown by 3 mm), nose, forehead, scalp (above the neck, outside the face area,
without the ears), neck (below the head/neck plane), left_eyeball, right_eyeball.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spl

from headcast.core import paths
from headcast.core.errors import HeadcastError
from headcast.core.geometry import points_in_polygon
from headcast.core.rigid import rigid_fit
from headcast.io.mesh import read_obj, read_obj_vertices
from headcast.model.head_model import DYN_YAW_MAX_DEG, N_CONTOUR, HeadModel

UPSTREAM = "ICT-VGL/ICT-FaceKit"
COMMIT = "da5f95a"
DOWNLOAD_URL = f"https://codeload.github.com/{UPSTREAM}/tar.gz/{COMMIT}"
ENV_SRC = "HEADCAST_ICT_SRC"
VERSION = f"ict-facekit-{COMMIT}/headcast-1"
N_SOURCE_VERTICES = 26719

# Upstream vertex ranges, 0-based and inclusive.
FACE = (0, 9408)
FACE_NARROW = (0, 6705)
HEAD_NECK = (9409, 11247)
EYE_SOCKET_L = (13294, 13677)
EYE_SOCKET_R = (13678, 14061)
TEETH = (17039, 21450)
EYEBALL_L = (21451, 23020)
EYEBALL_R = (23021, 24590)
KEEP = (FACE, HEAD_NECK, EYE_SOCKET_L, EYE_SOCKET_R, EYEBALL_L, EYEBALL_R)

# Upstream UV is UDIM-like (face in u 0..1, back of head and eye sockets in 1..2, each eyeball its
# own 0..1); the model packs them into quadrants (column, row) of one [0, 1] atlas, v up.
UV_QUADRANTS = {"M_Face": (0, 1), "M_BackHead": (1, 1), "M_ScleraLeft": (0, 0), "M_IrisLeft": (0, 0),
                "M_ScleraRight": (1, 0), "M_IrisRight": (1, 0)}
CM = 0.01  # upstream centimetres -> metres
N_ANCHORS = 96  # skin anchor vertices of the jaw and neck joints
STILL = 2e-3  # m: those anchors move less than this under every expression
MAX_JAW_STRETCH = 2.5  # edge length ratio allowed at the full jawOpen angle ...
N_VARIANTS = 8  # ... on the mean head and on this many random identities (seed 0)
CHIN, NOSE_BASE = 8, 33  # iBUG-68 indices


def _span(r: tuple[int, int]) -> np.ndarray:
    return np.arange(r[0], r[1] + 1)


# ---------------------------------------------------------------------------------------------
# source files: a local folder, $HEADCAST_ICT_SRC or the download


def find_source(src: str | Path | None = None, *, url: str | None = None, progress=print,
                timeout: float = 30.0) -> Path:
    """The ICT-FaceKit folder (the one holding ``FaceXModel/``).

    ``src`` may name the repository folder or its ``FaceXModel`` folder; ``None`` uses
    ``$HEADCAST_ICT_SRC`` and otherwise downloads the pinned commit once (cached in
    ``paths.home()/src/ict-facekit``).
    """
    origin = ""
    if src is None and os.environ.get(ENV_SRC):
        src, origin = os.environ[ENV_SRC], f" (from {ENV_SRC})"
    if src is None:
        return download_source(url or DOWNLOAD_URL, progress=progress, timeout=timeout)
    root = Path(src).expanduser()
    if root.name == "FaceXModel" and not (root / "FaceXModel").is_dir():
        root = root.parent
    if not root.is_dir():
        raise HeadcastError(f"ICT-FaceKit folder {root}{origin} does not exist")
    if not any((root / "FaceXModel" / f"generic_neutral_mesh{s}").is_file() for s in (".obj", ".obj.xz")):
        raise HeadcastError(f"{root}{origin} is not an ICT-FaceKit folder "
                            "(no FaceXModel/generic_neutral_mesh.obj or .obj.xz)")
    return root


def download_source(url: str = DOWNLOAD_URL, *, progress=print, timeout: float = 30.0) -> Path:
    """Download the repository archive and keep its LICENSE and FaceXModel/; returns that folder."""
    dest = paths.home() / "src" / "ict-facekit"
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    progress(f"ICT-FaceKit: downloading {url} ...")
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            archive = Path(tmp) / "src.tar.gz"
            _fetch(url, archive, progress, timeout)
            unpacked = Path(tmp) / "ict-facekit"
            n = _unpack(archive, unpacked)
            if not (unpacked / "FaceXModel").is_dir():
                raise HeadcastError(f"the archive from {url} holds no FaceXModel/ folder")
            (unpacked / ".complete").write_text(f"{UPSTREAM}@{COMMIT}\n")
            if dest.exists():
                shutil.rmtree(dest)
            unpacked.replace(dest)
    except (OSError, tarfile.TarError, EOFError) as e:  # URLError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or str(e) or e.__class__.__name__
        raise HeadcastError(
            f"could not download ICT-FaceKit from {url} ({reason}); pass --src DIR with a local copy "
            f"of the repository (e.g. ../shared/models/ict-facekit) or set {ENV_SRC}=DIR") from None
    progress(f"ICT-FaceKit: unpacked {n} files into {dest}")
    return dest


def _fetch(url: str, out: Path, progress, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(out, "wb") as fh:
        total = int(r.headers.get("Content-Length") or 0)
        got, shown, t0 = 0, 0, time.perf_counter()
        while chunk := r.read(1 << 20):
            fh.write(chunk)
            got += len(chunk)
            if got - shown >= 16 << 20:
                shown = got
                of = f" of {total / 1e6:.0f}" if total else ""
                rate = got / 1e6 / (time.perf_counter() - t0 + 1e-9)
                progress(f"  {got / 1e6:.0f}{of} MB ({rate:.1f} MB/s)")
    progress(f"  downloaded {got / 1e6:.1f} MB")


def _unpack(archive: Path, out: Path) -> int:
    """Extract LICENSE and FaceXModel/* (regular files only, no path escapes); returns the count."""
    n = 0
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            parts = Path(m.name).parts[1:]  # drop the "ICT-FaceKit-<sha>/" top folder
            if not m.isfile() or not parts or ".." in parts:
                continue
            if parts != ("LICENSE",) and parts[0] != "FaceXModel":
                continue
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            n += 1
    return n


@dataclass
class IctSource:
    """Upstream data as read: centimetres, upstream vertex order.

    vertices (N, 3) neutral; faces (F, 3), uv (T, 2), uv_faces (F, 3), face_material (F,) indexing
    material_names; identity (S, N, 3) and expressions (E, N, 3) offsets from the neutral;
    landmarks (68,) vertex indices; licence: the LICENSE text.
    """

    root: Path
    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    uv_faces: np.ndarray
    face_material: np.ndarray
    material_names: tuple[str, ...]
    identity: np.ndarray
    expressions: np.ndarray
    expression_names: list[str]
    landmarks: np.ndarray
    licence: str


def mesh_file(folder: Path, stem: str) -> Path:
    """``folder/stem.obj`` or else ``folder/stem.obj.xz``; HeadcastError when neither exists."""
    for suffix in (".obj", ".obj.xz"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise HeadcastError(f"{folder.parent} is not a complete ICT-FaceKit copy: "
                        f"FaceXModel/{stem}.obj (or .obj.xz) is missing")


def _vertices(path: Path) -> np.ndarray:
    try:
        return read_obj_vertices(path)
    except (lzma.LZMAError, EOFError, ValueError) as e:
        raise HeadcastError(f"{path} is not a readable OBJ ({e.__class__.__name__}: {e})") from None


def read_source(root: Path, n_shape: int = 100, progress=print) -> IctSource:
    """Read the neutral mesh, ``n_shape`` identity modes, the expressions, landmarks and licence."""
    if not 1 <= n_shape <= 100:
        raise HeadcastError(f"n_shape must be 1..100 (ICT-FaceKit has 100 identity modes), got {n_shape}")
    folder = root / "FaceXModel"
    lic = next((root / n for n in ("LICENSE", "LICENSE.txt", "LICENSE.md") if (root / n).is_file()), None)
    if lic is None:
        raise HeadcastError(f"{root} has no LICENSE file; its MIT notice must travel with the converted model")
    index_file = folder / "vertex_indices.json"
    if not index_file.is_file():
        raise HeadcastError(f"{index_file} is missing (not an ICT-FaceKit copy?)")
    try:
        index = json.loads(index_file.read_text())
        names = [str(s) for s in index["expressions"]]
        landmarks = np.asarray(index["idx_to_landmark_verts"], dtype=np.int64)
    except (ValueError, KeyError, TypeError) as e:
        raise HeadcastError(f"{index_file} is not ICT-FaceKit's vertex index file ({e!r})") from None
    if landmarks.shape != (68,) or "jawOpen" not in names:
        raise HeadcastError(f"{index_file}: expected 68 landmark vertices and a jawOpen expression")
    neutral = mesh_file(folder, "generic_neutral_mesh")
    try:
        mesh = read_obj(neutral)
    except (lzma.LZMAError, EOFError, ValueError, IndexError) as e:
        raise HeadcastError(f"{neutral} is not a readable OBJ ({e.__class__.__name__}: {e})") from None
    N = len(mesh.vertices)
    if N != N_SOURCE_VERTICES or mesh.uv_faces is None or mesh.face_material is None:
        raise HeadcastError(f"{folder}/generic_neutral_mesh has {N} vertices; ICT-FaceKit Light has "
                            f"{N_SOURCE_VERTICES}, with texture coordinates and materials")
    files = [mesh_file(folder, f"identity{k:03d}") for k in range(n_shape)]
    files += [mesh_file(folder, name) for name in names]
    progress(f"ICT-FaceKit: reading {len(files) + 1} meshes from {folder} ...")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:  # lzma releases the GIL
        meshes = list(ex.map(_vertices, files))
    for f, v in zip(files, meshes):
        if v.shape != (N, 3):
            raise HeadcastError(f"{f} has {len(v)} vertices, the neutral mesh {N}: not the same topology")
    offsets = np.stack(meshes) - mesh.vertices  # (S + E, N, 3)
    progress(f"ICT-FaceKit: read {len(files) + 1} meshes in {time.perf_counter() - t0:.1f} s")
    return IctSource(root=root, vertices=mesh.vertices, faces=mesh.faces, uv=mesh.uv, uv_faces=mesh.uv_faces,
                     face_material=mesh.face_material, material_names=mesh.material_names,
                     identity=offsets[:n_shape], expressions=offsets[n_shape:], expression_names=names,
                     landmarks=landmarks, licence=lic.read_text())


# ---------------------------------------------------------------------------------------------
# geometry helpers (arrays in, arrays out)


def submesh(faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles (F, 3) whose corners are all kept (``keep``: (N,) bool), re-indexed.

    Returns remap (N,) new vertex index or -1, face_ids (F',) kept triangles, faces (F', 3).
    """
    remap = np.full(len(keep), -1, dtype=np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    face_ids = np.flatnonzero(keep[faces].all(1))
    return remap, face_ids, remap[faces[face_ids]]


def pack_uv(uv: np.ndarray, uv_faces: np.ndarray, quadrant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each triangle's texture coordinates from its unit UDIM tile into a quadrant of [0, 1]^2.

    Args:
        uv: (T, 2) upstream coordinates; uv_faces (F, 3) per corner.
        quadrant: (F, 2) int (column, row) of each triangle's quadrant.

    Returns:
        packed uv (T', 2) in [0, 1] and uv_faces (F, 3) into it (a coordinate shared by triangles
        of two quadrants is split).
    """
    corners = uv[uv_faces]  # (F, 3, 2)
    tile = np.floor(corners[..., 0].min(1) + 1e-6)  # each triangle's UDIM column
    packed = (corners - np.stack([tile, np.zeros_like(tile)], -1)[:, None] + quadrant[:, None]) / 2
    keys = np.column_stack([uv_faces.ravel(), np.repeat(quadrant, 3, axis=0)])
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return packed.reshape(-1, 2)[first], inverse.reshape(-1, 3)


def affine_weights(anchors: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Minimum-norm weights w (K,) with ``w.sum() == 1`` and ``w @ anchors == point``.

    The combination commutes with any affine map of the anchors, so a joint regressed with it
    moves with them. anchors (K, 3), K >= 4, not all on one plane.
    """
    A = np.vstack([(anchors - point).T, np.ones(len(anchors))])  # (4, K)
    return np.linalg.lstsq(A, np.array([0.0, 0.0, 0.0, 1.0]), rcond=None)[0]


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (K, 3): centre (3,) and radius."""
    A = np.hstack([2 * points, np.ones((len(points), 1))])
    x = np.linalg.lstsq(A, (points ** 2).sum(1), rcond=None)[0]
    return x[:3], float(np.sqrt(x[3] + x[:3] @ x[:3]))


def sagittal_pivot(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The point of the plane x = 0 that ``v -> R v + t`` moves least (its fixed point when the
    motion is a rotation about an axis along x)."""
    yz = np.linalg.lstsq((np.eye(3) - R)[:, 1:], t, rcond=None)[0]
    return np.array([0.0, yz[0], yz[1]])


def rotation_x(angle: float) -> np.ndarray:
    """Rotation (3, 3) about +x by ``angle`` radians (positive moves +z towards -y: opens a jaw)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (M, 2) of a triangle mesh, smaller index first."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def edge_stretch(v0: np.ndarray, v1: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Length ratio (M,) of each edge (M, 2) between rest ``v0`` and deformed ``v1`` (V, 3)."""
    d0 = np.linalg.norm(v0[edges[:, 0]] - v0[edges[:, 1]], axis=1)
    return np.linalg.norm(v1[edges[:, 0]] - v1[edges[:, 1]], axis=1) / np.maximum(d0, 1e-12)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """3x^2 - 2x^3 on x clamped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def boundary_loops(faces: np.ndarray, n: int) -> list[np.ndarray]:
    """Vertex index sets of the open boundaries of a triangle mesh with ``n`` vertices."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    b = edges[counts == 1]
    if len(b) == 0:
        return []
    A = sp.coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n, n))
    _, label = csgraph.connected_components(A, directed=False)
    verts = np.unique(b)
    return [verts[label[verts] == k] for k in np.unique(label[verts])]


def loop_order(faces: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """The vertices of one boundary loop (an index set) in walking order."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    nbr: dict[int, list[int]] = {}
    for a, c in edges[(counts == 1) & np.isin(edges[:, 0], loop)]:
        nbr.setdefault(int(a), []).append(int(c))
        nbr.setdefault(int(c), []).append(int(a))
    order, prev = [int(loop[0])], -1
    while len(order) <= len(loop):
        nxt = next(q for q in nbr[order[-1]] if q != prev)
        if nxt == order[0]:
            break
        prev = order[-1]
        order.append(nxt)
    return np.array(order)


def geodesic_nearer(v: np.ndarray, edges: np.ndarray, first: np.ndarray, second: np.ndarray,
                    limit: float) -> np.ndarray:
    """Vertices whose edge-path distance to ``first`` is below ``limit`` and below their
    distance to ``second``."""
    n = len(v)
    length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
    G = sp.coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    d1 = csgraph.dijkstra(G, directed=False, indices=first, min_only=True, limit=limit)
    d2 = csgraph.dijkstra(G, directed=False, indices=second, min_only=True, limit=2 * limit)
    return np.flatnonzero(np.isfinite(d1) & (d1 < d2))


# ---------------------------------------------------------------------------------------------
# rig


def jaw_motion(rest: np.ndarray, opened: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Opening angle (radians about +x), pivot (3,) on the mid-sagittal plane and fit residual (m)
    of points (K, 3) that move rigidly with the jaw (the lower teeth) from ``rest`` to ``opened``."""
    R, t = rigid_fit(rest, opened)
    angle = float(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))
    angle *= np.sign(R[2, 1] - R[1, 2]) or 1.0  # the sign of the axis' x component
    residual = float(np.linalg.norm(rest @ R.T + t - opened, axis=1).max())
    return angle, sagittal_pivot(R, t), residual


def mouth_rim(v: np.ndarray, faces: np.ndarray, lip_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mouth opening (the boundary loop nearest ``lip_point``) split at its corners, the
    loop's extreme-x vertices: the upper arc (corners included) and the lower arc (excluded)."""
    loop = min(boundary_loops(faces, len(v)), key=lambda b: np.linalg.norm(v[b].mean(0) - lip_point))
    order = loop_order(faces, loop)
    order = np.roll(order, -int(np.argmin(v[order, 0])))
    k = int(np.argmax(v[order, 0]))
    a, b = order[: k + 1], np.append(order[k:], order[0])
    upper, lower = (a, b) if v[a, 1].mean() > v[b, 1].mean() else (b, a)
    return upper, lower[1:-1]


def upper_face(v: np.ndarray, faces: np.ndarray, skin: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Skin vertices on the upper lip or above (the jaw leaves them alone): the mouth rim's upper
    arc and corners, the vertices between and above the corners geodesically nearer that arc than
    the lower one (within 2 cm), and everything from the nose base (iBUG 33) up."""
    upper_arc, lower_arc = mouth_rim(v, faces, landmarks[[62, 66]].mean(0))
    near = geodesic_nearer(v, mesh_edges(faces), upper_arc[1:-1], lower_arc, 0.02)
    corners = v[upper_arc[[0, -1]]]
    near = near[(np.abs(v[near, 0]) <= np.abs(corners[:, 0]).max()) & (v[near, 1] >= corners[:, 1].mean())]
    above = skin[v[skin, 1] >= landmarks[NOSE_BASE, 1]]
    return np.unique(np.concatenate([upper_arc, near, above]))


def _strain(ratio: np.ndarray) -> np.ndarray:
    """Length ratios as a stretch factor >= 1: shrinking counts like stretching."""
    return np.maximum(ratio, 1.0 / np.maximum(ratio, 1e-9))


def jaw_weights(v: np.ndarray, faces: np.ndarray, jaw_open: np.ndarray, pivot: np.ndarray, angle: float,
                zero: np.ndarray, max_stretch: float = MAX_JAW_STRETCH,
                variants: np.ndarray | None = None) -> np.ndarray:
    """Jaw skinning weights (V,) in [0, 1] that reproduce ``jaw_open`` without tearing.

    Rotating by ``angle`` about x through ``pivot`` moves vertex i by d_i; LBS with jaw weight
    w_i moves it by w_i d_i. Minimise sum_i |w_i d_i - jaw_open_i|^2 plus the strain penalty
    sum_edges h^2 |d_e|^2 (w_a - w_b)^2 / |e|^2 (h = 2 mm), with w = 0 on ``zero``. Edges that the
    full rotation stretches or shrinks more than ``max_stretch`` times, on ``v`` or on any of the
    ``variants`` (K, V, 3) (other identities), get heavier penalties until none does.

    Args:
        v: (V, 3) rest vertices, metres; faces (F, 3); jaw_open (V, 3) blendshape offsets.
        pivot: (3,) rotation centre; angle: the rotation (radians) ``jaw_open`` corresponds to.
        zero: vertex indices held at weight 0.
    """
    shapes = [v] if variants is None else [v, *variants]
    R = rotation_x(angle)
    V = len(v)
    d = (v - pivot) @ R.T + pivot - v
    d2 = (d * d).sum(1)
    target = np.clip((jaw_open * d).sum(1) / (d2 + 1e-12), 0.0, 1.0)
    edges = mesh_edges(faces)
    length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
    c = (2e-3) ** 2 * 0.5 * (d2[edges[:, 0]] + d2[edges[:, 1]]) / np.maximum(length, 1e-6) ** 2
    free = np.ones(V, bool)
    free[zero] = False
    w = np.zeros(V)
    for _ in range(50):
        A = sp.coo_matrix((c, (edges[:, 0], edges[:, 1])), shape=(V, V))
        A = A + A.T
        M = (sp.diags(d2 + np.asarray(A.sum(1)).ravel()) - A).tocsr()
        w[free] = spl.spsolve(M[free][:, free].tocsc(), (d2 * target)[free])
        w = np.clip(w, 0.0, 1.0)
        s = np.max([_strain(edge_stretch(x, x + w[:, None] * ((x - pivot) @ R.T + pivot - x), edges))
                    for x in shapes], axis=0)
        if s.max() <= max_stretch:
            break
        bad = s > 0.95 * max_stretch
        c[bad] *= 2 * (s[bad] / (0.95 * max_stretch)) ** 2
    return w


def neck_points(v: np.ndarray, skin: np.ndarray, below: float, chin_y: float) -> tuple[np.ndarray, np.ndarray]:
    """The nape and the cervicomental point on the mid-sagittal profile of the skin.

    The nape is the most forward (max z) back-profile point below height ``below``; the
    cervicomental point the front-profile point below the chin deepest in the chin-throat angle
    (min z - y).
    """
    strip = skin[np.abs(v[skin, 0]) < 2e-3]
    back = strip[(v[strip, 2] < 0) & (v[strip, 1] < below)]
    front = strip[(v[strip, 2] > 0) & (v[strip, 1] < chin_y)]
    if len(back) == 0 or len(front) == 0:
        raise HeadcastError("the head mesh has no mid-sagittal neck profile (not ICT-FaceKit Light?)")
    return v[back[np.argmax(v[back, 2])]], v[front[np.argmin(v[front, 2] - v[front, 1])]]


@dataclass
class Rig:
    """joints (5, 3) m, j_regressor (5, V), lbs_weights (V, 5), neck_height (V,) m above the
    head/neck plane (negative on the neck) and the measured numbers (info)."""

    joints: np.ndarray
    j_regressor: np.ndarray
    lbs_weights: np.ndarray
    neck_height: np.ndarray
    info: dict


def design_rig(v: np.ndarray, faces: np.ndarray, parts: dict[str, np.ndarray], jaw_open: np.ndarray,
               expressions: np.ndarray, teeth: tuple[np.ndarray, np.ndarray],
               sclera: dict[str, np.ndarray], landmarks: np.ndarray, variants: np.ndarray | None = None) -> Rig:
    """Joints, regressor and skinning weights of the kept mesh (see the module docstring).

    Args:
        v: (V, 3) template, metres; faces (F, 3).
        parts: vertex indices "skin" (face, head and neck), "left_eyeball", "right_eyeball" and
            "upper" (upper lip and above: jaw weight 0).
        jaw_open: (V, 3) the jawOpen offsets; expressions (E, V, 3) all expression offsets.
        teeth: rest and jawOpen positions (K, 3) of the lower teeth (not part of the mesh).
        sclera: "left"/"right" -> (K, 3) sclera points.
        landmarks: (68, 3) iBUG-68 points of the template.
        variants: (K, V, 3) other identities the jaw weights must not tear either.
    """
    V = len(v)
    open_angle, jaw, teeth_residual = jaw_motion(*teeth)
    eyes = {s: fit_sphere(sclera[s]) for s in ("left", "right")}
    skin = parts["skin"]
    nape, throat = neck_points(v, skin, jaw[1], landmarks[CHIN, 1])
    rim = min(boundary_loops(faces, V), key=lambda b: v[b, 1].mean())
    joints = np.stack([v[rim].mean(0), 0.5 * (nape + throat), jaw, eyes["left"][0], eyes["right"][0]])

    jr = np.zeros((5, V))
    jr[0, rim] = 1.0 / len(rim)
    still = skin[np.linalg.norm(expressions[:, skin], axis=2).max(0) < STILL]
    for j in (1, 2):  # the still skin nearest the joint's x axis: patches on both sides around it
        near = still[np.argsort(np.linalg.norm(v[still, 1:] - joints[j, 1:], axis=1))[:N_ANCHORS]]
        jr[j, near] = affine_weights(v[near], joints[j])
    for j, s in ((3, "left_eyeball"), (4, "right_eyeball")):
        jr[j, parts[s]] = affine_weights(v[parts[s]], joints[j])

    eyeballs = np.concatenate([parts["left_eyeball"], parts["right_eyeball"]])
    w_jaw = jaw_weights(v, faces, jaw_open, jaw, open_angle, np.concatenate([eyeballs, parts["upper"]]),
                        variants=variants)
    normal = np.cross([1.0, 0.0, 0.0], throat - nape)
    normal *= np.sign(normal[1]) / np.linalg.norm(normal)  # up, into the head
    height = (v - nape) @ normal
    head = smoothstep(1.0 - height / height[rim].max())  # 1 above the plane, 0 on the bottom rim
    W = np.zeros((V, 5))
    W[:, 0] = (1 - w_jaw) * (1 - head)
    W[:, 1] = (1 - w_jaw) * head
    W[:, 2] = w_jaw
    W[eyeballs] = 0.0
    W[parts["left_eyeball"], 3] = 1.0
    W[parts["right_eyeball"], 4] = 1.0
    info = {"joints_m": joints.round(5).tolist(), "jaw_open_angle_rad": round(float(open_angle), 5),
            "jaw_teeth_fit_residual_mm": round(teeth_residual * 1e3, 3),
            "eye_radius_mm": [round(eyes[s][1] * 1e3, 2) for s in ("left", "right")],
            "nape_m": nape.round(5).tolist(), "cervicomental_m": throat.round(5).tolist(),
            "regressor_abs_sum": np.abs(jr).sum(1).round(3).tolist()}
    return Rig(joints=joints, j_regressor=jr, lbs_weights=W, neck_height=height, info=info)


# ---------------------------------------------------------------------------------------------
# landmarks and masks


def vertex_embedding(faces: np.ndarray, vertex_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex as a barycentric point: a triangle holding it (L,) and a one-hot bary (L, 3)."""
    tri = np.empty(len(vertex_ids), dtype=np.int64)
    bary = np.zeros((len(vertex_ids), 3))
    for i, vid in enumerate(vertex_ids):
        rows, cols = np.nonzero(faces == vid)
        if len(rows) == 0:
            raise HeadcastError(f"landmark vertex {vid} is on no kept triangle")
        tri[i] = rows[0]
        bary[i, cols[0]] = 1.0
    return tri, bary


def slice_points(v: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, height: float):
    """Where the plane y = ``height`` cuts the edges of triangles ``face_ids``.

    Returns points (K, 3), their triangles (K,) and barycentric coordinates (K, 3).
    """
    f = faces[face_ids]
    pts, tris, barys = [], [], []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ya, yb = v[f[:, a], 1], v[f[:, b], 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (height - ya) / (yb - ya)
        ok = (ya != yb) & (t >= 0) & (t <= 1)
        t = t[ok]
        pts.append((1 - t)[:, None] * v[f[ok, a]] + t[:, None] * v[f[ok, b]])
        bc = np.zeros((len(t), 3))
        bc[:, a], bc[:, b] = 1 - t, t
        tris.append(face_ids[ok])
        barys.append(bc)
    return np.concatenate(pts), np.concatenate(tris), np.concatenate(barys)


def dynamic_contour_table(v: np.ndarray, faces: np.ndarray, lmk_faces: np.ndarray, lmk_bary: np.ndarray,
                          face_ids: np.ndarray, fixed: tuple[int, ...] = (CHIN,)):
    """Contour embedding by yaw (see the module docstring).

    Args:
        v: (V, 3) template; faces (F, 3); lmk_faces (68,), lmk_bary (68, 3): the static embedding.
        face_ids: triangles the contour may slide on (the face area).
        fixed: contour points that never move.

    Returns:
        dyn_faces (79, 17) and dyn_bary (79, 17, 3); row i is yaw i - 39 degrees.
    """
    yaws = np.deg2rad(np.arange(-DYN_YAW_MAX_DEG, DYN_YAW_MAX_DEG + 1))
    dyn_f = np.tile(lmk_faces[:N_CONTOUR], (len(yaws), 1))
    dyn_b = np.tile(lmk_bary[:N_CONTOUR], (len(yaws), 1, 1))
    frontal = np.einsum("lk,lkc->lc", lmk_bary[:N_CONTOUR], v[faces[lmk_faces[:N_CONTOUR]]])
    for k in range(N_CONTOUR):
        side = np.sign(frontal[k, 0])
        if k in fixed or side == 0:
            continue
        p, tri, bary = slice_points(v, faces, face_ids, frontal[k, 1])
        ok = (side * p[:, 0] >= 0) & (p[:, 2] >= frontal[k, 2])  # same side, never behind the frontal point
        p, tri, bary = p[ok], tri[ok], bary[ok]
        for row, a in enumerate(yaws):
            if np.sign(a) != side or len(p) == 0:
                continue  # the near side keeps its frontal point
            out = side * (p[:, 0] * np.cos(a) + p[:, 2] * np.sin(a))
            best = int(np.argmax(out))
            if out[best] > side * (frontal[k, 0] * np.cos(a) + frontal[k, 2] * np.sin(a)):
                dyn_f[row, k], dyn_b[row, k] = tri[best], bary[best]
    return dyn_f, dyn_b


def region_masks(v: np.ndarray, parts: dict[str, np.ndarray], landmarks: np.ndarray,
                 neck_height: np.ndarray) -> dict[str, np.ndarray]:
    """Region masks (sorted int32 vertex indices) of the kept mesh.

    Args:
        v: (V, 3) template, metres.
        parts: vertex indices "face" (upstream's narrow face area), "skin" (face and head-and-neck
            ranges), "band" (the face range outside the narrow face: hairline, temples, ears, throat),
            "eye_socket_left", "eye_socket_right", "left_eyeball", "right_eyeball".
        landmarks: (68, 3) iBUG-68 points.
        neck_height: (V,) m above the head/neck plane (negative on the neck).
    """
    V = len(v)
    mask = lambda ids: np.isin(np.arange(V), ids)  # noqa: E731
    face, skin, band = mask(parts["face"]), mask(parts["skin"]), mask(parts["band"])
    lm = landmarks
    outer = lm[48:60, :2]  # outer lip contour, grown by 3 mm
    c = outer.mean(0)
    grown = c + (outer - c) * (1 + 0.003 / np.linalg.norm(outer - c, axis=1, keepdims=True))
    lips = face & points_in_polygon(v[:, :2], grown) & (v[:, 2] > lm[[48, 54], 2].min() - 0.01)
    half = 0.5 * (lm[42, 0] - lm[39, 0])  # nose: bridge between the inner eye corners, alae round 31..35
    wing = lm[35, 0] - lm[33, 0]
    nose_poly = np.array([
        [lm[27, 0] - 0.45 * half, lm[27, 1]], [lm[27, 0] + 0.45 * half, lm[27, 1]],
        [lm[35, 0] + 0.6 * wing, lm[35, 1] + 0.6 * wing], [lm[35, 0] + 0.5 * wing, lm[33, 1] - 0.002],
        [lm[31, 0] - 0.5 * wing, lm[33, 1] - 0.002], [lm[31, 0] - 0.6 * wing, lm[31, 1] + 0.6 * wing]])
    nose = face & points_in_polygon(v[:, :2], nose_poly) & (v[:, 2] > lm[[39, 42], 2].mean())
    brow_top = lm[17:27, 1].max()
    forehead = face & (v[:, 1] > brow_top + 0.005) & (np.abs(v[:, 0]) <= np.abs(lm[[17, 26], 0]).max())
    top_band = band & (v[:, 1] > brow_top + 0.03)  # the band's ears and temples stay out of the scalp
    scalp = ((skin & ~face & ~band) | top_band) & (neck_height > 0)
    neck = skin & ~face & (neck_height < 0)
    idx = lambda m: np.flatnonzero(m).astype(np.int32)  # noqa: E731
    eyes = np.concatenate([parts[k] for k in ("eye_socket_left", "eye_socket_right", "left_eyeball",
                                             "right_eyeball")])
    return {"face": idx(face), "eyes": np.sort(eyes).astype(np.int32), "lips": idx(lips),
            "scalp": idx(scalp), "neck": idx(neck), "nose": idx(nose), "forehead": idx(forehead),
            "left_eyeball": np.sort(parts["left_eyeball"]).astype(np.int32),
            "right_eyeball": np.sort(parts["right_eyeball"]).astype(np.int32)}


# ---------------------------------------------------------------------------------------------


def build_ict_model(src: Path | str | None = None, progress=print, n_shape: int = 100, *,
                    url: str | None = None) -> HeadModel:
    """Convert ICT-FaceKit Light into the FLAME-format :class:`HeadModel` named ``ict``.

    Args:
        src: the ICT-FaceKit folder (holding ``FaceXModel/`` with ``.obj`` or ``.obj.xz`` files);
            ``None``: ``$HEADCAST_ICT_SRC``, else download the pinned commit (from ``url`` if given).
        progress: called with one-line status messages.
        n_shape: identity components to keep (1..100).
    """
    t0 = time.perf_counter()
    s = read_source(find_source(src, url=url, progress=progress), n_shape, progress)
    t_read = time.perf_counter() - t0

    keep = np.zeros(N_SOURCE_VERTICES, bool)
    for r in KEEP:
        keep[_span(r)] = True
    remap, face_ids, faces = submesh(s.faces, keep)
    materials = [s.material_names[i] for i in s.face_material[face_ids]]
    unknown = sorted(set(materials) - set(UV_QUADRANTS))
    if unknown:
        raise HeadcastError(f"{s.root}: unexpected materials {unknown} on the kept head (not ICT-FaceKit Light?)")
    uv, uv_faces = pack_uv(s.uv, s.uv_faces[face_ids], np.array([UV_QUADRANTS[m] for m in materials]))
    loose = np.setdiff1d(np.flatnonzero(keep), s.faces[face_ids])
    if len(loose):
        raise HeadcastError(f"{s.root}: {len(loose)} kept vertices lie on no kept triangle (not ICT-FaceKit Light?)")
    part = lambda r: remap[_span(r)]  # noqa: E731
    v = s.vertices[keep] * CM
    shape = s.identity[:, keep] * CM  # (S, V, 3)
    expr = s.expressions[:, keep] * CM  # (E, V, 3)

    lm_ids = remap[s.landmarks]
    if (lm_ids < 0).any():
        raise HeadcastError(f"{s.root}: landmark vertices {s.landmarks[lm_ids < 0].tolist()} are not on the head")
    lmk_faces, lmk_bary = vertex_embedding(faces, lm_ids)
    landmarks = v[lm_ids]

    jaw_full = s.expressions[s.expression_names.index("jawOpen")]
    teeth = _span(TEETH)
    lower = teeth[np.linalg.norm(jaw_full[teeth], axis=1) > 0.1]  # moves > 1 mm: the lower teeth
    if len(lower) < 10:
        raise HeadcastError(f"{s.root}: jawOpen does not move the lower teeth (not ICT-FaceKit Light?)")
    sclera = {}
    for side, r, material in (("left", EYEBALL_L, "M_ScleraLeft"), ("right", EYEBALL_R, "M_ScleraRight")):
        ids = _span(r)
        if material in s.material_names:
            ids = np.intersect1d(ids, s.faces[s.face_material == s.material_names.index(material)])
        sclera[side] = s.vertices[ids] * CM

    skin = np.concatenate([part(FACE), part(HEAD_NECK)])
    eyeballs = {"left_eyeball": part(EYEBALL_L), "right_eyeball": part(EYEBALL_R)}
    sockets = np.concatenate([part(EYE_SOCKET_L), part(EYE_SOCKET_R)])
    upper = upper_face(v, faces, np.concatenate([skin, sockets]), landmarks)
    variants = v + np.einsum("ks,svc->kvc", np.random.default_rng(0).normal(size=(N_VARIANTS, n_shape)), shape)
    rig = design_rig(v, faces, {"skin": skin, "upper": upper, **eyeballs},
                     expr[s.expression_names.index("jawOpen")], expr,
                     (s.vertices[lower] * CM, (s.vertices[lower] + jaw_full[lower]) * CM), sclera, landmarks,
                     variants=variants)
    face_tris = np.flatnonzero((faces <= part(FACE_NARROW).max()).all(1))
    dyn_faces, dyn_bary = dynamic_contour_table(v, faces, lmk_faces, lmk_bary, face_tris)
    masks = region_masks(v, {"face": part(FACE_NARROW), "skin": skin,
                             "band": np.setdiff1d(part(FACE), part(FACE_NARROW)),
                             "eye_socket_left": part(EYE_SOCKET_L), "eye_socket_right": part(EYE_SOCKET_R),
                             **eyeballs}, landmarks, rig.neck_height)

    V = len(v)
    meta = {
        "name": "ict",
        "version": VERSION,
        "licence": "MIT",
        "attribution": (f"Derived from ICT-FaceKit (FaceXModel), https://github.com/{UPSTREAM}, commit "
                        f"{COMMIT}; converted and rigged by headcast. Its licence:\n\n{s.licence.strip()}\n"),
        "source": f"https://github.com/{UPSTREAM}",
        "source_commit": COMMIT,
        "source_vertex_ranges": [list(r) for r in KEEP],
        "units": "m",
        "shape_prior": "beta ~ N(0, 1), one unit = one standard deviation",
        "expression_names": list(s.expression_names),
        "expr_range": [0, 1],
        "uv_layout": {"face": [0, 0.5, 0.5, 1], "back_of_head_and_eye_sockets": [0.5, 0.5, 1, 1],
                      "left_eyeball": [0, 0, 0.5, 0.5], "right_eyeball": [0.5, 0, 1, 0.5]},
        "rig": rig.info,
    }
    model = HeadModel(
        v_template=v, faces=faces,
        shapedirs=shape.transpose(1, 2, 0), exprdirs=expr.transpose(1, 2, 0),
        posedirs=np.zeros((V, 3, 36), np.float32), j_regressor=rig.j_regressor,
        parents=np.array([-1, 0, 1, 1, 1]), lbs_weights=rig.lbs_weights,
        uv=uv, uv_faces=uv_faces, lmk_faces=lmk_faces, lmk_bary=lmk_bary,
        dyn_lmk_faces=dyn_faces, dyn_lmk_bary=dyn_bary, masks=masks, meta=meta)
    eye_mm = np.linalg.norm(rig.joints[3] - rig.joints[4]) * 1e3
    jaw_deg = np.rad2deg(rig.info["jaw_open_angle_rad"])
    progress(f"ICT-FaceKit: built model 'ict' ({V} vertices, {len(faces)} triangles, {n_shape} identity and "
             f"{len(s.expression_names)} expression components; jawOpen = {jaw_deg:.1f} deg, eyes "
             f"{eye_mm:.1f} mm apart) in {time.perf_counter() - t0:.1f} s (reading {t_read:.1f} s)")
    return model
