"""Linear albedo models in FLAME's UV layout (the paper's BFM path) and their fit to a photo.

Two file layouts are read (both licence-restricted; users bring their own):

- ``FLAME_albedo_from_BFM.npz``: ``MU`` (mean) and ``PC`` (components), values 0..1;
- ``FLAME_texture.npz``: ``mean`` and ``tex_dir``, values 0..255.

Each holds square ``S x S x 3`` images in FLAME's UV layout (row 0 at v = 1), flattened in that
order, colours stored blue-green-red (DECA reverses them after reading); components are the
columns of an ``(S * S * 3, K)`` array. The albedo is ``mean + components @ rho``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.sh import sh_basis
from headcast.io.arrays import read_npz
from headcast.io.validate import finite_array
from headcast.texture.atlas import sample, uv_to_texel
from headcast.texture.lighting import fit_light, robust_weights

LAYOUTS = {("MU", "PC"): 1.0, ("mean", "tex_dir"): 255.0}  # (mean key, components key): value scale
MAX_BYTES = 4 << 30  # the mean and components read (a real FLAME_texture.npz or BFM file: about 1 GB)
FLAME_COUNTS = (5023, 5118)  # FLAME's vertices and texture coordinates (head_template.obj)


@dataclass
class AlbedoModel:
    """mean (S, S, 3) float32 RGB 0..1; basis (S, S, 3, K) float32 per unit of rho; name."""

    mean: np.ndarray
    basis: np.ndarray
    name: str = "albedo model"

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[-1])

    def texture(self, rho: np.ndarray) -> np.ndarray:
        """(S, S, 3) albedo for coefficients ``rho`` (K,) (not clipped)."""
        return self.mean + self.basis @ np.asarray(rho, dtype=np.float32)

    def sample(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (N, 3) and basis (N, 3, K) at UVs (N, 2) (FLAME layout), bilinear."""
        xy = uv_to_texel(uv, self.size)
        K = self.n_components
        stack = np.concatenate([self.mean, self.basis.reshape(self.size, self.size, 3 * K)], axis=2)
        s = sample(stack, xy)
        return s[:, :3].astype(np.float64), s[:, 3:].reshape(-1, 3, K).astype(np.float64)


def load_albedo_model(path: str | Path, n_components: int = 50) -> AlbedoModel:
    """Read an albedo model (see the module docstring), keeping the first ``n_components``."""
    path = Path(path)
    z = read_npz(path, "albedo model", max_bytes=MAX_BYTES, kind=".npz file", names={k for ks in LAYOUTS for k in ks})
    for (mk, pk), scale in LAYOUTS.items():
        if mk in z and pk in z:
            mean = finite_array(z[mk], f"albedo model {path}: {mk}")
            pcs = finite_array(z[pk], f"albedo model {path}: {pk}")
            break
    else:
        raise HeadcastError(f"albedo model {path} has neither MU/PC (FLAME_albedo_from_BFM.npz) nor "
                            f"mean/tex_dir (FLAME_texture.npz)")
    n = mean.size
    S = int(round(np.sqrt(n / 3)))
    if S * S * 3 != n or S < 2:
        raise HeadcastError(f"albedo model {path}: its mean has {n} values, not a square S x S x 3 image")
    if pcs.size % n or pcs.size == 0:
        raise HeadcastError(f"albedo model {path}: components of shape {pcs.shape} do not match the "
                            f"{S}x{S}x3 mean")
    pcs = pcs.reshape(n, -1)
    k = min(int(n_components), pcs.shape[1])
    if k < 1:
        raise HeadcastError(f"the albedo model needs at least one component, not {n_components}")
    mean = (mean.reshape(S, S, 3)[..., ::-1] / scale).astype(np.float32)  # BGR -> RGB
    basis = (pcs[:, :k].reshape(S, S, 3, k)[:, :, ::-1] / scale).astype(np.float32)
    return AlbedoModel(np.ascontiguousarray(mean), np.ascontiguousarray(basis), path.name)


def save_albedo_model(path: str | Path, mean: np.ndarray, basis: np.ndarray, layout: str = "BFM") -> Path:
    """Write ``mean`` (S, S, 3) RGB 0..1 and ``basis`` (S, S, 3, K) in a file layout ('BFM' or 'FLAME')."""
    mk, pk = ("MU", "PC") if layout == "BFM" else ("mean", "tex_dir")
    scale = LAYOUTS[(mk, pk)]
    S = mean.shape[0]
    m = (np.asarray(mean)[..., ::-1] * scale).reshape(1, -1)
    b = (np.asarray(basis)[:, :, ::-1] * scale).reshape(S * S * 3, -1)
    np.savez(path, **{mk: m, pk: b})
    return Path(path)


def check_flame_layout(n_vertices: int, n_uv: int, model_name: str, albedo_name: str) -> None:
    """Albedo models live in FLAME's UV layout: refuse other topologies with a one-line error."""
    if (n_vertices, n_uv) != FLAME_COUNTS:
        raise HeadcastError(f"albedo model {albedo_name} is in FLAME's UV layout, but head model "
                            f"{model_name!r} is not FLAME ({n_vertices} vertices, {n_uv} UVs; FLAME has "
                            f"{FLAME_COUNTS[0]} and {FLAME_COUNTS[1]}); use a FLAME model or no albedo model")


def fit_albedo_model(colors: np.ndarray, normals: np.ndarray, mean: np.ndarray, basis: np.ndarray,
                     iters: int = 12, prior: float = 1e-4) -> tuple[np.ndarray, np.ndarray, float]:
    """rho (K,) and SH light (9, 3) minimising Loss4 over face pixels: the mean of
    ``|colors - (mean + basis @ rho) * shading(normals)|`` over pixels and channels.

    ``colors`` (N, 3) photo 0..1, ``normals`` (N, 3) view-frame unit normals, ``mean`` (N, 3) and
    ``basis`` (N, 3, K) the albedo model at the pixels. Iteratively re-weighted least squares for
    the absolute loss, alternating rho (light fixed) and light (albedo fixed), both linear;
    ``prior`` adds ``prior * |rho|^2`` (rho in units of the components) to the per-value loss.
    Returns (rho, light, Loss4).
    """
    I = np.asarray(colors, dtype=np.float64)
    B = sh_basis(normals)
    N, K = len(I), basis.shape[2]
    light, _ = fit_light(I, normals, albedo=mean, robust="huber", iters=3)
    rho = np.zeros(K)
    for _ in range(iters):
        shade = B @ light  # (N, 3)
        # rho: rows (pixel, channel): I - shade * mean = shade * basis @ rho
        A = (shade[:, :, None] * basis).reshape(3 * N, K)
        y = (I - shade * mean).reshape(3 * N)
        r = y - A @ rho
        wr = robust_weights(r, "l1")
        AtW = A.T * wr
        # |r| ~ w r^2 / 2 with w = 1 / |r|: the normal equations of Loss4 * 3N + 3N * prior * |rho|^2
        rho = np.linalg.solve(AtW @ A + 2 * y.size * prior * np.eye(K), AtW @ y)
        albedo = mean + basis @ rho
        w = robust_weights((I - albedo * shade).reshape(-1), "l1").reshape(N, 3)
        light, _ = fit_light(I, normals, albedo=albedo, weights=w, robust=None)
    albedo = mean + basis @ rho
    loss = float(np.abs(I - albedo * (B @ light)).mean())
    return rho, light, loss
