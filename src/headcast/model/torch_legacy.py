"""Torch tensors inside DECA's ``landmark_embedding.npy``, rebuilt as NumPy arrays without torch.

DECA pickled torch tensors with plain pickle: each is ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)`` over a storage saved by ``torch.storage._load_from_bytes`` in torch's
legacy (non-zip) format. :func:`storage_from_bytes` parses that format with its own restricted
unpickler (only torch's storage classes resolve) and :func:`rebuild_tensor` makes the strided copy,
bounds checked, its size counted against the load's budget before anything is allocated.
"""

from __future__ import annotations

import io
import math
import pickle
import struct

import numpy as np


class RefusedGlobal(Exception):
    """A pickle asked for a global outside the allow-list (the text is its ``module.name``)."""


_TORCH_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageUnpickler(pickle.Unpickler):
    """Reads the object record of torch's legacy format: one storage by persistent id."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _TORCH_STORAGES:
            return np.dtype(_TORCH_STORAGES[name])
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], np.dtype)):
            raise pickle.UnpicklingError("unexpected persistent id in a torch storage")
        return pid


def storage_from_bytes(blob: bytes) -> np.ndarray:
    """A torch storage saved with torch's legacy (non-zip) format -> 1-D numpy array.

    Layout: pickled magic number, protocol version, system info, the storage record (a
    persistent id naming dtype and key), the list of keys, then per key an int64 element
    count and the raw elements.
    """
    if not isinstance(blob, bytes):
        raise pickle.UnpicklingError("torch storage payload is not bytes")
    f = io.BytesIO(blob)

    def plain():
        return _StorageUnpickler(f).load()

    if plain() != _TORCH_LEGACY_MAGIC:
        raise pickle.UnpicklingError("torch storage payload lacks torch's magic number")
    plain()  # protocol version
    info = plain()
    little = bool(info.get("little_endian", True)) if isinstance(info, dict) else True
    pid = plain()
    keys = plain()
    _, dtype, key, _location, numel, view = pid[:6] if len(pid) >= 6 else (*pid, None)
    if not isinstance(keys, list) or key not in keys:
        raise pickle.UnpicklingError("torch storage keys are inconsistent")
    dtype = dtype.newbyteorder("<" if little else ">")
    arrays = {}
    for k in keys:
        (count,) = struct.unpack("<q" if little else ">q", f.read(8))
        raw = f.read(count * dtype.itemsize)
        if count < 0 or len(raw) != count * dtype.itemsize:
            raise pickle.UnpicklingError("torch storage data is truncated")
        arrays[k] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    out = arrays[key]
    if int(numel) != out.size:
        raise pickle.UnpicklingError("torch storage size does not match its record")
    if view is not None:  # (view key, offset, size): a slice of another storage
        _, offset, size = view
        out = out[int(offset): int(offset) + int(size)]
    return out


def rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None, *, budget):
    """``torch._utils._rebuild_tensor_v2`` as a numpy copy, bounds checked; its elements count
    against ``budget`` (``budget.elements(n, what)`` raises beyond the load's bound) before the copy."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor without a storage")
    size = tuple(int(n) for n in size)
    stride = tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError("tensor has a malformed size or stride")
    budget.elements(math.prod(size), "tensor elements")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError("tensor reaches outside its storage")
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], size, strides, writeable=False).copy()
