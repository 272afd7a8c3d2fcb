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
import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from headcast.core.errors import HeadcastError

NATIVE_LOGS_ENV = "HEADCAST_NATIVE_LOGS"


def native_logs_shown() -> bool:
    """Whether native log lines should reach stderr (``HEADCAST_NATIVE_LOGS`` set to anything but 0)."""
    return os.environ.get(NATIVE_LOGS_ENV, "0") not in ("", "0")


SOLUTIONS = ("face_detection", "face_mesh", "face_mesh_connections")  # the MediaPipe solutions headcast uses


def import_mediapipe():
    """MediaPipe's Python API (``mediapipe.python``) with the solutions headcast uses loaded
    (``.solutions.face_detection``, ``.face_mesh``, ``.face_mesh_connections``); glog and TensorFlow
    logging are turned down first (unless shown).

    ``import mediapipe`` would run the package's ``__init__``, which imports every solution and their
    drawing utilities, and those import matplotlib.pyplot (1.4 of its 1.8 s). The two packages are loaded
    bare instead (:func:`_bare_package`) and only the modules above imported from them.
    """
    if not native_logs_shown():
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _LOADING:
            _bare_package("mediapipe")
            _bare_package("mediapipe.python.solutions")
        for name in SOLUTIONS:
            importlib.import_module(f"mediapipe.python.solutions.{name}")
    except ImportError as e:  # pragma: no cover - dependency missing
        raise HeadcastError(f"MediaPipe is not installed ({e}); run the set-up or use --landmarks dlib") from None
    return sys.modules["mediapipe.python"]


_LOADING = threading.Lock()  # the import system's module locks do not cover a hand-made package
_BARE: list[types.ModuleType] = []  # packages loaded without their __init__, outermost first


def _bare_package(name: str) -> types.ModuleType:
    """The package ``name`` in sys.modules without its ``__init__`` having run, so that single submodules
    can be imported from it (an already imported package is returned as it is).

    The first lookup of an attribute the bare package lacks (code elsewhere that did ``import mediapipe``
    and reads ``mediapipe.solutions.hands``) runs the ``__init__`` of every bare package after all,
    innermost first (``importlib.reload`` executes it in the same module object): then they are as
    complete as an ordinary import makes them.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"no package {name}")
    module = importlib.util.module_from_spec(spec)

    def complete(attr: str):
        for bare in reversed(_BARE):
            bare.__dict__.pop("__getattr__", None)
        for bare in reversed(_BARE):
            importlib.reload(bare)
        _BARE.clear()
        return getattr(module, attr)

    module.__getattr__ = complete
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:  # as the import system does for a submodule
        setattr(sys.modules[parent], child, module)
    _BARE.append(module)
    return module


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
