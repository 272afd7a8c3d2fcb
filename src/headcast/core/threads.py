"""Thread counts of every native pool headcast uses (torch, OpenMP, BLAS, Open3D, OpenCV), chosen here once.

The count is the number of CPUs this process may run on (``os.sched_getaffinity``), unless
``HEADCAST_THREADS`` or else ``OMP_NUM_THREADS`` says otherwise. numpy's BLAS gets one thread unless
``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` says otherwise: headcast's dense products are tall and thin
((N, 3) points by (3, 3) rotations, Jacobians of a few hundred columns), where OpenBLAS's pool costs more
than it saves (on a busy 2-core machine the sweep texture's per-frame products took 0.07-0.14 s with two
threads against 0.01 s with one; a reconstruct used 7 % less CPU with one). Idle OpenMP threads sleep
instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless set): spinning threads of two processes
sharing the cores take the CPU from each other's working threads, and that, not the work, made
two fits at once take 3.5 times as long as one.

Environment variables only work before a library is loaded, so the command line calls :func:`apply`
before its heavy imports; :func:`apply` also sets the pools of libraries already loaded (torch,
OpenCV, numpy's OpenBLAS), so the Python API's entry points call it as well. It is idempotent.

A process that must use an explicit count whatever it inherited (a batch worker: N workers sharing N
cores, one thread each) is started with :func:`environment` and calls :func:`pin`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

OWN = "HEADCAST_THREADS"
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_OPENBLAS_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                   ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                   ("openblas_set_num_threads", "openblas_get_num_threads"))


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each pool gets and where the number came from."""

    count: int  # torch intra-op, OpenMP (torch, Open3D), OpenCV
    blas: int  # OpenBLAS / MKL (1 unless their own variables say otherwise)
    source: str  # "HEADCAST_THREADS", "OMP_NUM_THREADS" or "CPUs"

    def describe(self) -> str:
        """One line for ``--debug``."""
        loaded = ", ".join(m for m in ("torch", "cv2", "open3d.pybind") if m in sys.modules) or "none yet"
        return (f"threads: {self.count} (from {self.source}; torch intra-op {self.count}, "
                f"OpenMP {os.environ.get('OMP_NUM_THREADS')} {os.environ.get('OMP_WAIT_POLICY', '').lower()}, "
                f"BLAS {self.blas}, Open3D {self.count}, OpenCV {self.count}; libraries loaded: {loaded})")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def plan() -> ThreadPlan:
    """The counts the environment and the machine call for (reads the environment each time)."""
    for name in (OWN, "OMP_NUM_THREADS"):
        n = _positive(name)
        if n is not None:
            break
    else:
        n, name = cpu_count(), "CPUs"
    blas = next((b for b in map(_positive, BLAS_VARS[:2]) if b is not None), 1)
    return ThreadPlan(count=n, blas=blas, source=name)


@functools.cache
def apply() -> ThreadPlan:
    """Set the environment for libraries not loaded yet and the pools of those already loaded; returns
    the plan. Runs once per process (later calls return the first plan)."""
    p = plan()
    os.environ.setdefault("OMP_NUM_THREADS", str(p.count))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", str(p.count))
    for name in BLAS_VARS:
        os.environ.setdefault(name, str(p.blas))
    if "torch" in sys.modules:
        set_torch_threads(p.count)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(p.count)
    if "open3d.pybind" in sys.modules:  # Open3D's TBB pool ignores OMP_NUM_THREADS
        sys.modules["open3d.pybind"].utility.set_max_threads(p.count)
    if "numpy" in sys.modules:
        set_openblas_threads(p.blas)
    return p


def environment(count: int) -> dict[str, str]:
    """The environment variables that give every pool of a process started with them ``count`` threads
    (overriding what it would inherit; for a Ray worker's runtime environment)."""
    n = str(int(count))
    return {OWN: n, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE", "OPENCV_FOR_THREADS_NUM": n,
            **{name: n for name in BLAS_VARS}}


def pin(count: int) -> ThreadPlan:
    """Give this process's pools exactly ``count`` threads, whatever its environment said: the environment
    for libraries not loaded yet, the pools of those loaded; later :func:`apply` calls return this plan."""
    os.environ.update(environment(count))
    apply.cache_clear()
    return apply()


