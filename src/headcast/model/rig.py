"""The few model points tracking needs, as closed-form functions of pose and coefficients.

Tracking evaluates only the 68 landmarks (with every contour row of the dynamic embedding) and
the two pupils. Each is a barycentric mix of three vertices, and linear blend skinning is linear in
the rest vertices, so for the pose the tracker fits (a root rotation R0 plus local rotations of the
jaw and the eyes; the neck is left at rest, so it moves with the root) a point is exactly

    y = a_0 + sum_g [R_g (a_g - c_g J_g) + c_g J_g] - J_0,      x = R0 y + J_0,

where g runs over jaw, left eye, right eye, a_g is the point's rest position weighted by its
skinning weights on joint g (a_0: on the root and neck), c_g the sum of those weights and J_g the
rest joint position. The a_g and J_g are affine in the coefficients z (identity beta and/or
expression psi), so the point and its Jacobian follow from a few small matrix products
(:meth:`PointRig.points`); ``tests/test_animate.py`` checks them against :class:`HeadLayer`.
:mod:`headcast.model.skin` uses the same closed form on whole vertices for the RGB-D fit.
Model frame, metres.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from headcast.core.params import JOINT_NAMES
from headcast.model.eyes import gaze_directions
from headcast.model.head_model import DYN_YAW_MAX_DEG, N_CONTOUR, HeadModel

ROOT, NECK, JAW, LEFT_EYE, RIGHT_EYE = (JOINT_NAMES.index(j) for j in ("root", "neck", "jaw", "left_eye", "right_eye"))
GROUP_JOINTS = (ROOT, JAW, LEFT_EYE, RIGHT_EYE)  # group 0 also takes the neck's weights
N_ROWS = 2 * DYN_YAW_MAX_DEG + 1


def skew(w: np.ndarray) -> np.ndarray:
    """Cross-product matrices (..., 3, 3) of vectors (..., 3): skew(w) @ v = w x v."""
    z = np.zeros(w.shape[:-1])
    return np.stack([z, -w[..., 2], w[..., 1], w[..., 2], z, -w[..., 0], -w[..., 1], w[..., 0], z],
                    axis=-1).reshape(*w.shape[:-1], 3, 3)


def rotvec_to_matrix(r) -> np.ndarray:
    """Axis-angle (3,) radians -> rotation (3, 3) (Rodrigues)."""
    x, y, z = float(r[0]), float(r[1]), float(r[2])
    a = math.sqrt(x * x + y * y + z * z)
    if a < 1e-12:
        return np.array([[1.0, -z, y], [z, 1.0, -x], [-y, x, 1.0]])
    s, c = math.sin(a) / a, (1 - math.cos(a)) / (a * a)
    return np.array([[1 - c * (y * y + z * z), c * x * y - s * z, c * x * z + s * y],
                     [c * x * y + s * z, 1 - c * (x * x + z * z), c * y * z - s * x],
                     [c * x * z - s * y, c * y * z + s * x, 1 - c * (x * x + y * y)]])


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) -> axis-angle (3,) radians (the log map)."""
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    cos = max(-1.0, min(1.0, (R[0, 0] + R[1, 1] + R[2, 2] - 1) / 2))
    a = math.acos(cos)
    if a < 1e-6:
        return 0.5 * v
    if a > math.pi - 1e-3:  # near a half turn the antisymmetric part vanishes
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(R).as_rotvec()
    return v * (a / (2 * math.sin(a)))


def yaw_degrees(R0: np.ndarray) -> float:
    """Head yaw of a root rotation, as :func:`headcast.model.lbs.head_yaw_degrees` (neck at rest)."""
    return float(np.degrees(np.arctan2(-R0[2, 0], np.hypot(R0[0, 0], R0[1, 0]))))


