"""Find a head model by name or path: ``ict`` (the open default, built on first use), a name
in the model directory (``flame2020``...), or a path to a .npz file."""

from __future__ import annotations

import logging
from pathlib import Path

from headcast.core.errors import HeadcastError
from headcast.core.paths import models_dir
from headcast.model.head_model import HeadModel, load_model, save_model
from headcast.model.ict_version import VERSION

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "ict"


def model_path(name: str) -> Path:
    """Where the model called ``name`` lives in the model directory."""
    return models_dir() / f"{name}.npz"


def resolve_model(spec: str = DEFAULT_MODEL, *, build_missing: bool = True) -> HeadModel:
    """Load the model named or pointed to by ``spec``.

    ``ict`` is converted from ICT-FaceKit when missing (see ``headcast model build-ict``);
    other names must have been imported (``headcast model import-flame``).
    """
    p = Path(spec).expanduser()
    if p.suffix == ".npz" or p.is_file():
        return load_model(p)
    path = model_path(spec)
    if path.is_file():
        model = load_model(path)
        if spec != DEFAULT_MODEL or not build_missing or is_current_ict(model):
            return model
        logger.info("headcast: %s was built by another headcast version; rebuilding it", path)
    if spec == DEFAULT_MODEL and build_missing:
        from headcast.model.ict import build_ict_model  # heavy; only when needed

        logger.info("headcast: building the default head model (%s) into %s ...", spec, path)
        model = build_ict_model(src=None)
        save_model(model, path, force=True)  # a stale default model (checked above), or none
        return model
    known = sorted(q.stem for q in models_dir().glob("*.npz"))
    hint = f"; models here: {', '.join(known)}" if known else ""
    raise HeadcastError(f"no head model {spec!r} in {models_dir()}{hint} "
                        "(import FLAME with 'headcast model import-flame PKL')")


def on_disk(spec: str) -> bool:
    """Whether :func:`resolve_model` would read ``spec`` from a file rather than build it (a stale default
    model is still rebuilt on reading) or fail: whether it may be loaded before the input is known to be good."""
    p = Path(spec).expanduser()
    return p.suffix == ".npz" or p.is_file() or model_path(spec).is_file()


def is_current_ict(model: HeadModel) -> bool:
    """Whether ``model`` is the default model as this version of headcast builds it."""
    return model.meta.get("version") == VERSION
