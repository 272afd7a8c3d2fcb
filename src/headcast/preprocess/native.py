"""MediaPipe, imported and set up with its native (C++) log lines kept off stderr.

MediaPipe's graphs write to the process's stderr (file descriptor 2) from C++: TensorFlow Lite's
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, absl's ``W0000 ...
inference_feedback_manager.cc ...`` and glog lines. They come while a graph loads its models, which
starts when the graph is made and goes on in MediaPipe's own threads, and would drown a command's
own output. The glog/TensorFlow environment variables are set before MediaPipe is imported; the
rest goes to /dev/null while :func:`quiet_graph` makes a graph and runs it once on a blank image
(which waits for every model to be loaded). Set ``HEADCAST_NATIVE_LOGS=1`` (the CLI's ``--debug``
does) to see the lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from headcast.core.errors import HeadcastError

NATIVE_LOGS_ENV = "HEADCAST_NATIVE_LOGS"


def native_logs_shown() -> bool:
    """Whether native log lines should reach stderr (``HEADCAST_NATIVE_LOGS`` set to anything but 0)."""
    return os.environ.get(NATIVE_LOGS_ENV, "0") not in ("", "0")


def import_mediapipe():
    """The ``mediapipe`` module, with glog and TensorFlow logging turned down first (unless shown)."""
    if not native_logs_shown():
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import mediapipe as mp
    except ImportError as e:  # pragma: no cover - dependency missing
        raise HeadcastError(f"MediaPipe is not installed ({e}); run the set-up or use --landmarks dlib") from None
    return mp


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (a no-op when native logs are shown).

    Python's own ``sys.stderr`` is flushed first; anything any thread writes to fd 2 meanwhile is lost,
    so keep the block to setting up MediaPipe.
    """
    if native_logs_shown():
        yield
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class QuietGraph:
    """A MediaPipe solution (FaceMesh, FaceDetection...) made and warmed up with fd 2 muted (see the
    module docstring); ``process`` also keeps MediaPipe's protobuf deprecation warnings quiet."""

    def __init__(self, make: Callable[[], Any]):
        with native_stderr_muted():
            self._graph = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._graph.process(np.zeros((64, 64, 3), np.uint8))  # returns once every model is loaded

    def process(self, image: np.ndarray):
        """The graph's result for an (H, W, 3) uint8 RGB image."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._graph.process(image)

    def close(self) -> None:
        self._graph.close()


def quiet_graph(make: Callable[[], Any]) -> QuietGraph:
    """``make()`` (a function that makes a MediaPipe solution) made quietly: see :class:`QuietGraph`."""
    return QuietGraph(make)
