"""The head-model data: FLAME's structure as plain numpy arrays, saved as one versioned .npz.

Every model headcast uses (official FLAME, the ICT-FaceKit conversion, test
fixtures) is a :class:`HeadModel`. Shapes use V vertices, F triangles,
T texture coordinates, S identity and E expression components and J = 5 joints
(0 root/global, 1 neck, 2 jaw, 3 left eye, 4 right eye). Lengths are metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.io.model_npz import ARRAYS, MASK_PREFIX, OPTIONAL, read_model_npz, write_model_npz
from headcast.io.outputs import staged_file
from headcast.model.interior import Interior, from_arrays, to_arrays

JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
N_LANDMARKS = 68
N_CONTOUR = 17  # iBUG-68 points 0..16, the face oval
DYN_YAW_MAX_DEG = 39  # dynamic contour tables cover yaw -39..39 degrees in 1-degree steps
REQUIRED_MASKS = ("face", "eyes", "lips", "scalp", "neck")


@dataclass
class HeadModel:
    """A FLAME-format parametric head.

    Attributes:
        v_template: (V, 3) float32 mean head, metres; y up, face looking along +z.
        faces: (F, 3) int32 triangles.
        shapedirs: (V, 3, S) float32 identity basis (beta), metres per unit.
        exprdirs: (V, 3, E) float32 expression basis (psi), metres per unit.
        posedirs: (V, 3, 9 * (J - 1)) float32 pose correctives, driven by (R - I) of joints 1..J-1.
        j_regressor: (J, V) float32 joint locations as weighted sums of shaped vertices.
        parents: (J,) int32 kinematic tree; parents[0] == -1.
        lbs_weights: (V, J) float32 skinning weights, rows sum to 1.
        uv: (T, 2) float32 texture coordinates in [0, 1], origin bottom-left (OBJ convention); None for a
            model without texture coordinates (FLAME imported without its head_template.obj).
        uv_faces: (F, 3) int32 indices into ``uv`` per triangle corner; None with ``uv``.
        lmk_faces: (68,) int32 triangle of each iBUG-68 landmark (static embedding).
        lmk_bary: (68, 3) float32 barycentric coordinates of each landmark in its triangle.
        dyn_lmk_faces: optional (79, 17) int32 contour triangles by yaw, row i is yaw i - 39 degrees.
        dyn_lmk_bary: optional (79, 17, 3) float32 matching barycentric coordinates.
        masks: region name -> int32 vertex indices (at least face, eyes, lips, scalp, neck).
        meta: name, version, licence, attribution, units and anything else JSON-serialisable.
        interior: optional render-only mouth interior (:class:`headcast.model.interior.Interior`), never
            fitted; its part names are kept in ``meta["interior_parts"]``.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    uv: np.ndarray | None
    uv_faces: np.ndarray | None
    lmk_faces: np.ndarray
    lmk_bary: np.ndarray
    masks: dict[str, np.ndarray]
    meta: dict
    dyn_lmk_faces: np.ndarray | None = None
    dyn_lmk_bary: np.ndarray | None = None
    interior: Interior | None = None

    def __post_init__(self) -> None:
        f32 = ("v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "lbs_weights",
               "uv", "lmk_bary", "dyn_lmk_bary")
        for name in f32:
            a = getattr(self, name)
            if a is not None:
                setattr(self, name, np.ascontiguousarray(a, dtype=np.float32))
        for name in ("faces", "parents", "uv_faces", "lmk_faces", "dyn_lmk_faces"):
            a = getattr(self, name)
            if a is not None:
                setattr(self, name, np.ascontiguousarray(a, dtype=np.int32))
        self.masks = {k: np.asarray(v, dtype=np.int32) for k, v in self.masks.items()}
        self.meta = dict(self.meta)
        self.meta.setdefault("units", "m")
        self.meta.setdefault("joint_names", list(JOINT_NAMES))
        if self.interior is not None:
            self.meta["interior_parts"] = list(self.interior.names)
        self.validate()

    # sizes -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.meta.get("name", "unnamed"))

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def has_dynamic_contour(self) -> bool:
        return self.dyn_lmk_faces is not None

    @property
    def has_uv(self) -> bool:
        return self.uv is not None

    def require_uv(self, what: str) -> None:
        """HeadcastError (one line saying how to add them) when the model has no texture coordinates."""
        if self.uv is None:
            raise HeadcastError(f"{what} needs texture coordinates and model {self.name!r} has none: add them with "
                                f"'headcast model add-uv {self.name} head_template.obj' (or pass --template-obj "
                                f"to 'headcast model import-flame')")

    def validate(self) -> None:
        """Check shapes and index ranges; raise HeadcastError naming the first problem."""
        V, F, J = self.n_vertices, self.faces.shape[0], self.n_joints

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise HeadcastError(f"head model {self.name!r}: {what}")

        need(self.v_template.ndim == 2 and self.v_template.shape[1] == 3 and V > 0, "v_template must be (V, 3)")
        need(self.faces.ndim == 2 and self.faces.shape[1] == 3 and F > 0, "faces must be (F, 3) triangles")
        need(self.faces.min() >= 0 and self.faces.max() < V, "faces index missing vertices")
        need(self.shapedirs.ndim == 3 and self.shapedirs.shape[:2] == (V, 3), "shapedirs must be (V, 3, S)")
        need(self.exprdirs.ndim == 3 and self.exprdirs.shape[:2] == (V, 3), "exprdirs must be (V, 3, E)")
        need(self.posedirs.shape == (V, 3, 9 * (J - 1)), "posedirs must be (V, 3, 9 * (J - 1))")
        need(self.j_regressor.shape == (J, V), "j_regressor must be (J, V)")
        need(self.parents[0] == -1 and all(0 <= p < i for i, p in enumerate(self.parents[1:], 1)),
             "parents must be a tree rooted at joint 0 with parents before children")
        need(self.lbs_weights.shape == (V, J), "lbs_weights must be (V, J)")
        need(np.allclose(self.lbs_weights.sum(1), 1.0, atol=1e-3), "lbs_weights rows must sum to 1")
        need((self.uv is None) == (self.uv_faces is None), "uv and uv_faces come together")
        if self.uv is not None:
            need(self.uv.ndim == 2 and self.uv.shape[1] == 2, "uv must be (T, 2)")
            need(self.uv_faces.shape == (F, 3), "uv_faces must match faces")
            need(self.uv_faces.min() >= 0 and self.uv_faces.max() < len(self.uv), "uv_faces index missing uvs")
        need(self.lmk_faces.shape == (N_LANDMARKS,) and self.lmk_bary.shape == (N_LANDMARKS, 3),
             "the landmark embedding must have 68 points")
        need(self.lmk_faces.min() >= 0 and self.lmk_faces.max() < F, "lmk_faces index missing triangles")
        rows = 2 * DYN_YAW_MAX_DEG + 1
        if self.dyn_lmk_faces is not None or self.dyn_lmk_bary is not None:
            need(self.dyn_lmk_faces is not None and self.dyn_lmk_bary is not None,
                 "dynamic contour needs both faces and barycentric coordinates")
            need(self.dyn_lmk_faces.shape == (rows, N_CONTOUR)
                 and self.dyn_lmk_bary.shape == (rows, N_CONTOUR, 3),
                 f"dynamic contour must be ({rows}, {N_CONTOUR}) faces")
            need(self.dyn_lmk_faces.min() >= 0 and self.dyn_lmk_faces.max() < F,
                 "dyn_lmk_faces index missing triangles")
        for name in ("v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "lbs_weights", "uv",
                     "lmk_bary", "dyn_lmk_bary"):
            a = getattr(self, name)
            need(a is None or bool(np.isfinite(a).all()), f"{name} has non-finite values")
        if self.interior is not None:
            problem = self.interior.check(self.n_shape, self.n_expr, J)
            need(problem is None, str(problem))
        for m in REQUIRED_MASKS:
            need(m in self.masks, f"region mask {m!r} is missing")
        for k, idx in self.masks.items():
            need(idx.ndim == 1 and (idx.size == 0 or (idx.min() >= 0 and idx.max() < V)),
                 f"mask {k!r} indexes missing vertices")

    def region_triangles(self, region: str) -> np.ndarray:
        """(F,) bool: the triangles whose three corners all lie in the mask ``region`` (e.g. ``"face"``)."""
        return np.isin(self.faces, self.masks[region]).all(1)

    def landmark_vertices(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """The 68 static landmarks (68, 3) of ``vertices`` (default: the template), metres."""
        v = self.v_template if vertices is None else vertices
        tri = v[self.faces[self.lmk_faces]]  # (68, 3, 3)
        return np.einsum("lk,lkc->lc", self.lmk_bary, tri)


def save_model(model: HeadModel, path: str | Path, force: bool = False) -> Path:
    """Write ``model`` to ``path`` (.npz, :mod:`headcast.io.model_npz`) whole or not at all
    (:func:`headcast.io.outputs.staged_file`; an existing file is replaced only with ``force``); returns the path."""
    arrays = {k: getattr(model, k) for k in ARRAYS}
    arrays.update({k: getattr(model, k) for k in OPTIONAL if getattr(model, k) is not None})
    arrays.update({f"{MASK_PREFIX}{k}": v for k, v in model.masks.items()})
    if model.interior is not None:
        arrays.update(to_arrays(model.interior))
    with staged_file(path, force=force) as tmp:
        write_model_npz(tmp, arrays, model.meta)
    return Path(path)


def load_model(path: str | Path) -> HeadModel:
    """Read a model written by :func:`save_model`; HeadcastError naming the file on anything else."""
    arrays, meta = read_model_npz(path)
    masks = {k[len(MASK_PREFIX):]: v for k, v in arrays.items() if k.startswith(MASK_PREFIX)}
    fields = {k: arrays.get(k) for k in (*ARRAYS, *OPTIONAL)}
    try:
        interior = from_arrays(arrays, meta.get("interior_parts"))
        return HeadModel(masks=masks, meta=meta, interior=interior, **fields)
    except HeadcastError as e:
        raise HeadcastError(f"{path}: {e}") from None
