"""A restricted unpickler for FLAME's files: numbers in, never code.

FLAME's model (``generic_model.pkl``, ``flame2023*.pkl``), its landmark embeddings and
region masks are pickles, many written by Python 2 with ``chumpy`` objects inside, and
DECA's ``landmark_embedding.npy`` is an object array holding torch tensors. A plain
unpickle imports and calls whatever the file names, so here every global the file asks
for is checked against a short allow-list:

- numpy arrays, dtypes and scalars (``numpy.core`` and ``numpy._core`` spellings);
- scipy's csc/csr/coo matrices, read as plain state and rebuilt after loading;
- chumpy's classes (``chumpy.ch.Ch``, ``chumpy.reordering.*``, ``chumpy.ch_ops.*``), mapped
  to :class:`ChumpyStub`, which only keeps its state (the array of a ``Ch`` is ``state['x']``);
- ``set``, ``frozenset``, ``OrderedDict`` and ``object``, ``copyreg._reconstructor`` (Python-2
  new-style objects, checked) and ``_codecs.encode`` (Python-3 bytes, latin-1 only);
- torch tensors of DECA's file, rebuilt as numpy arrays without importing torch.

Anything else raises ``HeadcastError("refusing to load <file>: it asks for <module.name>, ...")``
before it is imported or called.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp
from numpy.lib import format as npy_format

from headcast.core.errors import HeadcastError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, OverflowError, UnicodeDecodeError, struct.error, RecursionError)


class _Refused(Exception):
    """A global outside the allow-list; becomes the HeadcastError naming the file."""


class ChumpyStub:
    """Stand-in for a chumpy object: keeps the pickled state, runs nothing.

    ``chumpy_class`` is the original ``module.name``; a plain ``Ch`` holds its array in ``state['x']``.
    """

    chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args, **kwargs):  # pickle's NEWOBJ calls __new__ only
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"<{self.chumpy_class} stand-in, keys {sorted(self.state)}>"

    @property
    def array(self) -> np.ndarray:
        """The object's value; only chumpy objects that store it (``x``) can give it."""
        if "x" not in self.state:
            raise HeadcastError(f"a {self.chumpy_class} object without a stored array cannot be read "
                                "without chumpy")
        return np.asarray(to_array(self.state["x"]))


class _SparseStub:
    """Pickled state of an old or new scipy sparse matrix, rebuilt by :func:`_finish`."""

    fmt = "csc"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}

    def build(self) -> sp.spmatrix:
        s = self.state
        shape = tuple(int(n) for n in s.get("_shape", s.get("shape", ())))
        try:
            if self.fmt == "coo":
                row = s["row"] if "row" in s else s["coords"][0]
                col = s["col"] if "col" in s else s["coords"][1]
                return sp.coo_matrix((s["data"], (row, col)), shape=shape)
            make = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
            return make((s["data"], s["indices"], s["indptr"]), shape=shape)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise HeadcastError(f"a pickled {self.fmt} sparse matrix is malformed ({e})") from None


def _sparse_stub(fmt: str) -> type:
    return type(f"{fmt}_matrix_stub", (_SparseStub,), {"fmt": fmt})


_SPARSE = {fmt: _sparse_stub(fmt) for fmt in ("csc", "csr", "coo")}
_CHUMPY_MODULES = ("chumpy", "chumpy.ch", "chumpy.reordering", "chumpy.ch_ops")
_chumpy_classes: dict[str, type] = {}


