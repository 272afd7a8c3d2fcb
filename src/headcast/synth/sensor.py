"""Depth-sensor profiles: how a clean ray-cast depth map becomes a realistic one.

A profile adds, in this order: axial noise with standard deviation ``sigma(z) = k * z^2``
(spatially correlated over ``noise_corr_px``), millimetre quantisation, and holes: pixels the
projector (structured light) or the second camera (stereo) cannot see, grazing surfaces, a band
along depth discontinuities, random small dropouts and the working range.

Figures (z in metres, sigma in metres):

- ``truedepth`` (iPhone front structured-light camera): k = 2.9e-3 /m, i.e. 0.26 mm at 0.3 m and
  0.73 mm at 0.5 m. Measured on the three StandardCyborg TrueDepth frames in
  ``../shared/samples/rgbd`` (residual of local quadratic fits on the head at 0.27-0.30 m, with the
  1 mm quantisation removed in quadrature); Breitbarth et al. (SPIE 11144, 2019) report accuracy
  "in the millimetre range" for the same sensor. The projector sits 21 mm from the IR camera (from
  the width of the shadow band beside the head in those frames, 20 px at fx = 299 px); in an
  upright image the shadow falls on the left of the head, so the projector is placed at +x.
- ``zed2`` (Stereolabs ZED 2, passive stereo): sigma = z^2 * sigma_d / (fx * b) with baseline
  b = 0.12 m (datasheet), fx the depth image's focal length in pixels and a disparity noise
  sigma_d = 0.5 px (a conservative figure for weakly textured skin; the datasheet's "< 1 % up to
  3 m" corresponds to about 0.2 px at HD720). At fx = 600 px: 1.7 mm at 0.5 m. Points the right
  camera (+0.12 m in x) does not see have no depth.
- ``none``: the exact ray-cast depth, float metres, no noise, holes or quantisation (the uint16
  PNG written by :func:`headcast.synth.io.write_sample` is still rounded to millimetres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from headcast.core.errors import HeadcastError


@dataclass(frozen=True)
class SensorProfile:
    """Parameters of a depth-sensor model (metres, pixels, degrees).

    Attributes:
        name: profile name.
        noise_k: sigma(z) = noise_k * z^2 (1/m); used when ``disparity_noise_px`` is None.
        disparity_noise_px: stereo disparity noise; then noise_k = this / (fx * |baseline|).
        noise_corr_px: Gaussian correlation length of the noise field (0 = white).
        baseline: (x, y, z) position of the projector or second camera in the camera frame; None =
            no occlusion shadows.
        grazing_deg: holes start at the first incidence angle (ray vs normal) and are certain at the second.
        edge_px: pixels closer than this to a depth jump have no depth.
        edge_jitter_px: a further ragged band of up to this width.
        jump_m: a depth difference between neighbouring pixels above ``jump_m + jump_rel * z`` is a jump.
        jump_rel: relative part of the jump threshold.
        dropouts_per_mpx: small hole blobs per million pixels.
        dropout_radius_px: largest blob radius.
        z_range: valid depth range.
        quantum_m: depth quantisation step (0 = none).
        color_noise: standard deviation of the colour image's noise, in 0..1 units.
    """

    name: str
    noise_k: float = 0.0
    disparity_noise_px: float | None = None
    noise_corr_px: float = 0.0
    baseline: tuple[float, float, float] | None = None
    grazing_deg: tuple[float, float] = (90.0, 90.0)
    edge_px: float = 0.0
    edge_jitter_px: float = 0.0
    jump_m: float = 0.01
    jump_rel: float = 0.02
    dropouts_per_mpx: float = 0.0
    dropout_radius_px: float = 0.0
    z_range: tuple[float, float] = (0.0, np.inf)
    quantum_m: float = 0.0
    color_noise: float = 0.0

    def sigma(self, z: np.ndarray | float, fx: float) -> np.ndarray:
        """Noise standard deviation (metres) at depth ``z`` metres for an image of focal ``fx`` px."""
        return self.k(fx) * np.asarray(z, dtype=np.float64) ** 2

    def k(self, fx: float) -> float:
        """The coefficient k of sigma = k z^2 (1/m)."""
        if self.disparity_noise_px is not None:
            return self.disparity_noise_px / (fx * float(np.linalg.norm(self.baseline)))
        return self.noise_k


PROFILES = {
    "none": SensorProfile("none"),
    "truedepth": SensorProfile(
        "truedepth", noise_k=2.9e-3, noise_corr_px=0.0, baseline=(0.021, 0.0, 0.0), grazing_deg=(76.0, 88.0),
        edge_px=1.0, edge_jitter_px=1.5, dropouts_per_mpx=15.0, dropout_radius_px=3.0, z_range=(0.15, 5.0),
        quantum_m=0.001, color_noise=0.008),
    "zed2": SensorProfile(
        "zed2", disparity_noise_px=0.5, noise_corr_px=2.5, baseline=(0.12, 0.0, 0.0), grazing_deg=(65.0, 80.0),
        edge_px=2.0, edge_jitter_px=3.0, dropouts_per_mpx=40.0, dropout_radius_px=4.0, z_range=(0.3, 20.0),
        quantum_m=0.001, color_noise=0.012),
}


def get_profile(profile: str | SensorProfile) -> SensorProfile:
    """A profile by name (none, truedepth, zed2) or as given."""
    if isinstance(profile, SensorProfile):
        return profile
    if profile not in PROFILES:
        raise HeadcastError(f"unknown depth noise profile {profile!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[profile]


def correlated_normal(shape: tuple[int, int], rng: np.random.Generator, corr_px: float) -> np.ndarray:
    """A zero-mean Gaussian random field with unit variance per pixel, correlated over ``corr_px``."""
    x = rng.standard_normal(shape)
    if corr_px <= 0:
        return x
    r = int(np.ceil(4 * corr_px))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / corr_px) ** 2)
    k /= k.sum()
    y = ndimage.correlate1d(ndimage.correlate1d(x, k, axis=0, mode="reflect"), k, axis=1, mode="reflect")
    return y / (k ** 2).sum()  # separable kernel: per-pixel std of the filtered field is sum(k^2)


def depth_jumps(depth: np.ndarray, jump_m: float, jump_rel: float) -> np.ndarray:
    """Pixels (H, W) bool next to a depth discontinuity (both sides), or next to a pixel without depth."""
    d = np.where(depth > 0, depth, np.inf)
    out = np.zeros(depth.shape, dtype=bool)
    for axis in (0, 1):
        a = np.take(d, np.arange(d.shape[axis] - 1), axis=axis)
        b = np.take(d, np.arange(1, d.shape[axis]), axis=axis)
        with np.errstate(invalid="ignore"):
            jump = ~(np.abs(a - b) <= jump_m + jump_rel * np.minimum(a, b))
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        out[tuple(lo)] |= jump
        out[tuple(hi)] |= jump
    return out & (depth > 0)


def sensor_depth(depth_clean: np.ndarray, cos_incidence: np.ndarray, shadowed: np.ndarray, fx: float,
                 profile: str | SensorProfile, rng: np.random.Generator) -> np.ndarray:
    """Turn a clean depth map into the profile's sensor output.

    Args:
        depth_clean: (H, W) exact z-depth in metres, 0 where nothing was hit.
        cos_incidence: (H, W) |cos| of the angle between the viewing ray and the surface normal.
        shadowed: (H, W) bool, surface points the projector or second camera cannot see.
        fx: focal length in pixels (for the stereo noise formula).
        profile: a name or a SensorProfile.
        rng: the noise generator.

    Returns:
        (H, W) float32 depth in metres, 0 = no depth.
    """
    p = get_profile(profile)
    z = np.asarray(depth_clean, dtype=np.float64)
    valid = z > 0
    if p == PROFILES["none"]:
        return np.where(valid, z, 0).astype(np.float32)
    H, W = z.shape
    noise = correlated_normal((H, W), rng, p.noise_corr_px)
    out = z + p.sigma(z, fx) * noise
    if p.quantum_m > 0:
        out = np.round(out / p.quantum_m) * p.quantum_m

    holes = ~valid | (z < p.z_range[0]) | (z > p.z_range[1])
    if p.baseline is not None:
        holes |= shadowed
    a0, a1 = np.cos(np.deg2rad(p.grazing_deg[0])), np.cos(np.deg2rad(p.grazing_deg[1]))
    if a0 > a1:
        p_graze = np.clip((a0 - cos_incidence) / (a0 - a1), 0, 1)
        holes |= ndtr(correlated_normal((H, W), rng, 1.0)) < p_graze
    if p.edge_px > 0 or p.edge_jitter_px > 0:
        jumps = depth_jumps(z, p.jump_m, p.jump_rel)
        if jumps.any():
            dist = ndimage.distance_transform_edt(~jumps)
            ragged = ndtr(correlated_normal((H, W), rng, 2.0))  # uniform 0..1, blobby
            holes |= dist < p.edge_px + p.edge_jitter_px * ragged
    n_blobs = rng.poisson(p.dropouts_per_mpx * H * W / 1e6)
    if n_blobs and p.dropout_radius_px > 0:
        yy, xx = np.mgrid[0:H, 0:W]
        for cy, cx, r in zip(rng.uniform(0, H, n_blobs), rng.uniform(0, W, n_blobs),
                             rng.uniform(0.7, p.dropout_radius_px, n_blobs)):
            y0, y1, x0, x1 = int(cy - r - 1), int(cy + r + 2), int(cx - r - 1), int(cx + r + 2)
            sl = (slice(max(y0, 0), y1), slice(max(x0, 0), x1))
            holes[sl] |= (yy[sl] - cy) ** 2 + (xx[sl] - cx) ** 2 <= r * r
    return np.where(holes | (out <= 0), 0, out).astype(np.float32)