def set_torch_threads(n: int) -> None:
    """torch's intra-op pool to ``n`` threads and its inter-op pool to one (headcast runs no parallel
    graphs; the inter-op count can only be set before torch's first parallel work, hence the guard)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # torch already ran parallel work
        pass


@functools.cache
def openblas() -> tuple | None:
    """(set, get) thread-count functions of the OpenBLAS numpy loaded, or None where there is none."""
    import numpy as np

    root = Path(np.__file__).parent
    for lib in sorted(root.parent.glob("numpy.libs/*openblas*")) + sorted(root.glob(".libs/*openblas*")):
        try:
            dll = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_NAMES:
            if hasattr(dll, set_name) and hasattr(dll, get_name):
                s, g = getattr(dll, set_name), getattr(dll, get_name)
                s.argtypes, g.restype = [ctypes.c_int], ctypes.c_int
                return s, g
    return None


def set_openblas_threads(n: int) -> None:
    """numpy's OpenBLAS to ``n`` threads (nothing where numpy's BLAS is not an OpenBLAS found)."""
    fns = openblas()
    if fns is not None:
        fns[0](n)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block numpy's BLAS uses one thread (restored after; nothing where numpy's BLAS is not an
    OpenBLAS found). For small dense algebra (tens to a few hundred columns: the tracker's, the RGB-D
    fit's): OpenBLAS's pool costs more than it saves there, ten times more on a busy 2-core machine."""
    fns = openblas()
    if fns is None:
        yield
        return
    set_threads, get_threads = fns
    before = int(get_threads())
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)


_OPEN3D_SERIAL = threading.Lock()
_open3d_serial = {"depth": 0, "before": 0}  # blocks inside one_open3d_thread now, Open3D's count before the first


@contextmanager
def one_open3d_thread() -> Iterator[None]:
    """Within the block Open3D's pool (oneTBB) lends no worker threads, so each Open3D call runs on the thread
    that made it; the count it had is restored when the last such block (of any thread) ends (nothing where
    Open3D is not loaded). For Open3D calls whose result must not depend on the scheduling: ICP sums its
    J^T J, residuals and RMSE with ``tbb::parallel_reduce``, whose partial sums follow how the threads happened
    to split the points, so with two threads the same input gave transforms that differed in round-off, which
    the next iterations' correspondences grew to 0.1-0.6 mm (bench/RESULTS.md, "repeat"). Calls on several
    Python threads still run side by side (registration_icp leaves the GIL), each on its own thread. The limit
    is process-wide: other Open3D work meanwhile runs on its caller's thread too."""
    o3d = sys.modules.get("open3d.pybind")
    if o3d is None:
        yield
        return
    with _OPEN3D_SERIAL:
        if _open3d_serial["depth"] == 0:
            _open3d_serial["before"] = int(o3d.utility.get_max_threads())
            o3d.utility.set_max_threads(1)
        _open3d_serial["depth"] += 1
    try:
        yield
    finally:
        with _OPEN3D_SERIAL:
            _open3d_serial["depth"] -= 1
            if _open3d_serial["depth"] == 0:
                o3d.utility.set_max_threads(_open3d_serial["before"])


class Job:
    """``fn(*args)`` on a thread of its own when the plan has more than one thread, else run at the first
    :meth:`result`. For work beside a wait on native code that leaves the GIL (MediaPipe's graph, PNG
    encoding, ffmpeg). :meth:`result` returns its value, or raises in the caller's thread what it raised.
    The thread is a daemon: a process that fails elsewhere does not wait for it."""

    def __init__(self, fn, *args, name: str = "headcast-job"):
        self._fn, self._args = fn, args
        self._value = self._error = None
        self._thread = self._ran = None
        if plan().count > 1:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as e:  # raised in the caller's thread by result()
            self._error = e

    def result(self):
        if self._thread is not None:
            self._thread.join()
        elif not self._ran:
            self._ran = True
            self._run()
        if self._error is not None:
            raise self._error
        return self._value
