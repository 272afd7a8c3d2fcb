"""headcast: an animatable 3D head from one RGB-D photo, driven by any video, on a CPU.

Units are metres inside the code; reports use millimetres.
"""

__version__ = "0.1.0"
