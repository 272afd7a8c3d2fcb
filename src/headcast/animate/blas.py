"""Run small dense linear algebra on one BLAS thread.

The tracker's matrices are tiny (tens to a few hundred columns); OpenBLAS's thread pool costs more
than it saves there, ten times more on a busy 2-core machine. :func:`one_blas_thread` switches
numpy's OpenBLAS to one thread for a block and restores it after; where numpy's BLAS is not an
OpenBLAS it finds, it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
          ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
          ("openblas_set_num_threads", "openblas_get_num_threads"))


@functools.cache
def _openblas():
    """(set, get) functions of the OpenBLAS numpy loaded, or None."""
    root = Path(np.__file__).parent
    for lib in sorted(root.parent.glob("numpy.libs/*openblas*")) + sorted(root.glob(".libs/*openblas*")):
        try:
            dll = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            if hasattr(dll, set_name) and hasattr(dll, get_name):
                s, g = getattr(dll, set_name), getattr(dll, get_name)
                s.argtypes, g.restype = [ctypes.c_int], ctypes.c_int
                return s, g
    return None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block numpy's BLAS uses one thread."""
    fns = _openblas()
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
