"""headcast: an animatable 3D head from one RGB-D photo, driven by any video, on a CPU.

Units are metres inside the code; reports use millimetres. Progress goes to the ``headcast`` logger
(silent unless configured: the command line sends it to stderr).
"""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headcast")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())
