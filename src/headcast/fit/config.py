"""Settings of the RGB-D fit (kept free of heavy imports so the CLI can show its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FitConfig:
    """Weights and iteration caps (a block stops earlier once a step lowers its loss by less than
    ``rel_tol``). Lengths in metres; weights multiply mean squared errors."""

    w_landmarks_block2: float = 3e-4  # landmark term beside L3D (detected landmarks carry mm-level bias)
    # Identity and expression priors beside the point cloud. The point term is a mean over n points,
    # so w_beta = sigma^2 / n is the MAP weight for per-point noise sigma (beta ~ N(0, 1)). None: sigma
    # is measured from the fit's own point-to-mesh residuals halfway through block 2 (noise plus model
    # mismatch, at least sigma_floor_mm); a number fixes the weight. w_psi = psi_prior_ratio * w_beta.
    w_beta: float | None = None
    w_psi: float | None = None
    psi_prior_ratio: float = 100.0    # chosen on synthetic seeds 5001-5006 (psi in [0, 1], beta ~ N(0, 1))
    sigma_start_mm: float = 2.0       # sigma assumed before it is measured (first half of block 2)
    sigma_floor_mm: float = 0.25      # the smallest sigma the priors assume
    w_beta_sparse: float = 1e-6       # the same priors when only landmarks constrain the shape
    w_psi_sparse: float = 1e-6        # (landmarks-3d and rgb-2d baselines)
    w_jaw: float = 1e-6               # jaw rotation prior (radians^2)
    w_log_scale: float = 1e-4         # placement scale prior (depth is metric: s near 1)
    iters_block1: int = 8
    iters_block2: int = 20            # half with the assumed noise, half with the measured (30 until issue 14)
    iters_block3: int = 5             # beta alone on L3D after block 2 has converged: 5 steps suffice
    iters_2d_pose: int = 6            # rgb-2d: pose and translation alone first
    iters_2d: int = 25
    lm_damping_2d: float = 1e-3       # rgb-2d keeps the start its figures were measured with
    max_points: int = 7000            # face points used per step (random, seeded; 8000 until issue 14)
    trim_mm: float = 10.0             # correspondences farther than this are ignored after block 1
    grow_mm: float = 4.0              # > 0: after block 2, add depth points this close to the fitted face
    iters_grow: int = 6               # block 2 steps on the grown region (10 until issue 14)
    lm_damping: float = 1e-5          # each block's first Levenberg-Marquardt damping, times the normal
                                      # matrix's diagonal (1e-3 until issue 14: its first steps were short)
    rel_tol: float = 1e-3             # a block stops when a step lowers its loss by less than this fraction
    seed: int = 0
