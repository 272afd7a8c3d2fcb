"""ICT-FaceKit's files: the pinned download, a local copy, and reading its meshes.

Source: the public repository ``ICT-VGL/ICT-FaceKit`` (MIT licence) at commit ``da5f95a``, folder
``FaceXModel/``: a neutral mesh, 100 identity modes (one standard deviation each) and 53
ARKit-style expressions (weights in [0, 1]), all on one topology in centimetres with y up, the face
towards +z and +x on the subject's left, as FLAME. The meshes are ``.obj`` or ``.obj.xz`` files;
``vertex_indices.json`` names the expressions and the 68 landmark vertices. The vertex ranges below
(0-based, inclusive) split upstream's single vertex list into its parts.
"""

from __future__ import annotations

import logging
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

from headcast.core import paths
from headcast.core.errors import HeadcastError
from headcast.core.files import read_json
from headcast.io.mesh import read_obj, read_obj_vertices
from headcast.model.ict_version import COMMIT

logger = logging.getLogger(__name__)

UPSTREAM = "ICT-VGL/ICT-FaceKit"
DOWNLOAD_URL = f"https://codeload.github.com/{UPSTREAM}/tar.gz/{COMMIT}"
ENV_SRC = "HEADCAST_ICT_SRC"
N_SOURCE_VERTICES = 26719

# Upstream vertex ranges, 0-based and inclusive.
FACE = (0, 9408)
FACE_NARROW = (0, 6705)
HEAD_NECK = (9409, 11247)
EYE_SOCKET_L = (13294, 13677)
EYE_SOCKET_R = (13678, 14061)
MOUTH_SOCKET = (11248, 13293)
GUMS_TONGUE = (14062, 17038)
TEETH = (17039, 21450)
EYEBALL_L = (21451, 23020)
EYEBALL_R = (23021, 24590)


def span(r: tuple[int, int]) -> np.ndarray:
    """The vertex indices of an inclusive range."""
    return np.arange(r[0], r[1] + 1)


def find_source(src: str | Path | None = None, *, url: str | None = None, timeout: float = 30.0) -> Path:
    """The ICT-FaceKit folder (the one holding ``FaceXModel/``).

    ``src`` may name the repository folder or its ``FaceXModel`` folder; ``None`` uses
    ``$HEADCAST_ICT_SRC`` and otherwise downloads the pinned commit once (cached in
    ``paths.home()/src/ict-facekit``).
    """
    origin = ""
    if src is None and os.environ.get(ENV_SRC):
        src, origin = os.environ[ENV_SRC], f" (from {ENV_SRC})"
    if src is None:
        return download_source(url or DOWNLOAD_URL, timeout=timeout)
    root = Path(src).expanduser()
    if root.name == "FaceXModel" and not (root / "FaceXModel").is_dir():
        root = root.parent
    if not root.is_dir():
        raise HeadcastError(f"ICT-FaceKit folder {root}{origin} does not exist")
    if not any((root / "FaceXModel" / f"generic_neutral_mesh{s}").is_file() for s in (".obj", ".obj.xz")):
        raise HeadcastError(f"{root}{origin} is not an ICT-FaceKit folder "
                            "(no FaceXModel/generic_neutral_mesh.obj or .obj.xz)")
    return root


def download_source(url: str = DOWNLOAD_URL, *, timeout: float = 30.0) -> Path:
    """Download the repository archive and keep its LICENSE and FaceXModel/; returns that folder."""
    dest = paths.home() / "src" / "ict-facekit"
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("ICT-FaceKit: downloading %s ...", url)
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            archive = Path(tmp) / "src.tar.gz"
            _fetch(url, archive, timeout)
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
    logger.info("ICT-FaceKit: unpacked %d files into %s", n, dest)
    return dest


def _fetch(url: str, out: Path, timeout: float) -> None:
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
                logger.info(f"  {got / 1e6:.0f}{of} MB ({rate:.1f} MB/s)")
    logger.info(f"  downloaded {got / 1e6:.1f} MB")


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


def read_source(root: Path, n_shape: int = 100) -> IctSource:
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
        index = read_json(index_file, "ICT-FaceKit index")
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
    logger.info("ICT-FaceKit: reading %d meshes from %s ...", len(files) + 1, folder)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:  # lzma releases the GIL
        meshes = list(ex.map(_vertices, files))
    for f, v in zip(files, meshes):
        if v.shape != (N, 3):
            raise HeadcastError(f"{f} has {len(v)} vertices, the neutral mesh {N}: not the same topology")
    offsets = np.stack(meshes) - mesh.vertices  # (S + E, N, 3)
    logger.info("ICT-FaceKit: read %d meshes in %.1f s", len(files) + 1, time.perf_counter() - t0)
    return IctSource(root=root, vertices=mesh.vertices, faces=mesh.faces, uv=mesh.uv, uv_faces=mesh.uv_faces,
                     face_material=mesh.face_material, material_names=mesh.material_names,
                     identity=offsets[:n_shape], expressions=offsets[n_shape:], expression_names=names,
                     landmarks=landmarks, licence=lic.read_text())