def _chumpy_stub(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _chumpy_classes:
        _chumpy_classes[key] = type(f"{name}Stub", (ChumpyStub,), {"chumpy_class": key})
    return _chumpy_classes[key]


def _reconstructor(cls, base, state):
    """Python 2's ``copy_reg._reconstructor`` for the stand-ins only (base ``object``, no state)."""
    if not (isinstance(cls, type) and issubclass(cls, (ChumpyStub, _SparseStub))) or base is not object \
            or state is not None:
        raise pickle.UnpicklingError("copy_reg._reconstructor used for something other than a "
                                     "chumpy or sparse object")
    return cls()


def _codecs_encode(text, encoding="utf-8"):
    """Python 3 writes ``bytes`` at protocol 2 as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin1")


# torch tensors in DECA's landmark_embedding.npy -----------------------------------------
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
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], np.dtype)):
            raise pickle.UnpicklingError("unexpected persistent id in a torch storage")
        return pid


def _storage_from_bytes(blob: bytes) -> np.ndarray:
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


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` as a numpy copy, bounds checked."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor without a storage")
    size = tuple(int(n) for n in size)
    stride = tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError("tensor has a malformed size or stride")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError("tensor reaches outside its storage")
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], size, strides, writeable=False).copy()


# the allow-list ---------------------------------------------------------------------------
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "object"): object,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}
for _m in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_m, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_m, "scalar")] = _np_scalar
for _fmt, _stub in _SPARSE.items():
    for _m in ("scipy.sparse", f"scipy.sparse.{_fmt}", f"scipy.sparse._{_fmt}"):
        _ALLOWED[(_m, f"{_fmt}_matrix")] = _stub


class FlameUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see the module docstring).

    ``source`` names the file in error messages. Python 2 strings decode as latin-1.
    """

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, encoding="latin1", fix_imports=False)
        self.source = source

    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module in _CHUMPY_MODULES and name.isidentifier() and name[:1].isupper():
            return _chumpy_stub(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def _finish(obj: Any, depth: int = 0) -> Any:
    """Replace sparse stand-ins by scipy matrices inside dicts, lists and chumpy states."""
    if depth > 20:
        return obj
    if isinstance(obj, _SparseStub):
        return obj.build()
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _finish(v, depth + 1)
    elif isinstance(obj, list):
        obj[:] = [_finish(v, depth + 1) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    elif isinstance(obj, ChumpyStub):
        _finish(obj.state, depth + 1)
    return obj


def loads_safe(data: bytes, source: str = "pickle data") -> Any:
    """Unpickle ``data`` through :class:`FlameUnpickler`; any failure is a one-line HeadcastError."""
    return _load_stream(io.BytesIO(data), source)


def _load_stream(f: BinaryIO, source: str) -> Any:
    try:
        obj = FlameUnpickler(f, source).load()
    except HeadcastError:
        raise
    except _Refused as e:
        raise HeadcastError(f"refusing to load {source}: it asks for {e}, which a FLAME file never contains") from None
    except _READ_ERRORS as e:
        raise HeadcastError(f"cannot read {source}: it is truncated or not a pickle "
                            f"({e.__class__.__name__}: {str(e)[:80]})") from None
    return _finish(obj)


def load_safe(path: str | Path) -> Any:
    """Load the pickle at ``path`` safely (latin-1, allow-listed globals only)."""
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist")
    with open(path, "rb") as f:
        return _load_stream(f, str(path))


def load_npy_safe(path: str | Path) -> Any:
    """Load a ``.npy`` file; an object array's pickle payload goes through the same allow-list.

    A 0-d object array (how ``np.save`` stores a dict) returns the object itself.
    """
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist")
    with open(path, "rb") as f:
        try:
            major, _ = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
            shape, _fortran, dtype = read_header(f)
        except (ValueError, OSError, SyntaxError) as e:
            raise HeadcastError(f"cannot read {path}: not a .npy file ({str(e)[:80]})") from None
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise HeadcastError(f"cannot read {path}: {str(e)[:80]}") from None
        arr = _load_stream(f, str(path))
    if not isinstance(arr, np.ndarray) or arr.shape != shape:
        raise HeadcastError(f"cannot read {path}: its pickle payload is not the array its header announces")
    return arr[()] if arr.shape == () else arr


def to_array(x: Any) -> np.ndarray:
    """A dense numpy array from an array, a chumpy stand-in, a scipy sparse matrix or a list."""
    if isinstance(x, ChumpyStub):
        return x.array
    if sp.issparse(x):
        return np.asarray(x.toarray())
    return np.asarray(x)
