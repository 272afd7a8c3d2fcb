"""A mouth interior for a head model that has none (FLAME): a cavity and a teeth proxy fitted to the
lip ring, the mesh's boundary loop between the inner lips.

Cavity: rings behind the lip ring, each ring vertex an affine combination ``a * r_i + (1 - a) * c``
of its lip-ring vertex r_i and the ring's centroid c, plus a fixed offset (back along -z, and apart
in y so the cavity is taller than the lip slit), closed by a fan at the back. Its blendshapes and
skinning weights are the same combinations of the ring's, so the cavity opens with the lips and the
jaw and follows identity. Teeth: two arched strips (upper on the neck joint, lower on the jaw joint,
each weight 1) just behind the ring, with a gum row; they move with identity by the ring's mean
shape offset and have no expression offsets. Metres, model frame (y up, face along +z).
"""

from __future__ import annotations

import logging

import numpy as np

from headcast.model.interior import CAVITY_RGB, GUMS_RGB, TEETH_RGB, Interior, concat, depth_shade
from headcast.model.mesh_geometry import boundary_loops, loop_order

logger = logging.getLogger(__name__)

# rings behind the lip ring: (weight a of the ring vertex, back along -z m, spread in y m)
RINGS = ((1.0, 0.004, 0.003), (0.92, 0.012, 0.008), (0.75, 0.026, 0.011), (0.45, 0.042, 0.009))
BACK = 0.05  # m: the fan's centre behind the ring
TONGUE = (0.42, 0.15, 0.15)
TEETH_GAP = 0.0035  # m: the teeth's front behind the lip ring's front
TEETH_HEIGHT = (0.0015, 0.0085, 0.011)  # m from the lip line: the edge, the gum line, the gum's top
N_ARCH = 21  # samples across the tooth arch
MAX_RING_DISTANCE = 0.03  # m: the lip ring's centroid from the inner-lip landmarks (FLAME: ~2 cm behind)

_CACHE: dict[int, tuple] = {}


def lip_ring(model) -> np.ndarray | None:
    """The mouth opening's boundary loop (ordered vertex ids) of ``model``, or None if it has none."""
    v = model.v_template.astype(np.float64)
    lips = model.landmark_vertices()[[62, 66]].mean(0)
    loops = boundary_loops(model.faces, len(v))
    if not loops:
        return None
    loop = min(loops, key=lambda b: np.linalg.norm(v[b].mean(0) - lips))
    if np.linalg.norm(v[loop].mean(0) - lips) > MAX_RING_DISTANCE:
        return None
    return loop_order(model.faces, loop)


def _combine(model, ring: np.ndarray, a: np.ndarray) -> dict:
    """Per-vertex data of points a * r_i + (1 - a) * centroid (a: (R, n) weights for the n ring vertices)."""
    n = len(ring)
    A = a[..., None] * np.eye(n) + (1 - a)[..., None] / n  # (R, n, n): combination of ring vertices
    A = A.reshape(-1, n)
    return {"v_template": A @ model.v_template[ring].astype(np.float64),
            "shapedirs": np.einsum("pn,nck->pck", A, model.shapedirs[ring]),
            "exprdirs": np.einsum("pn,nck->pck", A, model.exprdirs[ring]),
            "lbs_weights": A @ model.lbs_weights[ring].astype(np.float64)}


