"""The binary glTF 2.0 container (.glb): a 12-byte header, a JSON chunk (the document) and a BIN chunk
(one buffer), each chunk padded to 4 bytes; :class:`GlbBuffer` lays arrays out in the buffer as buffer
views and accessors. What the document says is :mod:`headcast.export.gltf`'s business.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import parse_json, read_bytes
from headcast.io.outputs import staged_file

logger = logging.getLogger(__name__)

FLOAT, UINT16, UINT32, UINT8 = 5126, 5123, 5125, 5121   # accessor componentType
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963       # bufferView target
_COMPONENT = {np.dtype(np.float32): FLOAT, np.dtype(np.uint16): UINT16, np.dtype(np.uint32): UINT32,
              np.dtype(np.uint8): UINT8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_MAGIC, _VERSION, _JSON, _BIN = b"glTF", 2, b"JSON", b"BIN\0"
MAX_GLB_BYTES = 1 << 30   # a GLB read back (a head with an hour of animation is ~100 MB)


class GlbBuffer:
    """Accumulates the binary chunk, buffer views and accessors of one GLB."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        """A buffer view of ``data`` (4-byte aligned); returns its index."""
        pad = (-self.offset) % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.offset += pad
        v = {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        self.chunks.append(data)
        self.offset += len(data)
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, a: np.ndarray, kind: str, target: int | None = None, bounds: bool = False,
                 normalized: bool = False) -> int:
        """An accessor of ``a`` (rows = elements; float32, uint8/16/32) of glTF type ``kind``; its index."""
        ctype = _COMPONENT[a.dtype]
        a = np.ascontiguousarray(a)
        acc = {"bufferView": self.view(a.tobytes(), target), "componentType": ctype,
               "count": int(a.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if bounds:
            flat = a.reshape(a.shape[0], -1)
            acc["min"] = flat.min(0).tolist()
            acc["max"] = flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def blob(self) -> bytes:
        """The BIN chunk's content, padded to 4 bytes."""
        data = b"".join(self.chunks)
        return data + b"\0" * ((-len(data)) % 4)


def write_glb(out: str | Path | BinaryIO | None, doc: dict, binary: bytes, *, force: bool = False) -> bytes:
    """Pack ``doc`` (the glTF JSON, without ``buffers``) and ``binary`` into a GLB; write it to ``out`` (a
    path: :func:`headcast.io.outputs.staged_file`, an existing file replaced only with ``force``; or a binary
    file object) unless None; return the bytes."""
    doc = dict(doc, buffers=[{"byteLength": len(binary)}])
    try:
        js = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        where = "" if out is None or hasattr(out, "write") else f"{out}: "
        raise HeadcastError(f"{where}the glTF document holds a non-finite number (NaN or inf)") from None
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    data = (struct.pack("<4sII", _MAGIC, _VERSION, total) + struct.pack("<I4s", len(js), _JSON) + js
            + struct.pack("<I4s", len(binary), _BIN) + binary)
    if out is None:
        return data
    if hasattr(out, "write"):
        out.write(data)
        return data
    with staged_file(out, force=force) as tmp:
        tmp.write_bytes(data)
    logger.debug("wrote %s (%d bytes)", out, len(data))
    return data


def read_glb(src: str | Path | bytes) -> tuple[dict, bytes]:
    """The document and the BIN chunk of a GLB file (or its bytes), its size and framing checked."""
    name = "GLB data" if isinstance(src, (bytes, bytearray)) else str(src)
    data = bytes(src) if isinstance(src, (bytes, bytearray)) else read_bytes(src, "glTF file", MAX_GLB_BYTES)
    if len(data) < 20:
        raise HeadcastError(f"{name} is too short for a GLB")
    magic, version, total = struct.unpack_from("<4sII", data)
    if magic != _MAGIC or version != _VERSION or total != len(data):
        raise HeadcastError(f"{name} is not a glTF 2.0 binary file (header {magic!r}, version {version}, "
                            f"{total} of {len(data)} bytes)")
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    if jtype != _JSON or 20 + jlen > len(data):
        raise HeadcastError(f"{name}: the first chunk is not the JSON document")
    doc = parse_json(data[20:20 + jlen], f"{name}: its JSON chunk")
    binary = b""
    if 20 + jlen + 8 <= len(data):
        blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
        if btype != _BIN or 28 + jlen + blen > len(data):
            raise HeadcastError(f"{name}: the second chunk is not the binary buffer")
        binary = data[28 + jlen:28 + jlen + blen]
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` of a GLB as (count, width) (or (count,) for scalars)."""
    a = doc["accessors"][index]
    v = doc["bufferViews"][a["bufferView"]]
    dt = {c: t for t, c in _COMPONENT.items()}[a["componentType"]]
    n = _WIDTH[a["type"]]
    arr = np.frombuffer(binary, dtype=dt, count=a["count"] * n, offset=v["byteOffset"] + a.get("byteOffset", 0))
    return arr.reshape(a["count"], n) if n > 1 else arr
