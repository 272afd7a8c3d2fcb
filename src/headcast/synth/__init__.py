"""Synthetic RGB-D subjects with exact ground truth (``headcast synth``).

:func:`random_subject` draws a head (identity, expression, pose, placement, skin albedo, SH light);
:func:`render_rgbd` ray-casts it with a wall and shoulders into colour + depth and applies a depth
sensor profile (``none``, ``truedepth``, ``zed2``); :func:`write_sample` / :func:`synth` write the
``../shared/samples/rgbd`` layout plus ground truth; :func:`read_sample` reads it back.
"""

from headcast.synth.io import (
                               GT_KEYS,
                               default_intrinsics,
                               load_beta,
                               parse_expressions,
                               read_sample,
                               synth,
                               write_sample,
)
from headcast.synth.render import SynthFrame, render_rgbd
from headcast.synth.sensor import PROFILES, SensorProfile, get_profile
from headcast.synth.subject import SynthSubject, random_subject, subject_geometry

__all__ = ["GT_KEYS", "PROFILES", "SensorProfile", "SynthFrame", "SynthSubject", "default_intrinsics",
           "get_profile", "load_beta", "parse_expressions", "random_subject", "read_sample", "render_rgbd",
           "subject_geometry", "synth", "write_sample"]
