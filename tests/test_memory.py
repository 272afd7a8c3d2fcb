"""glibc's malloc keeps freed large blocks once asked (``core.memory``): no page faults for arrays made again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHURN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from headcast.core import memory
    kept = memory.keep_freed_blocks() if sys.argv[1] == "keep" else None
    def churn():
        for _ in range(20):
            arrays = [np.ones(9 << 17) for _ in range(3)]  # three 9 MiB arrays, dropped together (a fit step's)
            del arrays
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds: Linux only")
def test_freed_blocks_are_reused_without_page_faults():
    _, plain = _faults("plain")
    kept, keep = _faults("keep")
    assert kept == "True"
    assert plain > 5000  # glibc's default: 27 MiB returned to the kernel and faulted in again every round
    assert keep < plain / 20
