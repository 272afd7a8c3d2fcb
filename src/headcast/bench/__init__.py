"""Benchmarks behind ``headcast bench ...``; figures go to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def shared_samples() -> Path:
    """``../shared/samples`` beside the repository (may be absent: callers say so and skip)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "samples"


def machine() -> str:
    """One line describing this machine for result tables."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