def build_cavity(model, ring: np.ndarray) -> dict:
    """The cavity piece (see the module docstring) behind the ordered lip ring."""
    n = len(ring)
    v_ring = model.v_template[ring].astype(np.float64)
    c = v_ring.mean(0)
    a = np.array([[r[0]] * n for r in RINGS] + [[0.0] * n])
    p = _combine(model, ring, a)
    up = np.sign(v_ring[:, 1] - c[1])
    offset = np.concatenate([np.stack([np.zeros(n), s * up, -np.full(n, b)], 1) for _, b, s in RINGS]
                            + [np.tile([0.0, 0.0, -BACK], (n, 1))])
    p["v_template"] = p["v_template"] + offset
    p = {k: x[: len(RINGS) * n + 1] for k, x in p.items()}  # the last ring collapses to one centre point
    i = np.arange(n)
    faces = [np.stack([k * n + i, k * n + (i + 1) % n, (k + 1) * n + (i + 1) % n], 1) for k in range(len(RINGS) - 1)]
    faces += [np.stack([k * n + i, (k + 1) * n + (i + 1) % n, (k + 1) * n + i], 1) for k in range(len(RINGS) - 1)]
    tip = len(RINGS) * n
    faces.append(np.stack([(len(RINGS) - 1) * n + i, (len(RINGS) - 1) * n + (i + 1) % n, np.full(n, tip)], 1))
    v = p["v_template"]
    lower = np.r_[np.tile(up < 0, len(RINGS)), False] & (np.arange(len(v)) >= n)
    colors = depth_shade(v, CAVITY_RGB, c[2], BACK, 0.35)
    colors[lower] = depth_shade(v[lower], TONGUE, c[2], BACK, 0.4)
    p.update(faces=np.concatenate(faces), colors=colors)
    return p


def build_teeth(model, ring: np.ndarray, upper: bool) -> dict:
    """One arched strip of teeth with a gum row behind the ordered lip ring: upper on the neck joint
    (1), lower on the jaw joint (2)."""
    v_ring = model.v_template[ring].astype(np.float64)
    c = v_ring.mean(0)
    half = 0.5 * (v_ring[:, 0].max() - v_ring[:, 0].min()) * 0.85
    x = np.linspace(-half, half, N_ARCH)
    z = v_ring[:, 2].max() - TEETH_GAP - 0.016 * (x / half) ** 2  # the arch curves back to the molars
    sign = 1.0 if upper else -1.0
    rows = [c[1] + sign * h for h in TEETH_HEIGHT]
    v = np.array([[xi, y, zi] for y in rows for xi, zi in zip(x, z)])
    i = np.arange(N_ARCH - 1)
    faces = np.concatenate([np.stack([r * N_ARCH + i, r * N_ARCH + i + 1, (r + 1) * N_ARCH + i + 1], 1)
                            for r in range(len(rows) - 1)]
                           + [np.stack([r * N_ARCH + i, (r + 1) * N_ARCH + i + 1, (r + 1) * N_ARCH + i], 1)
                              for r in range(len(rows) - 1)])
    P, J = len(v), model.n_joints
    W = np.zeros((P, J))
    W[:, 1 if upper else 2] = 1.0
    colors = np.concatenate([depth_shade(v[: 2 * N_ARCH], TEETH_RGB, z.max(), 0.03, 0.55),
                             depth_shade(v[2 * N_ARCH:], GUMS_RGB, z.max(), 0.03, 0.5)])
    return {"v_template": v, "faces": faces, "lbs_weights": W, "colors": colors,
            "shapedirs": np.broadcast_to(model.shapedirs[ring].mean(0), (P, 3, model.n_shape)),
            "exprdirs": np.zeros((P, 3, model.n_expr))}


def build_proxy_interior(model) -> Interior | None:
    """Cavity, upper and lower teeth fitted to ``model``'s lip ring; None when it has no lip ring."""
    ring = lip_ring(model)
    if ring is None:
        logger.info("model %r has no mouth opening: no interior", model.name)
        return None
    return concat([("cavity", build_cavity(model, ring)), ("upper_teeth", build_teeth(model, ring, True)),
                   ("lower_teeth", build_teeth(model, ring, False))])


def interior_of(model) -> Interior | None:
    """``model``'s own interior, else the proxy fitted to its lip ring (built once per model object)."""
    if model.interior is not None:
        return model.interior
    hit = _CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    if len(_CACHE) >= 4:
        _CACHE.pop(next(iter(_CACHE)))
    interior = build_proxy_interior(model)
    _CACHE[id(model)] = (model, interior)
    return interior
