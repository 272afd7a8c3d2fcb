"""Second-order spherical-harmonics (SH) lighting, in the convention of DECA-style FLAME fitters.

Lambertian irradiance from distant light is approximated by 9 SH terms per colour channel
(Ramamoorthi & Hanrahan 2001). For a unit normal ``n = (x, y, z)`` the shading is

    shading(n) = sum_k  L[k] * SH_CONST[k] * b_k(n)            (one value per RGB channel)

    b(n)      = [1, x, y, z, x*y, x*z, y*z, x^2 - y^2, 3*z^2 - 1]
    SH_CONST  = [1/sqrt(4 pi),
                 (2 pi/3) sqrt(3/(4 pi))  (x3),
                 (pi/4) 3 sqrt(5/(12 pi)) (x3),
                 (pi/4) (3/2) sqrt(5/(12 pi)),
                 (pi/4) (1/2) sqrt(5/(4 pi))]

so ``SH_CONST[k] * b_k`` is the real orthonormal SH function Y_k times the clamped-cosine
factor A_l (A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4) for k >= 1; the constant term carries
no factor pi (as DECA does), so ``L[0]`` is pi times the radiance coefficient. The image is
``albedo * shading``; ``L`` is a (9, 3) array (term, RGB) and a grey light of L[0] = sqrt(4 pi)
~ 3.545 alone gives shading 1.

Normals are in the **view frame**: camera axes with y and z negated (x right in the image, y up,
z towards the camera), i.e. ``n_view = FLIP @ n_cam``. That is the posed FLAME frame in which
DECA's renderer shades, so (9, 3) light arrays from such fitters can be used as they are.
"""

from __future__ import annotations

import numpy as np

from headcast.core.camera import FLIP

SH_CONST = np.array(
    [1 / np.sqrt(4 * np.pi)]
    + [(2 * np.pi / 3) * np.sqrt(3 / (4 * np.pi))] * 3
    + [(np.pi / 4) * 3 * np.sqrt(5 / (12 * np.pi))] * 3
    + [(np.pi / 4) * 1.5 * np.sqrt(5 / (12 * np.pi)), (np.pi / 4) * 0.5 * np.sqrt(5 / (4 * np.pi))]
)
_A = np.array([np.pi] + [2 * np.pi / 3] * 3 + [np.pi / 4] * 5)  # clamped-cosine factor per term


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """The 9 shading basis values ``SH_CONST[k] * b_k(n)`` for unit normals (..., 3) -> (..., 9)."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    b = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], axis=-1)
    return b * SH_CONST


def sh_shading(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Irradiance (..., 3) at unit view-frame normals (..., 3) under SH light ``sh`` (9, 3)."""
    n = np.asarray(normals, dtype=np.float64)
    c = SH_CONST[:, None] * np.asarray(sh, dtype=np.float64)  # (9, 3)
    x, y, z = (n[..., k : k + 1] for k in range(3))
    # term by term: much faster than a tall (N, 9) @ (9, 3) product
    return (c[0] - c[8] + x * c[1] + y * c[2] + z * c[3] + (x * y) * c[4] + (x * z) * c[5]
            + (y * z) * c[6] + (x * x - y * y) * c[7] + (3 * z * z) * c[8])


def sh_directional(direction: np.ndarray, color: np.ndarray) -> np.ndarray:
    """SH coefficients (9, 3) of a distant light from unit ``direction`` (view frame, pointing from
    the surface to the light) whose clamped-cosine irradiance is ``color * max(0, n . direction)``."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    # a delta light's radiance coefficients are Y_k(d) = SH_CONST[k] * b_k(d) / A_l for k >= 1;
    # the constant term is pi * Y_0(d) because SH_CONST[0] = Y_0 carries no factor pi
    y = sh_basis(d) / _A
    y[0] = np.pi * SH_CONST[0]
    return y[:, None] * np.asarray(color, dtype=np.float64)[None, :]


def sh_ambient(color: np.ndarray) -> np.ndarray:
    """SH coefficients (9, 3) of a uniform irradiance ``color`` (RGB) from every direction."""
    sh = np.zeros((9, 3))
    sh[0] = np.asarray(color, dtype=np.float64) / SH_CONST[0]
    return sh


def to_view(normals_cam: np.ndarray) -> np.ndarray:
    """Camera-frame normals (..., 3) -> the view frame of the SH lighting (x right, y up, z to the camera)."""
    return np.asarray(normals_cam) * np.diag(FLIP)


def sh_lambert(light_dir_cam, ambient: float) -> np.ndarray:
    """SH coefficients (9, 3) of a white light: uniform ``ambient`` plus a distant light of
    ``1 - ambient`` travelling along ``light_dir_cam`` (camera frame), the previews' neutral light."""
    d = -np.asarray(light_dir_cam, dtype=np.float64) * np.diag(FLIP)  # towards the light, view frame
    return sh_ambient(np.full(3, float(ambient))) + sh_directional(d, np.full(3, 1.0 - float(ambient)))


def sh_premultiplied(sh: np.ndarray) -> np.ndarray:
    """(9, 3) ``SH_CONST[k] * L[k]``: the coefficients a shader multiplies with the plain polynomials
    ``b(n) = [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]`` of a view-frame normal."""
    return SH_CONST[:, None] * np.asarray(sh, dtype=np.float64).reshape(9, 3)


# three.js's SphericalHarmonics3 / LightProbe: its shader's irradiance is sum_j c_j * _THREE_SCALE[j] * p_j(n)
# over the polynomials p = [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2] (n in world axes), and a Lambert
# material shows albedo * irradiance / pi; _THREE_TERM[j] is the headcast term of the same polynomial
_THREE_TERM = np.array([0, 2, 3, 1, 4, 6, 8, 5, 7])
_THREE_SCALE = np.array([0.886227, 2 * 0.511664, 2 * 0.511664, 2 * 0.511664, 2 * 0.429043, 2 * 0.429043,
                         0.247708, 2 * 0.429043, 0.429043])


def sh_threejs(sh: np.ndarray) -> np.ndarray:
    """three.js ``LightProbe`` coefficients (9, 3) that light a Lambert material like ``sh`` (9, 3) lights
    headcast's renders (``albedo * sh_shading``), with three's world axes as the SH view frame (glTF's:
    x right, y up, z towards the viewer)."""
    p = sh_premultiplied(sh)
    return np.pi * p[_THREE_TERM] / _THREE_SCALE[:, None]


def threejs_irradiance(normals: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """three.js's light-probe irradiance (..., 3) at unit normals (..., 3) (its shader's formula), for checks."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    p = np.stack([np.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1)
    return (p * _THREE_SCALE) @ np.asarray(coefficients, dtype=np.float64)


def sh_rotate(sh: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The SH light (9, 3) seen from a frame turned by ``R`` (3, 3, view frame): shading of ``R @ n`` under
    the result equals shading of ``n`` under ``sh``, i.e. ``sh_shading(n, out) = sh_shading(R.T @ n, sh)``
    (order-2 SH are closed under rotation, so the least-squares fit on a fixed spread of normals is exact)."""
    g = np.random.default_rng(0).normal(size=(64, 3))
    n = g / np.linalg.norm(g, axis=1, keepdims=True)
    B = sh_basis(n)
    target = sh_shading(n @ np.asarray(R, dtype=np.float64), sh)  # rows: (R.T @ n_i)^T = n_i^T R
    return np.linalg.lstsq(B, target, rcond=None)[0]
