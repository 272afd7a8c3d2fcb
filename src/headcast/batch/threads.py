"""Thread counts of one batch worker, so that N workers on N cores do not oversubscribe them.

The OpenMP / BLAS pools (torch, numpy's OpenBLAS, Open3D, OpenCV) size themselves from the machine's
cores when they start; with one pool per worker process that is N x cores threads fighting for N
cores. :func:`thread_env` gives the environment that sizes them at start-up (it goes into the Ray
runtime environment, so it is set before any library loads in the worker); :func:`pin` sets the
pools that can be changed at run time.
"""

from __future__ import annotations

import os

ENV_NAMES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables giving every native thread pool ``threads`` threads."""
    return {name: str(int(threads)) for name in ENV_NAMES}


def pin(threads: int) -> None:
    """Set this process's torch and OpenCV pools to ``threads`` threads (and the environment, for pools
    created later)."""
    import cv2
    import torch

    os.environ.update(thread_env(threads))
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(int(threads))
    except RuntimeError:  # only allowed before torch's first parallel work; then it is already sized
        pass
    cv2.setNumThreads(int(threads))
