"""The head model file: one ``.npz`` holding the model's arrays and a ``meta_json`` member.

Members: the arrays of :data:`ARRAYS` (required), :data:`OPTIONAL` and :data:`INTERIOR` (all or none), one ``mask_<region>`` int
array per region mask, and ``meta_json``: UTF-8 JSON bytes (uint8) of an object with
``format = "headcast-model"``, ``format_version`` (an integer, at most :data:`FORMAT_VERSION`),
``masks`` (the region names) and the model's own metadata (name, version, licence, units...).
Arrays are in metres and radians (see :class:`headcast.model.head_model.HeadModel` for shapes).

:func:`read_model_npz` checks sizes before reading (:func:`headcast.io.arrays.read_npz`), the
metadata (bounded JSON, :func:`headcast.core.files.parse_json`), that every array is present with its
rank, that there are faces and that the arrays are finite numbers
(:func:`headcast.io.validate.finite_array`); each problem is one :class:`HeadcastError` line naming the
file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import parse_json
from headcast.io.arrays import read_npz
from headcast.io.validate import finite_array

FORMAT = "headcast-model"
FORMAT_VERSION = 1
MASK_PREFIX = "mask_"
META = "meta_json"
# array name -> number of dimensions
ARRAYS = {"v_template": 2, "faces": 2, "shapedirs": 3, "exprdirs": 3, "posedirs": 3, "j_regressor": 2,
          "parents": 1, "lbs_weights": 2, "lmk_faces": 1, "lmk_bary": 2}
OPTIONAL = {"uv": 2, "uv_faces": 2, "dyn_lmk_faces": 2, "dyn_lmk_bary": 3}
# the render-only mouth interior (headcast.model.interior), all or none; its part names are meta["interior_parts"]
INTERIOR = {"interior_v_template": 2, "interior_faces": 2, "interior_shapedirs": 3, "interior_exprdirs": 3,
            "interior_lbs_weights": 2, "interior_colors": 2, "interior_part": 1}
MAX_BYTES = 1 << 30      # uncompressed; the ICT model is about 45 MB, FLAME 2020 about 30 MB
MAX_MEMBERS = 256
MAX_META_BYTES = 4 << 20


def write_model_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` (region masks as ``mask_<region>``) and ``meta`` to ``path``. Making it appear whole
    is the caller's part (:func:`headcast.io.outputs.staged_file`, as ``save_model`` does); an ``OSError``
    passes through for it to report."""
    path = Path(path)
    masks = sorted(k[len(MASK_PREFIX):] for k in arrays if k.startswith(MASK_PREFIX))
    full = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, masks=masks)
    members = dict(arrays)
    members[META] = np.frombuffer(json.dumps(full).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **members)
    return path


def _meta(path: Path, raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_META_BYTES:
        raise HeadcastError(f"{path}: its metadata is not a JSON text")
    meta = parse_json(raw.tobytes(), f"{path}: its metadata")
    if not isinstance(meta, dict):
        raise HeadcastError(f"{path}: its metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise HeadcastError(f"{path} is not a headcast model file")
    version = meta.get("format_version")
    if version is None:
        raise HeadcastError(f"{path} has no model format version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise HeadcastError(f"{path} has a bad model format version {str(version)[:20]!r}")
    if version > FORMAT_VERSION:
        raise HeadcastError(f"{path} has model format version {version}; "
                            f"this headcast reads up to {FORMAT_VERSION}: upgrade headcast")
    masks = meta.get("masks", [])
    if not isinstance(masks, list) or not all(isinstance(k, str) for k in masks):
        raise HeadcastError(f"{path}: its metadata's masks is not a list of region names")
    return meta


def _check_arrays(path: Path, data: dict[str, np.ndarray], masks: list[str]) -> None:
    missing = [k for k in ARRAYS if k not in data]
    if missing:
        raise HeadcastError(f"{path} lacks arrays: {', '.join(missing)}")
    for k in masks:
        if MASK_PREFIX + k not in data:
            raise HeadcastError(f"{path}: mask {k!r} names a missing array {MASK_PREFIX + k!r}")
    interior = [k for k in INTERIOR if k in data]
    if interior and len(interior) < len(INTERIOR):
        raise HeadcastError(f"{path} lacks interior arrays: {', '.join(k for k in INTERIOR if k not in data)}")
    for k, ndim in {**ARRAYS, **OPTIONAL, **INTERIOR}.items():
        if k in data:
            finite_array(data[k], f"{path}: {k}", (None,) * ndim)
    if data["faces"].shape[0] == 0 or data["v_template"].shape[0] == 0:
        raise HeadcastError(f"{path}: the model has no vertices or no faces")


def read_model_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (region masks as ``mask_<region>``) and metadata (without the format keys) of the
    model file at ``path``; HeadcastError naming the file for anything that is not a valid model."""
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"no head model file at {path}" if not path.exists() else f"{path} is not a regular file")
    data = read_npz(path, "model file", max_bytes=MAX_BYTES, max_members=MAX_MEMBERS, kind="headcast model file")
    if META not in data:
        raise HeadcastError(f"{path} is not a headcast model file (no metadata)")
    meta = _meta(path, data.pop(META))
    masks = meta.pop("masks", [])
    _check_arrays(path, data, masks)
    for k in ("format", "format_version"):
        meta.pop(k, None)
    arrays = {k: v for k, v in data.items() if k in ARRAYS or k in OPTIONAL or k in INTERIOR}
    arrays.update({MASK_PREFIX + k: data[MASK_PREFIX + k] for k in masks})
    return arrays, meta