def mirror_pairs(names: list[str], expr_cols: np.ndarray, offset: int, prefix: str = "mouth") -> np.ndarray:
    """(P, 2) z indices (``offset`` + position in ``expr_cols``) of the expression pairs ``X_L`` / ``X_R``
    whose names start with ``prefix`` (the mouth's: a wink or one raised brow is common, a lopsided mouth
    at rest is the tracker's error more often than the face's)."""
    col = {names[c]: offset + k for k, c in enumerate(expr_cols)} if names else {}
    pairs = [(col[n], col[n[:-2] + "_R"]) for n in col
             if n.startswith(prefix) and n.endswith("_L") and n[:-2] + "_R" in col]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def pupil_vertices(model: HeadModel) -> tuple[int, int] | None:
    """Vertex ids (left eye, right eye) of each eyeball's pupil, or None when the model has no separate
    eyeballs: the eyeball vertex furthest along the eye's rest gaze (:func:`headcast.model.eyes.gaze_directions`)."""
    if model.n_joints < len(JOINT_NAMES) or not {"left_eyeball", "right_eyeball"} <= set(model.masks):
        return None
    v = model.v_template.astype(np.float64)
    out = []
    for (joint, mask), gaze in zip(((LEFT_EYE, "left_eyeball"), (RIGHT_EYE, "right_eyeball")), gaze_directions(model)):
        ids = model.masks[mask]
        if ids.size == 0:
            return None
        centre = model.j_regressor[joint].astype(np.float64) @ v
        out.append(int(ids[np.argmax((v[ids] - centre) @ gaze)]))
    return out[0], out[1]


@dataclass
class PointSet:
    """Embedding of the rig's points: vertex ids (K, 3) and barycentric weights (K, 3).

    Rows: the 51 inner landmarks (iBUG 17..67), then the contour (iBUG 0..16) for every yaw row
    (``N_ROWS`` x 17; one row when the model has a static contour only), then the pupils (left,
    right) when the model has them.
    """

    vids: np.ndarray
    bary: np.ndarray
    n_rows: int
    has_pupils: bool

    @property
    def landmark_index(self) -> np.ndarray:
        """(K,) iBUG-68 index of each row (-1 for the pupils)."""
        idx = [np.arange(N_CONTOUR, 68), np.tile(np.arange(N_CONTOUR), self.n_rows)]
        if self.has_pupils:
            idx.append(np.array([-1, -1]))
        return np.concatenate(idx)

    @classmethod
    def from_model(cls, model: HeadModel, dynamic: bool = True) -> "PointSet":
        f, b = model.lmk_faces, model.lmk_bary
        vids = [model.faces[f[N_CONTOUR:]]]
        bary = [b[N_CONTOUR:]]
        if dynamic and model.has_dynamic_contour:
            vids.append(model.faces[model.dyn_lmk_faces.reshape(-1)])
            bary.append(model.dyn_lmk_bary.reshape(-1, 3))
            n_rows = N_ROWS
        else:
            vids.append(model.faces[f[:N_CONTOUR]])
            bary.append(b[:N_CONTOUR])
            n_rows = 1
        pupils = pupil_vertices(model)
        if pupils is not None:
            vids.append(np.repeat(np.array(pupils)[:, None], 3, axis=1))
            bary.append(np.tile([1.0, 0.0, 0.0], (2, 1)))
        return cls(np.concatenate(vids).astype(np.int64), np.concatenate(bary).astype(np.float64),
                   n_rows, pupils is not None)

    def rows_for(self, yaw_deg: float, pupils: bool = True) -> np.ndarray:
        """Point rows in iBUG-68 order for a head yaw (degrees), then the pupils when asked."""
        n_inner = 68 - N_CONTOUR
        if self.n_rows == 1:
            row = 0
        else:
            row = int(np.clip(np.round(yaw_deg), -DYN_YAW_MAX_DEG, DYN_YAW_MAX_DEG)) + DYN_YAW_MAX_DEG
        contour = n_inner + row * N_CONTOUR + np.arange(N_CONTOUR)
        ids = [contour, np.arange(n_inner)]
        if pupils and self.has_pupils:
            ids.append(len(self.vids) - 2 + np.arange(2))
        return np.concatenate(ids)


