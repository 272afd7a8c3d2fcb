"""Run small dense linear algebra on one BLAS thread.

The tracker's matrices are tiny (tens to a few hundred columns); OpenBLAS's thread pool costs more
than it saves there, ten times more on a busy 2-core machine. :func:`one_blas_thread` switches
numpy's OpenBLAS to one thread for a block and restores it after; where numpy's BLAS is not an
OpenBLAS it finds, it does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from headcast.core.threads import openblas


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block numpy's BLAS uses one thread."""
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
