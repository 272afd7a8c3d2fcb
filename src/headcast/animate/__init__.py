"""Animation: drive a reconstructed head with a video of anyone (the paper's animation stage).

- :mod:`.rig`: the landmark and pupil points of the model in closed form, with Jacobians.
- :mod:`.fit`: one frame's Loss5 fit (pose, jaw, eyes, expression, eta; a pinhole at the video's nominal focal length).
- :mod:`.identity`: the driver's own shape and landmark offsets from calibration frames.
- :mod:`.track`: the tracker (identity once, then warm-started frames; no face holds the last frame).
- :mod:`.video`: decoding and MediaPipe FaceMesh in tracking mode.
- :mod:`.pipeline`: ``headcast animate`` (outputs, preview video, report).
- :mod:`.builtin`: the scripted motion video with ground truth; :mod:`.metrics`: jitter, errors.
"""

from headcast.animate.fit import Observation, TrackConfig
from headcast.animate.track import TrackedFrame, Tracker

__all__ = ["Observation", "TrackConfig", "TrackedFrame", "Tracker", "animate", "builtin_motion_video"]


def __getattr__(name):  # the pipeline pulls in MediaPipe, torch and OpenGL: load it on first use
    if name == "animate":
        from headcast.animate import pipeline

        return getattr(pipeline, name)
    if name == "builtin_motion_video":
        from headcast.animate.builtin import builtin_motion_video

        return builtin_motion_video
    raise AttributeError(name)
