"""The paper's three optimisation blocks on RGB-D observations, and two baselines.

Block 1: root rotation and placement on the 3D landmarks without the 17 contour points (eq. 1, 3).
Block 2: beta, psi, root and jaw rotation, placement on landmarks + L3D (eq. 2, 4).
Block 3: beta alone on L3D (eq. 5).

L3D is the mean squared exact point-to-triangle distance from the face points to the
mesh; correspondences (closest triangle and barycentric point) are recomputed before
every Levenberg-Marquardt step. The landmark term is the mean squared 3D landmark error
(the square of the paper's L2), so every block minimises a sum of squares.

Baselines: ``landmarks-3d`` (blocks 1 and 2 without L3D) and ``rgb-2d`` (the classical
fit to 2D landmarks alone through the pinhole camera, no depth).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from headcast.core.camera import FLIP, Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.geometry import face_normals
from headcast.core.params import N_POSE, HeadParams
from headcast.core.rigid import similarity_fit
from headcast.core.scene import closest_points_on_mesh
from headcast.fit.config import FitConfig
from headcast.fit.solver import LMState, lm_step_jac
from headcast.model import lbs
from headcast.model.head_model import N_CONTOUR
from headcast.model.layer import HeadLayer

METHODS = ("full", "landmarks-3d", "rgb-2d")
INNER = np.arange(N_CONTOUR, 68)  # landmarks without the face oval


@dataclass
class Targets:
    """What the fit matches, camera frame: landmarks3d (68, 3) m with valid (68,), face points (N, 3) m,
    landmarks2d (68, 2) pixels and the intrinsics."""

    landmarks3d: np.ndarray | None
    valid3d: np.ndarray | None
    points: np.ndarray | None
    landmarks2d: np.ndarray
    K: Intrinsics
    scene_points: np.ndarray | None = None  # (M, 3) all depth points near the head, for region growing


@dataclass
class BlockReport:
    name: str
    iterations: int
    seconds: float
    landmark_rmse_mm: float | None = None
    l3d_mm2: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class PriorWeights:
    """Identity and expression prior weights beside a point term over ``points`` points, and what they
    stand for: per-point noise ``sigma`` metres (None when the config fixes the weights), the correlation
    factor in it (when measured), and ``source`` (fixed, assumed or measured)."""

    w_beta: float
    w_psi: float
    points: int
    sigma: float | None
    correlation: float | None
    source: str

    def report(self) -> dict:
        """The fields for fit_report.json, sigma in millimetres."""
        out = asdict(self)
        out["sigma_mm"] = None if out.pop("sigma") is None else self.sigma * 1000.0
        return out


def prior_weights(cfg: FitConfig, n: int, sigma: float | None = None,
                  correlation: float | None = None) -> PriorWeights:
    """MAP weights for per-point noise ``sigma`` metres beside the mean over ``n`` points:
    w_beta = sigma^2 / n (sigma at least ``cfg.sigma_floor_mm``), w_psi = psi_prior_ratio * w_beta;
    ``cfg.w_beta`` / ``cfg.w_psi`` override. ``correlation`` None means sigma was assumed, not measured."""
    if cfg.w_beta is not None:
        wb, sigma, source = cfg.w_beta, None, "fixed"
    else:
        sigma = max(sigma, cfg.sigma_floor_mm / 1000.0)
        wb, source = sigma ** 2 / n, ("measured" if correlation is not None else "assumed")
    wp = cfg.w_psi if cfg.w_psi is not None else cfg.psi_prior_ratio * wb
    return PriorWeights(wb, wp, n, sigma, correlation, source)


@dataclass
class FitResult:
    params: HeadParams
    blocks: list[BlockReport] = field(default_factory=list)
    priors: PriorWeights | None = None  # beside the point cloud (full method only)

    def report(self) -> dict:
        out = {"blocks": [asdict(b) for b in self.blocks]}
        if self.priors is not None:
            out["priors"] = self.priors.report()
        return out


class _Packing:
    """Maps the active parameters to one vector: [beta | psi | root 3 | jaw 3 | log s | t 3]."""

    def __init__(self, layer: HeadLayer):
        S, E = layer.n_shape, layer.n_expr
        self.sl = {"beta": slice(0, S), "psi": slice(S, S + E), "root": slice(S + E, S + E + 3),
                   "jaw": slice(S + E + 3, S + E + 6), "log_s": slice(S + E + 6, S + E + 7),
                   "t": slice(S + E + 7, S + E + 10)}
        self.size = S + E + 10

    def pack(self, p: HeadParams) -> torch.Tensor:
        x = torch.zeros(self.size, dtype=torch.float64)
        x[self.sl["beta"]] = torch.as_tensor(p.beta)
        x[self.sl["psi"]] = torch.as_tensor(p.psi)
        x[self.sl["root"]] = torch.as_tensor(p.theta[:3])
        x[self.sl["jaw"]] = torch.as_tensor(p.theta[6:9])
        x[self.sl["log_s"]] = float(np.log(p.scale))
        x[self.sl["t"]] = torch.as_tensor(p.translation)
        return x

    def unpack(self, x: torch.Tensor, model: str) -> HeadParams:
        x = x.detach().numpy()
        theta = np.zeros(N_POSE)
        theta[:3] = x[self.sl["root"]]
        theta[6:9] = x[self.sl["jaw"]]
        return HeadParams(x[self.sl["beta"]].copy(), x[self.sl["psi"]].copy(), theta,
                          float(np.exp(x[self.sl["log_s"]][0])), x[self.sl["t"]].copy(), model)

    def mask(self, *names: str) -> torch.Tensor:
        m = torch.zeros(self.size, dtype=torch.bool)
        for n in names:
            m[self.sl[n]] = True
        return m


class RGBDFitter:
    """Holds the layer (float64) and runs the blocks for one frame."""

    def __init__(self, layer: HeadLayer, model_name: str, expr_range: tuple[float, float] | None,
                 config: FitConfig | None = None, progress: Callable[[str], None] | None = None):
        self.layer = layer
        self.model_name = model_name
        self.cfg = config or FitConfig()
        self.pk = _Packing(layer)
        self.progress = progress or (lambda s: None)
        self.flip = torch.tensor(np.diag(FLIP), dtype=torch.float64)
        lo = torch.full((self.pk.size,), -torch.inf, dtype=torch.float64)
        hi = torch.full((self.pk.size,), torch.inf, dtype=torch.float64)
        if expr_range is not None:
            lo[self.pk.sl["psi"]] = expr_range[0]
            hi[self.pk.sl["psi"]] = expr_range[1]
        self.lower, self.upper = lo, hi
        self.dense = True
        self.prior: PriorWeights | None = None  # beside the point cloud, set by fit()

    # -- model evaluation on the full vector -------------------------------------------------
    def _split(self, x: torch.Tensor):
        sl = self.pk.sl
        zero = torch.zeros(3, dtype=x.dtype)
        theta = torch.cat([x[sl["root"]], zero, x[sl["jaw"]], zero, zero])
        return x[sl["beta"]][None], x[sl["psi"]][None], theta[None], torch.exp(x[sl["log_s"]]), x[sl["t"]]

    def _camera(self, v: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return s * v * self.flip + t

    def landmarks_cam(self, x: torch.Tensor) -> torch.Tensor:
        beta, psi, theta, s, t = self._split(x)
        return self._camera(self.layer.landmarks(beta, psi, theta)[0], s, t)

    def vertices_cam(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        beta, psi, theta, s, t = self._split(x)
        return self._camera(self.layer.vertices(beta, psi, theta, ids)[0], s, t)

    def vertices_jacobian(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame vertices ``ids`` (k, 3) and their Jacobian (k, 3, P) for the packed vector x.

        Shaped vertices and rest joints are linear in beta and psi, and skinning is linear in both
        for a fixed pose, so dV/d(beta, psi) = M_v @ dirs + dV/dJ @ joint dirs, with M_v the blended
        skinning rotation of each vertex; only the 25 pose, placement and joint directions need
        forward-mode autodiff instead of all P parameters.
        """
        L, sl = self.layer, self.pk.sl
        beta, psi = x[sl["beta"]][None], x[sl["psi"]][None]
        sd, ed = L.shapedirs[ids], L.exprdirs[ids]
        v_shaped = L.v_template[ids] + lbs.blend_shapes(beta, sd)[0] + lbs.blend_shapes(psi, ed)[0]
        joints = L.j_template + lbs.blend_shapes(beta, L.j_shapedirs)[0] + lbs.blend_shapes(psi, L.j_exprdirs)[0]
        weights = L.lbs_weights[ids]
        zero = torch.zeros(3, dtype=x.dtype)

        def pose_map(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """z = [joints 15 | root 3 | jaw 3 | log s | t 3] -> camera vertices (k, 3) and T (k, 3, 4)."""
            theta = torch.cat([z[15:18], zero, z[18:21], zero, zero])
            rot = lbs.batch_rodrigues(theta.view(-1, 3)).unsqueeze(0)
            _, rel = lbs.batch_rigid_transform(rot, z[:15].view(1, 5, 3), L.parents)
            T = torch.einsum("vj,jrc->vrc", weights, rel[0, :, :3, :])
            v = torch.einsum("vrc,vc->vr", T[..., :3], v_shaped) + T[..., 3]
            return torch.exp(z[21]) * v * self.flip + z[22:25], T

        z = torch.cat([joints.reshape(-1), x[sl["root"]], x[sl["jaw"]], x[sl["log_s"]], x[sl["t"]]])
        V, T = pose_map(z)
        Jz = torch.func.jacfwd(lambda zz: pose_map(zz)[0])(z)  # (k, 3, 25)
        M = torch.exp(x[sl["log_s"]]) * self.flip[None, :, None] * T[..., :3]  # (k, 3, 3)
        dJ = Jz[..., :15]
        S, E = L.n_shape, L.n_expr
        jac = torch.zeros(V.shape[0], 3, self.pk.size, dtype=x.dtype)
        jac[..., sl["beta"]] = torch.einsum("vab,vbk->vak", M, sd) + dJ @ L.j_shapedirs.reshape(15, S)
        jac[..., sl["psi"]] = torch.einsum("vab,vbk->vak", M, ed) + dJ @ L.j_exprdirs.reshape(15, E)
        jac[..., sl["root"]] = Jz[..., 15:18]
        jac[..., sl["jaw"]] = Jz[..., 18:21]
        jac[..., sl["log_s"]] = Jz[..., 21:22]
        jac[..., sl["t"]] = Jz[..., 22:25]
        return V, jac

    def _surface_points(self, x: torch.Tensor, corners: np.ndarray, bary: np.ndarray, with_jac: bool):
        """Points (n, 3) = bary-weighted triangle corners (n, 3 vertex ids), and (n, 3, P) Jacobian."""
        ids, inv = np.unique(corners, return_inverse=True)
        ids_t, inv_t = torch.as_tensor(ids), torch.as_tensor(inv.reshape(-1, 3))
        b = torch.as_tensor(bary, dtype=torch.float64)
        if not with_jac:
            V = self.vertices_cam(x, ids_t)
            return torch.einsum("nk,nkc->nc", b, V[inv_t]), None
        V, J = self.vertices_jacobian(x, ids_t)
        return torch.einsum("nk,nkc->nc", b, V[inv_t]), torch.einsum("nk,nkcp->ncp", b, J[inv_t])

    # -- residual terms: evaluate(x, with_jac) -> r or (r, J over the full vector) ----------------
    def _priors(self, x: torch.Tensor, active: torch.Tensor, with_jac: bool):
        c, sl = self.cfg, self.pk.sl
        if not self.dense:
            wb, wp = c.w_beta_sparse, c.w_psi_sparse
        elif self.prior is not None:
            wb, wp = self.prior.w_beta, self.prior.w_psi
        else:  # block 1: shape and expression are not active yet
            wb = wp = 0.0
        rs, Js = [], []
        for name, w in (("beta", wb), ("psi", wp), ("jaw", c.w_jaw), ("log_s", c.w_log_scale)):
            if active[sl[name]].any():
                rs.append(np.sqrt(w) * x[sl[name]])
                J = torch.zeros(rs[-1].numel(), self.pk.size, dtype=x.dtype)
                J[:, sl[name]] = np.sqrt(w) * torch.eye(rs[-1].numel(), dtype=x.dtype)
                Js.append(J)
        return rs, Js

    def _point_term(self, x: torch.Tensor, pts: np.ndarray, trim_m: float | None):
        """Correspondences at x, then the point-to-surface term's evaluate function."""
        faces = self.layer.model.faces
        v = self.vertices_cam(x).detach().numpy()
        tri, bary, dist = closest_points_on_mesh(v, faces, pts)
        keep = dist < trim_m if trim_m is not None else np.ones(len(pts), bool)
        if keep.sum() < 0.3 * len(pts):  # far from the surface: do not trim yet
            keep[:] = True
        corners, b = faces[tri[keep]], bary[keep]
        target = torch.as_tensor(pts[keep], dtype=torch.float64)
        n = int(keep.sum())
        normal = torch.as_tensor(self._distance_directions(v, tri[keep], b, pts[keep]))

        def evaluate(xx: torch.Tensor, with_jac: bool):
            q, J = self._surface_points(xx, corners, b, with_jac)
            r = ((q - target) * normal).sum(1) / np.sqrt(n)
            return (r, torch.einsum("nc,ncp->np", normal, J) / np.sqrt(n)) if with_jac else r

        return evaluate

    def _landmark_term(self, tgt: torch.Tensor, idx: np.ndarray):
        """3D landmark term on the static (inner) landmarks ``idx``."""
        m = self.layer.model
        corners, b = m.faces[m.lmk_faces[idx]], m.lmk_bary[idx].astype(np.float64)
        scale = 1.0 / np.sqrt(len(idx))

        def evaluate(xx: torch.Tensor, with_jac: bool):
            q, J = self._surface_points(xx, corners, b, with_jac)
            r = ((q - tgt) * scale).reshape(-1)
            return (r, J.reshape(-1, self.pk.size) * scale) if with_jac else r

        return evaluate

    def _landmark2d_term(self, x: torch.Tensor, tgt: torch.Tensor, K: Intrinsics, depth: float):
        """All 68 landmarks (contour chosen by the yaw at x) projected through K; pixel residuals are
        scaled by depth / fx so they read as metres at the face."""
        _, _, theta, _, _ = self._split(x)
        faces, bary = self.layer.landmark_embedding(theta.to(self.layer.v_template.dtype))
        corners = self.layer.model.faces[faces[0].numpy()]
        b = bary[0].double().numpy()
        k = depth / K.fx / np.sqrt(68)

        def evaluate(xx: torch.Tensor, with_jac: bool):
            p, J = self._surface_points(xx, corners, b, with_jac)
            z = p[:, 2]
            uv = torch.stack([K.fx * p[:, 0] / z + K.cx, K.fy * p[:, 1] / z + K.cy], dim=1)
            r = ((uv - tgt) * k).reshape(-1)
            if not with_jac:
                return r
            du = (K.fx / z)[:, None] * J[:, 0] - (K.fx * p[:, 0] / z ** 2)[:, None] * J[:, 2]
            dv = (K.fy / z)[:, None] * J[:, 1] - (K.fy * p[:, 1] / z ** 2)[:, None] * J[:, 2]
            return r, torch.stack([du, dv], dim=1).reshape(-1, self.pk.size) * k

        return evaluate

    def _distance_directions(self, v: np.ndarray, tri: np.ndarray, bary: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Unit directions (n, 3) along which each point's distance to the mesh is measured.

        The residual (q - p) . n equals the point-to-triangle distance at the current mesh while
        letting the surface slide under the point (point-to-plane Gauss-Newton), which converges
        in a few steps where fixed point-to-point correspondences crawl.
        """
        faces = self.layer.model.faces[tri]
        d = pts - np.einsum("nk,nkc->nc", bary, v[faces])
        dn = np.linalg.norm(d, axis=1, keepdims=True)
        fn = face_normals(v, faces)
        fn *= np.sign((fn * d).sum(1, keepdims=True) + 1e-30)
        return np.where(dn > 1e-7, d / np.maximum(dn, 1e-18), fn)

    # -- the optimisation loop -------------------------------------------------------------
    def _run_block(self, name: str, x: torch.Tensor, active_names: tuple[str, ...], iters: int,
                   make_terms: Callable[[torch.Tensor], list[tuple[float, Callable]]]) -> tuple[torch.Tensor, float]:
        """LM over the active parameters; ``make_terms(x)`` returns (weight, evaluate) pairs and is
        called before every step so correspondences follow the mesh."""
        active = self.pk.mask(*active_names)
        state = LMState()
        cost = float("nan")
        for it in range(iters):
            terms = make_terms(x)
            full = x.clone()

            def evaluate(xa: torch.Tensor, with_jac: bool):
                xx = full.clone()
                xx[active] = xa
                out = [f(xx, with_jac) for _, f in terms]
                pr, pj = self._priors(xx, active, with_jac)
                r = torch.cat([np.sqrt(w) * (o[0] if with_jac else o) for (w, _), o in zip(terms, out)] + pr)
                if not with_jac:
                    return r
                J = torch.cat([np.sqrt(w) * o[1] for (w, _), o in zip(terms, out)] + pj)
                return r, J[:, active]

            xa, before, after = lm_step_jac(evaluate, x[active], state, self.lower[active], self.upper[active])
            x = x.clone()
            x[active] = xa
            cost = after
            self.progress(f"  {name}: iteration {it + 1}/{iters}  loss {after:.3e}")
            if before - after < self.cfg.rel_tol * before:
                break
        return x, cost

    def fit(self, tg: Targets, method: str = "full") -> FitResult:
        """Fit a head to the targets with ``method`` in METHODS."""
        if method not in METHODS:
            raise HeadcastError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        torch.manual_seed(self.cfg.seed)
        self.dense = method == "full"  # priors: a point cloud constrains shape far more than landmarks
        self.prior = None
        if method == "rgb-2d":
            return self._fit_2d(tg)
        valid = np.asarray(tg.valid3d, bool)
        inner = np.array([i for i in INNER if valid[i]])
        if len(inner) < 6:
            raise HeadcastError(f"only {len(inner)} inner landmarks have depth; at least 6 are needed")
        lmk_tgt = torch.as_tensor(tg.landmarks3d[inner], dtype=torch.float64)
        idx = torch.as_tensor(inner)
        res = FitResult(HeadParams.neutral(self.layer, self.model_name))
        x = self.pk.pack(self._init_similarity(tg.landmarks3d[inner], inner))
        lmk_term = self._landmark_term(lmk_tgt, inner)

        t0 = time.perf_counter()
        self.progress("block 1: pose and placement on 3D landmarks")
        x, cost = self._run_block("block 1", x, ("root", "log_s", "t"), self.cfg.iters_block1,
                                  lambda _x: [(1.0, lmk_term)])
        res.blocks.append(BlockReport("block1", self.cfg.iters_block1, time.perf_counter() - t0,
                                      landmark_rmse_mm=self._lmk_rmse(x, lmk_tgt, idx), loss=cost))
        pts = None
        if method == "full":
            if tg.points is None or len(tg.points) < 50:
                raise HeadcastError("the face point cloud has fewer than 50 points; cannot fit L3D")
            rng = np.random.default_rng(self.cfg.seed)
            pts = tg.points
            if len(pts) > self.cfg.max_points:
                pts = pts[rng.choice(len(pts), self.cfg.max_points, replace=False)]
        trim = self.cfg.trim_mm / 1000.0

        def terms_block2(xx):
            out = [(self.cfg.w_landmarks_block2 if pts is not None else 1.0, lmk_term)]
            if pts is not None:
                out.append((1.0, self._point_term(xx, pts, trim)))
            return out

        t0 = time.perf_counter()
        self.progress("block 2: shape, expression, pose and placement on landmarks" +
                      (" + point cloud" if pts is not None else ""))
        block2 = ("beta", "psi", "root", "jaw", "log_s", "t")
        if pts is not None and self.cfg.w_beta is None:
            # priors for an assumed noise first, then for the noise the residuals show
            self.prior = prior_weights(self.cfg, len(pts), self.cfg.sigma_start_mm / 1000.0)
            half = self.cfg.iters_block2 // 2
            x, cost = self._run_block("block 2", x, block2, half, terms_block2)
            self.prior = prior_weights(self.cfg, len(pts), *self._residual_sigma(x, pts))
            x, cost = self._run_block("block 2", x, block2, self.cfg.iters_block2 - half, terms_block2)
        else:
            if pts is not None:
                self.prior = prior_weights(self.cfg, len(pts))  # fixed by the config
            x, cost = self._run_block("block 2", x, block2, self.cfg.iters_block2, terms_block2)
        res.blocks.append(BlockReport("block2", self.cfg.iters_block2, time.perf_counter() - t0,
                                      landmark_rmse_mm=self._lmk_rmse(x, lmk_tgt, idx),
                                      l3d_mm2=self._l3d_mm2(x, pts), loss=cost))
        if pts is not None and self.cfg.grow_mm > 0 and tg.scene_points is not None:
            pts = self._grow_region(x, pts, tg.scene_points)
            self.prior = prior_weights(self.cfg, len(pts), self.prior.sigma, self.prior.correlation)
            t0 = time.perf_counter()
            self.progress(f"block 2 again on the face region grown from the fit ({len(pts)} points)")
            x, cost = self._run_block("block 2+", x, block2, self.cfg.iters_grow, terms_block2)
            res.blocks.append(BlockReport("block2_grown", self.cfg.iters_grow, time.perf_counter() - t0,
                                          landmark_rmse_mm=self._lmk_rmse(x, lmk_tgt, idx),
                                          l3d_mm2=self._l3d_mm2(x, pts), loss=cost))
        if pts is not None:
            def terms_block3(xx):
                return [(1.0, self._point_term(xx, pts, trim))]

            t0 = time.perf_counter()
            self.progress("block 3: shape on the point cloud")
            x, cost = self._run_block("block 3", x, ("beta",), self.cfg.iters_block3, terms_block3)
            res.blocks.append(BlockReport("block3", self.cfg.iters_block3, time.perf_counter() - t0,
                                          landmark_rmse_mm=self._lmk_rmse(x, lmk_tgt, idx),
                                          l3d_mm2=self._l3d_mm2(x, pts), loss=cost))
        if pts is not None:
            res.priors = self.prior
        res.params = self.pk.unpack(x, self.model_name)
        return res

    def _grow_region(self, x: torch.Tensor, pts: np.ndarray, scene: np.ndarray) -> np.ndarray:
        """Add the depth points within ``grow_mm`` of the fitted mesh's face triangles (beyond the
        landmark hull: forehead, temples, jaw sides), subsampled with the hull points to max_points."""
        m = self.layer.model
        with torch.no_grad():
            v = self.vertices_cam(x).numpy()
        face_tri = np.isin(m.faces, m.masks["face"]).all(1)
        tri, _, dist = closest_points_on_mesh(v, m.faces, scene)
        extra = scene[(dist < self.cfg.grow_mm / 1000.0) & face_tri[tri]]
        both = np.concatenate([pts, extra])
        if len(both) > self.cfg.max_points:
            rng = np.random.default_rng(self.cfg.seed + 1)
            both = both[rng.choice(len(both), self.cfg.max_points, replace=False)]
        return both

    # -- priors ---------------------------------------------------------------------------
    def _residual_sigma(self, x: torch.Tensor, pts: np.ndarray, k: int = 16) -> tuple[float, float]:
        """Per-point noise (m) for the priors from the signed point-to-mesh residuals at x, and the
        correlation factor in it.

        sigma = MAD scale of the residuals x sqrt(c), with c in [1, k] the variance of the residuals
        averaged over each point's k nearest neighbours in the image relative to white noise's (sigma^2 / k):
        correlated noise (stereo depth) and smooth model mismatch fit fewer independent points than
        there are, so they call for a stronger prior than their per-point spread alone.
        """
        from scipy.spatial import cKDTree

        faces = self.layer.model.faces
        with torch.no_grad():
            v = self.vertices_cam(x).numpy()
        tri, bary, d = closest_points_on_mesh(v, faces, pts)
        q = np.einsum("nk,nkc->nc", bary, v[faces[tri]])
        r = d * np.sign(((pts - q) * face_normals(v, faces[tri])).sum(1) + 1e-30)
        mad = lambda a: 1.4826 * float(np.median(np.abs(a - np.median(a))))  # noqa: E731
        rays = pts[:, :2] / pts[:, 2:3]  # neighbours across the image: depth noise does not move a point's ray
        _, nb = cKDTree(rays).query(rays, k=k)
        c = float(np.clip(k * mad(r[nb].mean(1)) ** 2 / max(mad(r), 1e-12) ** 2, 1.0, k))
        return float(mad(r) * np.sqrt(c)), c

    # -- helpers --------------------------------------------------------------------------
    def _lmk_rmse(self, x, tgt, idx) -> float:
        with torch.no_grad():
            d = self.landmarks_cam(x)[idx] - tgt
        return float(torch.sqrt((d ** 2).sum(1).mean())) * 1000

    def _l3d_mm2(self, x, pts) -> float | None:
        if pts is None:
            return None
        with torch.no_grad():
            v = self.vertices_cam(x).numpy()
        _, _, d = closest_points_on_mesh(v, self.layer.model.faces, pts)
        return float((d ** 2).mean()) * 1e6

    def _template_landmarks(self) -> np.ndarray:
        with torch.no_grad():
            z = self.layer.zeros(1)
            return self.layer.landmarks(z["beta"], z["psi"], z["theta"])[0].double().numpy()

    def _init_similarity(self, target: np.ndarray, idx: np.ndarray) -> HeadParams:
        """Closed-form similarity (Umeyama) from template landmarks to the 3D targets."""
        s, Ru, t_u = similarity_fit(self._template_landmarks()[idx], target)
        return self._params_from_camera_rotation(Ru, s, t_u)

    def _params_from_camera_rotation(self, Ru: np.ndarray, s: float, t_u: np.ndarray) -> HeadParams:
        """X_cam = s Ru v + t_u  ->  root rotation about joint 0 and translation."""
        from scipy.spatial.transform import Rotation

        F = np.diag(FLIP).astype(np.float64)
        R = np.diag(F) @ Ru  # FLIP is its own inverse
        j0 = self.layer.j_template[0].double().numpy()
        t = t_u - s * F * (j0 - R @ j0)
        p = HeadParams.neutral(self.layer, self.model_name)
        p.theta[:3] = Rotation.from_matrix(R).as_rotvec()
        p.scale, p.translation = s, t
        return p

    # -- the classical RGB baseline -----------------------------------------------------------
    def _fit_2d(self, tg: Targets) -> FitResult:
        K = tg.K
        src = self._template_landmarks()[INNER]
        ok, rvec, tvec = cv2.solvePnP(src.astype(np.float64), tg.landmarks2d[INNER].astype(np.float64), K.K, None,
                                      flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            raise HeadcastError("could not place the head from the 2D landmarks")
        Ru = cv2.Rodrigues(rvec)[0]
        x = self.pk.pack(self._params_from_camera_rotation(Ru, 1.0, tvec.ravel()))
        tgt = torch.as_tensor(tg.landmarks2d, dtype=torch.float64)
        lmk2d = lambda xx: self._landmark2d_term(xx, tgt, K, float(tvec.ravel()[2]))  # noqa: E731

        res = FitResult(HeadParams.neutral(self.layer, self.model_name))
        t0 = time.perf_counter()
        self.progress("rgb-2d: pose, shape and expression on 2D landmarks")
        x, cost = self._run_block("rgb-2d", x, ("root", "t"), 6, lambda xx: [(1.0, lmk2d(xx))])
        x, cost = self._run_block("rgb-2d", x, ("beta", "psi", "root", "jaw", "t"), self.cfg.iters_2d,
                                  lambda xx: [(1.0, lmk2d(xx))])
        res.blocks.append(BlockReport("rgb2d", self.cfg.iters_2d, time.perf_counter() - t0, loss=cost))
        res.params = self.pk.unpack(x, self.model_name)
        return res
