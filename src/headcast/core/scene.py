"""One triangle-mesh scene for ray casting and exact closest points (Open3D, Embree, CPU)."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np

from headcast.core import threads

_LOADING = threading.Lock()  # the import system's module locks do not cover a hand-made load


@functools.cache
def open3d_native():
    """Open3D's compiled module ``open3d.pybind`` (``core`` tensors, ``t.geometry`` ray casting).

    Loaded from its file without running ``open3d/__init__.py``, which also imports Open3D's plotly/dash
    web viewer (0.8 s of a 1.6 s import) that headcast never uses. It is registered under its own name,
    so a later ``import open3d`` (elsewhere in the process) reuses it instead of loading it twice.
    """
    with _LOADING:
        module = sys.modules.get("open3d.pybind") or _load_open3d_native()
    module.utility.set_max_threads(threads.apply().count)  # TBB: not bound by the OpenMP variables
    return module


def _load_open3d_native():
    spec = importlib.util.find_spec("open3d")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Open3D is not installed (run the set-up)")
    root = Path(spec.submodule_search_locations[0])
    path = next((root / f"pybind{s}" for s in importlib.machinery.EXTENSION_SUFFIXES
                 if (root / f"pybind{s}").is_file()), None)
    if path is None:  # a layout this loader does not know: the ordinary import
        import open3d

        return open3d.pybind
    native_spec = importlib.util.spec_from_file_location("open3d.pybind", path)
    module = importlib.util.module_from_spec(native_spec)
    sys.modules["open3d.pybind"] = module
    try:
        native_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["open3d.pybind"]
        raise
    return module


def _bary(uv: np.ndarray) -> np.ndarray:
    """Open3D's primitive (u, v) -> barycentric corner weights (..., 3) float64."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([1.0 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], axis=-1)


class MeshScene:
    """Triangle meshes (metres) to cast rays at and to query closest surface points on.

    Meshes are numbered in the order they are added (their ``mesh_id``).
    """

    def __init__(self, meshes: list[tuple[np.ndarray, np.ndarray]] = ()):
        o3d = open3d_native()  # heavy: loaded only when a scene is built

        self._o3d = o3d
        self._scene = o3d.t.geometry.RaycastingScene()
        self.n_meshes = 0
        for vertices, faces in meshes:
            self.add(vertices, faces)

    def add(self, vertices: np.ndarray, faces: np.ndarray) -> int:
        """Add a mesh: vertices (V, 3), faces (F, 3) counter-clockwise; returns its mesh id."""
        t = self._o3d.core.Tensor
        gid = self._scene.add_triangles(t(np.ascontiguousarray(vertices, dtype=np.float32)),
                                        t(np.ascontiguousarray(faces, dtype=np.uint32)))
        self.n_meshes += 1
        return int(gid)

    def cast(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        """Cast rays (..., 6) = origin, direction. Returns ``t`` (...) ray parameter (inf = miss),
        ``mesh_id`` (...) int64 (-1 = miss), ``tri`` (...) int64 (-1 = miss), ``bary`` (..., 3) float64 and
        ``normal`` (..., 3) float32 unit geometric normals (as wound, not turned to the ray)."""
        ans = self._scene.cast_rays(self._o3d.core.Tensor(np.ascontiguousarray(rays, dtype=np.float32)))
        t = ans["t_hit"].numpy()
        hit = np.isfinite(t)
        return {"t": t,
                "mesh_id": np.where(hit, ans["geometry_ids"].numpy().astype(np.int64), -1),
                "tri": np.where(hit, ans["primitive_ids"].numpy().astype(np.int64), -1),
                "bary": _bary(ans["primitive_uvs"].numpy()),
                "normal": ans["primitive_normals"].numpy().astype(np.float32)}

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact closest surface points of query points (N, 3): triangle (N,) int64, barycentric
        weights (N, 3), the closest points (N, 3) and their distances (N,), metres."""
        q = np.ascontiguousarray(points, dtype=np.float32)
        ans = self._scene.compute_closest_points(self._o3d.core.Tensor(q))
        tri = ans["primitive_ids"].numpy().astype(np.int64)
        near = ans["points"].numpy().astype(np.float64)
        dist = np.linalg.norm(near - np.asarray(points, dtype=np.float64), axis=1)
        return tri, _bary(ans["primitive_uvs"].numpy()), near, dist


def closest_points_on_mesh(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point (N, 3) the nearest point on one mesh (vertices (V, 3), faces (F, 3)), metres.

    Returns triangle index (N,) int64, barycentric coordinates (N, 3) of the closest point in that
    triangle, and the exact point-to-triangle distance (N,).
    """
    tri, bary, _, dist = MeshScene([(vertices, faces)]).closest(points)
    return tri, bary, dist