@dataclass(frozen=True)
class JointBasis:
    """What every :class:`PointRig` of one model needs of its joints: the regressor's rows of the groups'
    joints (4, U) over the vertices they use (a fifth of the mesh), those vertices' template (U, 3) and
    blendshapes (U, 3, S), (U, 3, E) as float64, and the joints' derivatives (4, 3, S), (4, 3, E) by every
    identity and expression coefficient."""

    regressor: np.ndarray
    template: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    JZ_shape: np.ndarray
    JZ_expr: np.ndarray


_JOINT_BASES: dict[int, tuple] = {}  # id(model) -> (the model's arrays it was made of, JointBasis)


def joint_basis(model: HeadModel) -> JointBasis:
    """The model's :class:`JointBasis`, made once per model (about 20 ms for ICT-FaceKit, which a tracked
    video's three rigs paid each) while its arrays stay the same objects."""
    key = (model.v_template, model.shapedirs, model.exprdirs, model.j_regressor)
    hit = _JOINT_BASES.get(id(model))
    if hit is not None and all(a is b for a, b in zip(hit[0], key)):
        return hit[1]
    jr = np.asarray(model.j_regressor, dtype=np.float64)[list(GROUP_JOINTS)]  # (4, V)
    used = np.flatnonzero(np.any(jr != 0, axis=0))  # the joints' vertices
    sd, ed = model.shapedirs[used].astype(np.float64), model.exprdirs[used].astype(np.float64)
    jr = jr[:, used]
    jb = JointBasis(jr, model.v_template[used].astype(np.float64), sd, ed,
                    np.einsum("jv,vdz->jdz", jr, sd), np.einsum("jv,vdz->jdz", jr, ed))  # not BLAS: its threads spin
    if hit is None:
        weakref.finalize(model, _JOINT_BASES.pop, id(model), None)
    _JOINT_BASES[id(model)] = (key, jb)
    return jb


