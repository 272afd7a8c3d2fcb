"""The process's memory allocator: glibc's malloc asked to keep freed large blocks for the next request.

By default glibc hands every block over 128 KiB to its own ``mmap`` and gives it back on ``free``; only once
such a block has been freed does it raise that threshold (at most to 32 MiB) and keep later ones. The fit's
arrays (a 7000 x 163 Jacobian is 9 MB) are made and dropped every step, so while the threshold is low each
one is new memory from the kernel, page-faulted in again: about 0.3 s of system time in a reconstruction,
and in every further fit of a long-lived process (a batch worker: 85-93 thousand page faults a fit). The
program (``cli.main``) and each batch worker set the thresholds at start.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # bytes: blocks below this come from the heap and are reused (glibc's largest)
TRIM_THRESHOLD = 64 << 20  # bytes of free memory at the heap's top kept rather than returned


def keep_freed_blocks() -> bool:
    """Set glibc's thresholds (this process, from now on); False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
