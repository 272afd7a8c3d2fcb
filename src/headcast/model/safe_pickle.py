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
- ``set``, ``frozenset``, ``OrderedDict``, ``bytes()`` (empty) and ``object``, ``copyreg._reconstructor`` (Python-2
  new-style objects, checked) and ``_codecs.encode`` (Python-3 bytes, latin-1 only);
- torch tensors of DECA's file, rebuilt as numpy arrays without importing torch.

Anything else raises ``HeadcastError("refusing to load <file>: it asks for <module.name>, ...")``
before it is imported or called. A loaded file is also bounded: at most :data:`MAX_OBJECTS` distinct
objects, nested at most :data:`MAX_DEPTH` deep, and at most :data:`MAX_ELEMENTS` array elements,
counting a list as the array it would become (a list referenced twice counts twice: a few hundred
bytes of shared nested lists would otherwise become an astronomically large array). Each object is
walked once, however often it is referenced.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes
from headcast.io.arrays import read_npy, read_npy_header
from headcast.model.torch_legacy import RefusedGlobal, rebuild_tensor, storage_from_bytes

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

MAX_OBJECTS = 2_000_000    # pickle opcodes, each makes at most one object
MAX_DEPTH = 100
MAX_OTHER_KEYS = 10_000
MAX_FILE_BYTES = 1 << 30
MAX_ELEMENTS = 30_000_000  # FLAME 2023's model file holds about 7 million
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, OverflowError, UnicodeDecodeError, struct.error, RecursionError)


class _Malformed(Exception):
    """An allowed object with impossible contents; becomes the HeadcastError naming the file."""


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
    """Pickled state of an old or new scipy sparse matrix, rebuilt by :meth:`build` after loading."""

    fmt = "csc"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}

    def build(self) -> sp.spmatrix:
        s = self.state
        try:
            shape = tuple(int(n) for n in s.get("_shape", s.get("shape", ())))
            if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_ELEMENTS:
                raise ValueError(f"shape {shape} is not a matrix of at most {MAX_ELEMENTS} elements")
            if self.fmt == "coo":
                row = s["row"] if "row" in s else s["coords"][0]
                col = s["col"] if "col" in s else s["coords"][1]
                return sp.coo_matrix((s["data"], (row, col)), shape=shape)
            make = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
            return make((s["data"], s["indices"], s["indptr"]), shape=shape)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise _Malformed(f"a pickled {self.fmt} sparse matrix is malformed ({str(e)[:100]})") from None


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


# the allow-list ---------------------------------------------------------------------------
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    ("builtins", "bytes"): lambda: b"",  # Python 3's protocol 2 writes b"" as bytes(); no arguments allowed
    ("__builtin__", "bytes"): lambda: b"",
    ("collections", "OrderedDict"): lambda: collections.OrderedDict(),  # no arguments: items come by SETITEMS
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch.storage", "_load_from_bytes"): storage_from_bytes,
}
for _m in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_m, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_m, "scalar")] = _np_scalar
for _fmt, _stub in _SPARSE.items():
    for _m in ("scipy.sparse", f"scipy.sparse.{_fmt}", f"scipy.sparse._{_fmt}"):
        _ALLOWED[(_m, f"{_fmt}_matrix")] = _stub


class _TooBig(Exception):
    """A bound of the module docstring exceeded; becomes the HeadcastError naming the file."""


class _Budget:
    """The bounds of one load: opcodes (objects) read, array elements of rebuilt tensors, and dict or
    set keys that are not text (crafted equal hashes would make building those quadratic)."""

    def __init__(self) -> None:
        self.ops = self.total = self.other_keys = 0

    def elements(self, n: int, what: str) -> None:
        self.total += n
        if self.total > MAX_ELEMENTS:
            raise _TooBig(f"more than {MAX_ELEMENTS} {what}")

    def keys(self, keys) -> None:
        self.other_keys += sum(type(k) not in (str, bytes) for k in keys)
        if self.other_keys > MAX_OTHER_KEYS:
            raise _TooBig(f"more than {MAX_OTHER_KEYS} dictionary or set keys that are not text")


def _keyed(kind: type, items=(), *, budget: _Budget):
    """``set(items)`` or ``frozenset(items)`` as a pickle's REDUCE makes them, keys checked first."""
    items = list(items)
    budget.keys(items)
    return kind(items)


class FlameUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler resolving only allow-listed globals (see the module docstring).

    The pure-Python one because its memo is a dict (the C unpickler sizes an array by the memo index
    a file names: ten bytes can ask for gigabytes) and its opcodes can be counted and checked.
    ``source`` names the file in error messages. Python 2 strings decode as latin-1.
    """

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, encoding="latin1", fix_imports=False)
        self.source = source
        self.budget = _Budget()

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return functools.partial(rebuild_tensor, budget=self.budget)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset"):
            return functools.partial(_keyed, set if name == "set" else frozenset, budget=self.budget)
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module in _CHUMPY_MODULES and name.isidentifier() and name[:1].isupper():
            return _chumpy_stub(module, name)
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise RefusedGlobal("a persistent id")

    # the opcodes that build dicts and sets: keys checked (the items since the MARK are self.stack)
    def load_dict(self):
        self.budget.keys(self.stack[::2])
        super().load_dict()

    def load_setitem(self):
        self.budget.keys(self.stack[-2:-1])
        super().load_setitem()

    def load_setitems(self):
        self.budget.keys(self.stack[::2])
        super().load_setitems()

    def load_additems(self):
        self.budget.keys(self.stack)
        super().load_additems()

    def load_frozenset(self):
        self.budget.keys(self.stack)
        super().load_frozenset()


def _counted(op):
    def run(self: FlameUnpickler) -> None:
        self.budget.ops += 1
        if self.budget.ops > MAX_OBJECTS:
            raise _TooBig(f"more than {MAX_OBJECTS} pickled objects")
        op(self)
    return run


FlameUnpickler.dispatch = {code: _counted(getattr(FlameUnpickler, op.__name__))
                           for code, op in pickle._Unpickler.dispatch.items()}


class _Walk:
    """One pass over an unpickled object graph: replaces sparse stand-ins by scipy matrices inside
    dicts, lists, tuples and chumpy states, visiting each object once (by identity) and bounding the
    distinct objects, the depth and the elements the structure would expand to."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[Any, int]] = {}   # id -> (result, expanded elements)
        self.alive: list = []                        # keeps visited objects alive so ids stay unique

    def visit(self, obj: Any, depth: int = 0) -> tuple[Any, int]:
        """(obj or its replacement, the number of elements it expands to)."""
        if not isinstance(obj, (dict, list, tuple, set, frozenset, np.ndarray, ChumpyStub, _SparseStub)):
            return obj, 1
        key = id(obj)
        if key in self.seen:
            return self.seen[key]
        if depth > MAX_DEPTH:
            raise _TooBig(f"objects nested more than {MAX_DEPTH} deep")
        self.seen[key] = (obj, 0)  # a reference back into an object being visited counts nothing
        self.alive.append(obj)
        result, n = self._children(obj, depth + 1)
        if n > MAX_ELEMENTS:
            raise _TooBig(f"more than {MAX_ELEMENTS} array elements")
        self.seen[key] = (result, n)
        return result, n

    def _children(self, obj: Any, depth: int) -> tuple[Any, int]:
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                return obj, sum(self.visit(x, depth)[1] for x in obj.flat)
            return obj, obj.size
        if isinstance(obj, _SparseStub):
            self.visit(obj.state, depth)
            m = obj.build()
            return m, m.shape[0] * m.shape[1]
        if isinstance(obj, ChumpyStub):
            return obj, self.visit(obj.state, depth)[1]
        if isinstance(obj, dict):
            n = 0
            for k, v in obj.items():
                obj[k], c = self.visit(v, depth)
                n += c
            return obj, n
        parts = [self.visit(v, depth) for v in obj]
        n = sum(c for _, c in parts)
        if isinstance(obj, list):
            obj[:] = [v for v, _ in parts]
        elif isinstance(obj, tuple):
            obj = tuple(v for v, _ in parts)
        return obj, n


def loads_safe(data: bytes, source: str = "pickle data") -> Any:
    """Unpickle ``data`` through :class:`FlameUnpickler`; any failure is a one-line HeadcastError."""
    return _load_stream(io.BytesIO(data), source)


def _load_stream(f: BinaryIO, source: str) -> Any:
    try:
        obj = FlameUnpickler(f, source).load()
        return _Walk().visit(obj)[0]
    except HeadcastError:
        raise
    except RefusedGlobal as e:
        raise HeadcastError(f"refusing to load {source}: it asks for {e}, which a FLAME file never contains") from None
    except _Malformed as e:
        raise HeadcastError(f"cannot read {source}: {e}") from None
    except _TooBig as e:
        raise HeadcastError(f"refusing to load {source}: it holds {e}, far more than a FLAME file") from None
    except _READ_ERRORS as e:
        raise HeadcastError(f"cannot read {source}: it is truncated or not a pickle "
                            f"({e.__class__.__name__}: {str(e)[:80]})") from None


def load_safe(path: str | Path, what: str = "FLAME file") -> Any:
    """Load the pickle at ``path`` safely (latin-1, allow-listed globals only, bounded). The file is read
    whole first (within MAX_FILE_BYTES), so lengths inside the pickle never size a read."""
    path = Path(path)
    return _load_stream(io.BytesIO(read_bytes(path, what, MAX_FILE_BYTES)), str(path))


def load_npy_safe(path: str | Path, what: str = "FLAME file") -> Any:
    """Load a ``.npy`` file; an object array's pickle payload goes through the same allow-list.

    A plain array is read with its header checked against the file's size first
    (:func:`headcast.io.arrays.read_npy`). A 0-d object array (how ``np.save`` stores a dict)
    returns the object itself.
    """
    path = Path(path)
    f = io.BytesIO(read_bytes(path, what, MAX_FILE_BYTES))
    header = read_npy_header(f, path)
    if not header.dtype.hasobject:
        return read_npy(path, what, max_bytes=8 * MAX_ELEMENTS, data=f)
    arr = _load_stream(f, str(path))
    if not isinstance(arr, np.ndarray) or arr.shape != header.shape:
        raise HeadcastError(f"cannot read {path}: its pickle payload is not the array its header announces")
    return arr[()] if arr.shape == () else arr


def to_array(x: Any) -> np.ndarray:
    """A dense numpy array from an array, a chumpy stand-in, a scipy sparse matrix or a list."""
    if isinstance(x, ChumpyStub):
        return x.array
    if sp.issparse(x):
        return np.asarray(x.toarray())
    return np.asarray(x)
