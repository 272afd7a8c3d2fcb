"""The mouth interior of a head model: render-only parts (mouth cavity, gums, tongue, teeth).

The parts are a second mesh rigged like the head (same joints, identity and expression components) but
never fitted: reconstruction, L3D and landmarks see only the head's own vertices. Shapes use P interior
vertices, Fi triangles and the head's S, E and J. Part names and per-vertex colours are render data:
the cavity is dark and darker the deeper it lies, so an open mouth reads as a softly shaded hole.

The ICT-FaceKit conversion keeps upstream's mouth socket, gums and tongue and teeth
(:func:`headcast.model.ict.build_ict_model`); a FLAME-format model without one gets a cavity and a
teeth proxy fitted to its lip ring (:func:`headcast.model.cavity.interior_of`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.io.model_npz import INTERIOR

PREFIX = "interior_"
ARRAYS = tuple(k[len(PREFIX):] for k in INTERIOR)  # stored as interior_<name> in the model file
CAVITY_RGB, GUMS_RGB, TEETH_RGB = (0.16, 0.055, 0.05), (0.62, 0.3, 0.3), (0.9, 0.87, 0.8)  # linear RGB in [0, 1]


@dataclass
class Interior:
    """Render-only parts rigged like the head.

    Attributes:
        v_template: (P, 3) float32 rest vertices, metres (model frame).
        faces: (Fi, 3) int32 triangles into ``v_template``.
        shapedirs: (P, 3, S) and exprdirs (P, 3, E) float32 blendshapes, the head's components.
        lbs_weights: (P, J) float32 skinning weights on the head's joints, rows sum to 1.
        colors: (P, 3) float32 base colour in [0, 1].
        part: (P,) int32 index into ``names`` of each vertex's part.
        names: part names, e.g. ("socket", "gums_tongue", "teeth").
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    lbs_weights: np.ndarray
    colors: np.ndarray
    part: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        for k in ("v_template", "shapedirs", "exprdirs", "lbs_weights", "colors"):
            setattr(self, k, np.ascontiguousarray(getattr(self, k), dtype=np.float32))
        for k in ("faces", "part"):
            setattr(self, k, np.ascontiguousarray(getattr(self, k), dtype=np.int32))
        self.names = tuple(str(n) for n in self.names)

    @property
    def n_vertices(self) -> int:
        return len(self.v_template)

    def check(self, n_shape: int, n_expr: int, n_joints: int) -> str | None:
        """The first inconsistency with a head of S, E, J components as a phrase, or None."""
        P = self.n_vertices
        checks = [
            (self.v_template.ndim == 2 and self.v_template.shape[1] == 3 and P > 0, "v_template must be (P, 3)"),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3 and len(self.faces) > 0, "faces must be (Fi, 3)"),
            (self.faces.size == 0 or (self.faces.min() >= 0 and self.faces.max() < P), "faces index missing vertices"),
            (self.shapedirs.shape == (P, 3, n_shape), f"shapedirs must be (P, 3, {n_shape})"),
            (self.exprdirs.shape == (P, 3, n_expr), f"exprdirs must be (P, 3, {n_expr})"),
            (self.lbs_weights.shape == (P, n_joints), f"lbs_weights must be (P, {n_joints})"),
            (self.colors.shape == (P, 3), "colors must be (P, 3)"),
            (self.part.shape == (P,) and (P == 0 or 0 <= self.part.min() <= self.part.max() < len(self.names)),
             "part must index names"),
        ]
        for ok, what in checks:
            if not ok:
                return f"interior {what}"
        if not np.allclose(self.lbs_weights.sum(1), 1.0, atol=1e-3):
            return "interior lbs_weights rows must sum to 1"
        if not all(np.isfinite(getattr(self, k)).all() for k in ("v_template", "shapedirs", "exprdirs", "colors")):
            return "interior arrays have non-finite values"
        return None

    def part_vertices(self, name: str) -> np.ndarray:
        """Indices (K,) of the vertices of the part ``name``."""
        if name not in self.names:
            raise HeadcastError(f"the interior has no part {name!r} (parts: {', '.join(self.names)})")
        return np.flatnonzero(self.part == self.names.index(name))

    def part_faces(self, k: int) -> np.ndarray:
        """The triangles (n, 3) of part number ``k`` (by their first corner)."""
        return self.faces[self.part[self.faces[:, 0]] == k]


def to_arrays(interior: Interior) -> dict[str, np.ndarray]:
    """The interior's arrays named as in the model file (``interior_<name>``)."""
    return {PREFIX + k: getattr(interior, k) for k in ARRAYS}


def from_arrays(arrays: dict[str, np.ndarray], names) -> Interior | None:
    """The interior stored in a model file's arrays, or None when it has none."""
    if PREFIX + "v_template" not in arrays:
        return None
    return Interior(names=tuple(names or ()), **{k: arrays[PREFIX + k] for k in ARRAYS})


def depth_shade(v: np.ndarray, base, front_z: float, depth: float, floor: float = 0.3) -> np.ndarray:
    """Per-vertex colours (P, 3): ``base`` at ``front_z`` (model z, metres) fading linearly to
    ``floor * base`` at ``depth`` metres behind it, so the back of the mouth is darker."""
    k = np.clip((front_z - v[:, 2]) / depth, 0.0, 1.0)
    return np.asarray(base, np.float64)[None] * (1.0 - (1.0 - floor) * k)[:, None]


def concat(parts: list[tuple[str, dict]]) -> Interior:
    """One interior from named pieces, each a dict of the :data:`ARRAYS` (``part`` omitted)."""
    offset, faces, stacks = 0, [], {k: [] for k in ARRAYS if k not in ("faces", "part")}
    labels = []
    for i, (_, p) in enumerate(parts):
        faces.append(np.asarray(p["faces"]) + offset)
        for k in stacks:
            stacks[k].append(np.asarray(p[k]))
        labels.append(np.full(len(p["v_template"]), i))
        offset += len(p["v_template"])
    return Interior(faces=np.concatenate(faces), part=np.concatenate(labels), names=tuple(n for n, _ in parts),
                    **{k: np.concatenate(v) for k, v in stacks.items()})


def decimate(v: np.ndarray, faces: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lighter copy of a mesh (V, 3) / (F, 3) with about ``keep`` of its triangles (Open3D's quadric
    decimation, deterministic): vertices (V', 3), faces (F', 3) and, for each new vertex, the index of
    the nearest original vertex (whose blendshapes and weights it takes)."""
    import open3d as o3d
    from scipy.spatial import cKDTree

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(v, np.float64)),
                                     o3d.utility.Vector3iVector(np.asarray(faces, np.int32)))
    light = mesh.simplify_quadric_decimation(max(4, int(len(faces) * keep)))
    light.remove_unreferenced_vertices()
    nv, nf = np.asarray(light.vertices), np.asarray(light.triangles)
    return nv, nf, cKDTree(v).query(nv)[1]
