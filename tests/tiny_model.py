"""A small FLAME-topology HeadModel for tests that need a real head shape.

Geometry, UVs, region masks and the 68-point landmark embedding are the real FLAME assets read in
place from ``../shared/models/flame-assets`` (never copied); the identity and expression bases are
random smooth displacement fields and the rig is a simple one built from the geometry.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from headcast.core.geometry import vertex_normals
from headcast.io.mesh import read_obj
from headcast.model.head_model import HeadModel
from headcast.synth.appearance import smooth_field

FLAME_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "flame-assets"


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other class."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def flame_template_model(seed: int = 0, n_shape: int = 10, n_expr: int = 6) -> HeadModel:
    """The FLAME mean head (centred, metres) with random smooth bases and a simple 5-joint rig."""
    rng = np.random.default_rng(seed)
    mesh = read_obj(FLAME_ASSETS / "head_template.obj")
    with open(FLAME_ASSETS / "FLAME_masks.pkl", "rb") as fh:
        fm = {k: np.asarray(v, dtype=np.int64) for k, v in _NumpyOnly(fh, encoding="latin1").load().items()}
    emb = np.load(FLAME_ASSETS / "landmark_embedding.npy", allow_pickle=True, encoding="latin1")[()]
    v = mesh.vertices - mesh.vertices[fm["face"]].mean(0)  # DECA's template sits 1.5 m up; centre the face
    f = mesh.faces
    V = len(v)
    n = vertex_normals(v, f)

    shapedirs = np.stack([n * (0.002 * smooth_field(v, rng, (0.05, 0.15), 6))[:, None] for _ in range(n_shape)], axis=-1)
    mouth = v[fm["lips"]].mean(0)
    near_mouth = np.exp(-((v - mouth) ** 2).sum(1) / (2 * 0.02 ** 2))[:, None]
    exprdirs = np.stack([near_mouth * 0.004 * np.stack([smooth_field(v, rng, (0.03, 0.08), 6) for _ in range(3)], 1)
                         for _ in range(n_expr)], axis=-1)

    groups = [fm["boundary"], fm["neck"], np.concatenate([fm["left_ear"], fm["right_ear"]]),
              fm["left_eyeball"], fm["right_eyeball"]]
    jr = np.zeros((5, V))
    for j, idx in enumerate(groups):
        jr[j, idx] = 1.0 / len(idx)
    joints = jr @ v

    w = np.zeros((V, 5))
    root_w = np.clip((joints[0, 1] + 0.03 - v[:, 1]) / 0.03, 0, 1)  # the lowest 3 cm of the neck
    jaw_w = (np.clip((mouth[1] + 0.004 - v[:, 1]) / 0.012, 0, 1)
             * np.clip((v[:, 2] - joints[2, 2] - 0.02) / 0.03, 0, 1) * (1 - root_w))
    w[:, 0], w[:, 2] = root_w, jaw_w
    w[:, 1] = 1 - root_w - jaw_w
    for j, eye in ((3, fm["left_eyeball"]), (4, fm["right_eyeball"])):
        w[eye] = 0
        w[eye, j] = 1

    full_f = np.asarray(emb["full_lmk_faces_idx"]).reshape(68)
    full_b = np.asarray(emb["full_lmk_bary_coords"]).reshape(68, 3)
    return HeadModel(
        v_template=v, faces=f, shapedirs=shapedirs, exprdirs=exprdirs, posedirs=np.zeros((V, 3, 36)),
        j_regressor=jr, parents=np.array([-1, 0, 1, 1, 1]), lbs_weights=w, uv=mesh.uv,
        uv_faces=mesh.uv_faces, lmk_faces=full_f, lmk_bary=full_b,
        dyn_lmk_faces=np.asarray(emb["dynamic_lmk_faces_idx"]),
        dyn_lmk_bary=np.asarray(emb["dynamic_lmk_bary_coords"]),
        masks={"face": fm["face"], "eyes": np.concatenate([fm["left_eyeball"], fm["right_eyeball"]]),
               "lips": fm["lips"], "scalp": fm["scalp"], "neck": fm["neck"]},
        meta={"name": "flame-template-test", "version": "test", "licence": "test fixture (FLAME assets, tests only)"},
    )