class PointRig:
    """Closed-form points and Jacobians for one coefficient layout.

    The coefficients z (Z,) are ``beta[id_cols]`` then ``psi[expr_cols]``; every other beta and psi
    entry is held at ``beta0`` / ``psi0``. All arrays are float64, metres.

    Args:
        model: the head model.
        beta0: (S,) fixed identity (zeros when None).
        id_cols: identity components that are variables (for estimating a driver's shape).
        expr_cols: expression components that are variables.
        dynamic: use the model's yaw-dependent contour when it has one.
    """

    def __init__(self, model: HeadModel, beta0: np.ndarray | None = None, id_cols=(), expr_cols=None,
                 dynamic: bool = True, psi0: np.ndarray | None = None):
        self.model = model
        self.pts = PointSet.from_model(model, dynamic)
        self.id_cols = np.asarray(id_cols, dtype=np.int64)
        self.expr_cols = np.arange(model.n_expr) if expr_cols is None else np.asarray(expr_cols, dtype=np.int64)
        beta0 = np.zeros(model.n_shape) if beta0 is None else np.asarray(beta0, dtype=np.float64)
        psi0 = np.zeros(model.n_expr) if psi0 is None else np.asarray(psi0, dtype=np.float64)
        self.beta0, self.psi0 = beta0, psi0
        self.n_id, self.n_expr = len(self.id_cols), len(self.expr_cols)
        self.Z = self.n_id + self.n_expr

        vids, bary = self.pts.vids, self.pts.bary
        rest, basis = self._rest_and_basis(model, vids)  # (K, 3c, 3), (K, 3c, 3, Z)
        W = model.lbs_weights.astype(np.float64)
        Wg = np.stack([W[:, ROOT] + W[:, NECK], W[:, JAW], W[:, LEFT_EYE], W[:, RIGHT_EYE]], axis=1)[vids]  # (K, 3c, 4)
        bw = bary[:, :, None] * Wg  # (K, 3c, 4)
        self.c = bw.sum(1).T.copy()  # (4, K)
        self.a0 = np.einsum("kcg,kcd->gkd", bw, rest)  # (4, K, 3)
        self.A = np.einsum("kcg,kcdz->kgdz", bw, basis)  # (K, 4, 3, Z): a row's block is one contiguous gather
        jb = joint_basis(model)
        self.j0 = jb.regressor @ self._rest(jb.template, jb.shapedirs, jb.exprdirs)  # (4, 3)
        self.JZ = np.concatenate([jb.JZ_shape[..., self.id_cols], jb.JZ_expr[..., self.expr_cols]], axis=-1)
        self.offsets = np.zeros((68, 3))

    def _rest_and_basis(self, model: HeadModel, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest positions (*vids.shape, 3) at beta0 / psi0 and their derivatives (*vids.shape, 3, Z) by z of
        the vertices ``vids`` (only those are converted to float64)."""
        sd = model.shapedirs[vids].astype(np.float64)
        ed = model.exprdirs[vids].astype(np.float64)
        rest = self._rest(model.v_template[vids].astype(np.float64), sd, ed)
        return rest, np.concatenate([sd[..., self.id_cols], ed[..., self.expr_cols]], axis=-1)

    def _rest(self, template: np.ndarray, shapedirs: np.ndarray, exprdirs: np.ndarray) -> np.ndarray:
        """Rest positions (..., 3) at beta0 / psi0 of vertices with float64 ``template`` (..., 3) and
        blendshapes (..., 3, S), (..., 3, E): the one formula of the rig's points and its joints."""
        return template + shapedirs @ self.beta0 + exprdirs @ self.psi0

    def set_offsets(self, offsets: np.ndarray) -> None:
        """Move each of the 68 landmarks by a rest-pose offset (68, 3) metres (it then skins with the
        landmark): the per-driver correction of the detector's landmark definitions."""
        lmk = self.pts.landmark_index
        rows = lmk >= 0
        delta = np.asarray(offsets, dtype=np.float64) - self.offsets
        self.a0[:, rows] += self.c[:, rows, None] * delta[lmk[rows]][None]
        self.offsets = np.array(offsets, dtype=np.float64)

    def offset_jacobian(self, rows: np.ndarray, R0: np.ndarray, Rg: np.ndarray) -> np.ndarray:
        """d x / d offset (K, 3, 3) of each row with respect to its own landmark's offset."""
        c = self.c[:, rows]
        M = c[0][:, None, None] * np.eye(3) + np.einsum("gk,gab->kab", c[1:], Rg)
        return np.einsum("ab,kbc->kac", R0, M)

    def coefficients(self, beta: np.ndarray | None = None, psi: np.ndarray | None = None) -> np.ndarray:
        """z (Z,) from full beta (S,) and psi (E,) (entries outside the columns are ignored)."""
        beta = self.beta0 if beta is None else beta
        psi = self.psi0 if psi is None else psi
        return np.concatenate([np.asarray(beta)[self.id_cols] - self.beta0[self.id_cols],
                               np.asarray(psi)[self.expr_cols] - self.psi0[self.expr_cols]])

    def full(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full beta (S,) and psi (E,) from z."""
        beta, psi = self.beta0.copy(), self.psi0.copy()
        beta[self.id_cols] += z[: self.n_id]
        psi[self.expr_cols] += z[self.n_id:]
        return beta, psi

    def points(self, rows: np.ndarray, R0: np.ndarray, Rg: np.ndarray, z: np.ndarray, jacobian: bool = True):
        """Model-frame points x (K, 3) and, when asked, their derivatives.

        Args:
            rows: (K,) point rows (see :meth:`PointSet.rows_for`).
            R0: (3, 3) root rotation; Rg: (3, 3, 3) local rotations of jaw, left eye, right eye.
            z: (Z,) coefficients.

        Returns:
            x (K, 3); with ``jacobian``: d_root (K, 3, 3) for a left perturbation R0 <- exp(d) R0,
            d_g (3, K, 3, 3) for Rg <- exp(d) Rg, and d_z (K, 3, Z).
        """
        J = self.j0 + self.JZ @ z  # (4, 3)
        A = self.A[rows]  # (K, 4, 3, Z)
        a = self.a0[:, rows] + (A @ z).transpose(1, 0, 2)  # (4, K, 3)
        c = self.c[:, rows]  # (4, K)
        x, w, rq = grouped_points(a, c, J, R0, Rg)
        if not jacobian:
            return x
        d_root, d_g = rotation_jacobians(w, rq, R0)
        dy = A[:, 0] + np.matmul(Rg[None], A[:, 1:]).sum(1) + joint_jacobian(c, self.JZ, Rg)
        return x, d_root, d_g, R0 @ dy + self.JZ[0][None]


def grouped_points(a: np.ndarray, c: np.ndarray, J: np.ndarray, R0: np.ndarray, Rg: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The closed form of the module docstring for G groups of joints: group 0 turns with the root alone,
    group g >= 1 also turns by its own local rotation about its joint.

    Args:
        a: (G, K, 3) each point's rest position weighted by its skinning weights on each group.
        c: (G, K) the sums of those weights; J: (G, 3) the groups' rest joints (J[0] the root's).
        R0: (3, 3) root rotation; Rg: (G - 1, 3, 3) the other groups' local rotations.

    Returns:
        x (K, 3) the posed points, w = x - J[0] (K, 3) and R_g q_g (G - 1, K, 3), the groups' turned
        offsets from their joints (for :func:`rotation_jacobians`).
    """
    cJ = c[1:, :, None] * J[1:, None, :]
    rq = np.matmul(a[1:] - cJ, Rg.transpose(0, 2, 1))  # (G - 1, K, 3)
    y = a[0] + (rq + cJ).sum(0) - J[0]
    w = y @ R0.T
    return w + J[0], w, rq


def rotation_jacobians(w: np.ndarray, rq: np.ndarray, R0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d x / d root (K, 3, 3) for R0 <- exp(d) R0 and d x / d group (G - 1, K, 3, 3) for Rg <- exp(d) Rg,
    from :func:`grouped_points`' w and rq."""
    return -skew(w), R0 @ -skew(rq)


def joint_jacobian(c: np.ndarray, JZ: np.ndarray, Rg: np.ndarray) -> np.ndarray:
    """The joints' share (K, 3, Z) of d y / d z: -JZ_0 + sum_g c_g (I - R_g) JZ_g, for the groups' weight
    sums c (G, K), joint derivatives JZ (G, 3, Z) and rotations Rg (G - 1, 3, 3) (one (K, 3 Z) product;
    not BLAS-threaded einsum)."""
    JZ1 = JZ[1:]
    return (c[1:].T @ (JZ1 - Rg @ JZ1).reshape(len(Rg), -1)).reshape(c.shape[1], 3, -1) - JZ[0][None]


def left_jacobian(r) -> np.ndarray:
    """SO(3)'s left Jacobian (3, 3) at the axis-angle r (3,): exp(r + e) = exp(left_jacobian(r) e) exp(r) to
    first order, so a left-perturbation derivative times it is the derivative by r."""
    r = np.asarray(r, dtype=np.float64)
    a = float(np.linalg.norm(r))
    K = skew(r)
    if a < 1e-6:
        return np.eye(3) + 0.5 * K + K @ K / 6.0
    return np.eye(3) + (1 - math.cos(a)) / a ** 2 * K + (a - math.sin(a)) / a ** 3 * (K @ K)
