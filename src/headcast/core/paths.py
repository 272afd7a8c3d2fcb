"""Where headcast keeps its files: models and caches.

``HEADCAST_HOME`` overrides the default, the user's cache directory
(``~/.cache/headcast`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """The headcast data directory (created on demand)."""
    env = os.environ.get("HEADCAST_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("headcast"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Directory holding converted head models (``<name>.npz``)."""
    d = home() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d
