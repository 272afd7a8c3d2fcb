"""Bounded reading of NumPy's ``.npy`` and ``.npz`` files: sizes are checked before anything is read.

The one place headcast opens an ``.npy`` or ``.npz`` (pickled objects are never loaded here; the FLAME
importer sends object arrays through its own restricted unpickler). A ``.npz`` is a zip of ``.npy``
members: :func:`read_npz` reads the zip directory first and refuses a file with more than
``max_members`` members, more than ``max_bytes`` uncompressed, or inflating to more than
:data:`MAX_INFLATION` times its own size (a zip bomb), then checks each member's ``.npy`` header (shape
and dtype) against the member's size before reading its data. :func:`read_npy` checks the header of an
``.npy`` file against the file's size the same way, so a small file never allocates more than it holds.
Every failure is a one-line HeadcastError naming the file. The bounds are in docs/guarantees.md.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Collection

import numpy as np
from numpy.lib import format as npy_format

from headcast.core.errors import HeadcastError
from headcast.core.files import check_input_file, size_text

MAX_BYTES = 256 << 20        # default bound on the data of one file (256 MiB)
MAX_MEMBERS = 1024           # default bound on the arrays of one .npz
MAX_INFLATION = 32           # an .npz may hold at most 32 times its size in data ...
MIN_INFLATION_BYTES = 32 << 20  # ... or 32 MiB, whichever is more (np.savez does not compress at all)
_CHUNK = 16 << 20
_ZIP_SLACK = 4 << 20         # a file may exceed its data bound by its zip directory and .npy headers
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class NpyHeader:
    """A ``.npy`` header: shape, dtype, Fortran order, and the size in bytes of the data it announces."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_bytes: int


def read_npy_header(f: BinaryIO, source: str | Path) -> NpyHeader:
    """Read the magic and header of a ``.npy`` stream (positioned at its start); HeadcastError if malformed."""
    try:
        major, _ = npy_format.read_magic(f)
        if major not in (1, 2):
            raise ValueError(f"format version {major}")
        read = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, SyntaxError, TypeError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise HeadcastError(f"{source} is not a readable .npy array ({str(e)[:80]})") from None
    shape = tuple(int(n) for n in shape)
    if min(shape, default=0) < 0:
        raise HeadcastError(f"{source} is not a readable .npy array (its header has a negative size {shape})")
    return NpyHeader(shape, dtype, bool(fortran), math.prod(shape) * dtype.itemsize)


def _check_header(h: NpyHeader, source: str | Path, max_bytes: int, holds: int, where: str) -> None:
    """Refuse objects, data over ``max_bytes`` and a header announcing other than the ``holds`` bytes there."""
    if h.dtype.hasobject:
        raise HeadcastError(f"{source} holds Python objects (pickled data), which headcast does not load")
    if h.data_bytes > max_bytes:
        raise HeadcastError(f"{source}: its header announces {h.shape} {h.dtype} ({size_text(h.data_bytes)}), "
                            f"more than the {size_text(max_bytes)} headcast reads")
    if h.data_bytes != holds:
        state = "is truncated: its" if h.data_bytes > holds else "does not match its"
        raise HeadcastError(f"{source} {state} header announces {h.shape} {h.dtype} ({h.data_bytes} bytes), "
                            f"the {where} holds {holds} bytes of data")


def _read_body(f: BinaryIO, h: NpyHeader, source: str | Path) -> np.ndarray:
    """The array after header ``h``, read in chunks into one writable buffer."""
    buf = bytearray(h.data_bytes)
    view, got = memoryview(buf), 0
    try:
        while got < h.data_bytes:
            n = f.readinto(view[got:got + _CHUNK])
            if not n:
                break
            got += n
    except _ZIP_ERRORS as e:
        raise HeadcastError(f"cannot read {source}: {e.__class__.__name__}: {str(e)[:80]}") from None
    if got != h.data_bytes:
        raise HeadcastError(f"{source} is truncated ({got} of {h.data_bytes} bytes of data)")
    try:
        a = np.frombuffer(buf, dtype=h.dtype)
        return a.reshape(h.shape[::-1]).T if h.fortran else a.reshape(h.shape)
    except ValueError as e:
        raise HeadcastError(f"cannot read {source}: {str(e)[:80]}") from None


def _checked_members(zf: zipfile.ZipFile, path: Path, size: int, max_bytes: int, max_members: int,
                     names: Collection[str] | None) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if names is not None:
        infos = [i for i in infos if i.filename[:-4] in names]
    if len(infos) > max_members:
        raise HeadcastError(f"{path} has {len(infos)} arrays; at most {max_members} are read")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise HeadcastError(f"{path} holds {total / 1e6:.1f} MB of arrays uncompressed; "
                            f"at most {max_bytes / 1e6:.0f} MB are read")
    if total > max(MAX_INFLATION * size, MIN_INFLATION_BYTES):
        raise HeadcastError(f"{path} holds {total / 1e6:.1f} MB of arrays uncompressed in a {size_text(size)} "
                            f"file (a zip bomb?); at most {MAX_INFLATION} times the file's size are read")
    for i in infos:
        if not i.filename.endswith(".npy"):
            raise HeadcastError(f"{path}: member {i.filename[:60]!r} is not a .npy array")
    return infos


def read_npz(path: str | Path, what: str = "", *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS,
             kind: str = "readable .npz file", names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``path`` (member name without ``.npy`` -> array); with ``names``
    only those of them it holds (the others are neither read nor counted).

    ``what`` names the file in messages ("albedo model PATH ..."). The file must be a regular file; the
    zip directory and each member's ``.npy`` header are checked (count, sizes, inflation, no pickled
    objects) before any data is read. ``kind`` names what the file should have been: "PATH is not a KIND
    (reason)".
    """
    path = Path(path)
    # with ``names`` the other members may be of any size: they are never read
    size = check_input_file(path, what or "file", max_bytes + _ZIP_SLACK if names is None else 1 << 62)
    name = f"{what} {path}" if what else str(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in _checked_members(zf, path, size, max_bytes, max_members, names):
                source = f"{name} (array {info.filename[:-4]!r})"
                with zf.open(info) as f:
                    h = read_npy_header(f, source)
                    _check_header(h, source, max_bytes, info.file_size - f.tell(), "member")
                    out[info.filename[:-4]] = _read_body(f, h, source)
    except _ZIP_ERRORS as e:
        raise HeadcastError(f"{name} is not a {kind} ({e.__class__.__name__}: {str(e)[:80]})") from None
    return out


def read_npy(path: str | Path, what: str = "", *, max_bytes: int = MAX_BYTES, data: BinaryIO | None = None
             ) -> np.ndarray:
    """The plain (non-object) array in the ``.npy`` file at ``path`` (at most ``max_bytes`` of data), its
    header checked against the file's size before the data is read. ``data``: the file's content already
    read (a file object positioned anywhere), for callers that sniff the header themselves."""
    path = Path(path)
    source = f"{what} {path}" if what else str(path)
    if data is None:
        check_input_file(path, what or "file", max_bytes + 65536)
        with open(path, "rb") as f:
            return _read_npy(f, source, max_bytes)
    data.seek(0)
    return _read_npy(data, source, max_bytes)


def _read_npy(f: BinaryIO, source: str, max_bytes: int) -> np.ndarray:
    h = read_npy_header(f, source)
    start = f.tell()
    end = f.seek(0, 2)
    f.seek(start)
    _check_header(h, source, max_bytes, end - start, "file")
    return _read_body(f, h, source)


def need(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """``arrays[key]``, or an error naming the file that lacks it."""
    if key not in arrays:
        raise HeadcastError(f"{path} has no '{key}' array")
    return arrays[key]


def text(a: np.ndarray, what: str) -> str:
    """A 0-d string array (how an .npz stores a name) as str; ``what`` names it in the error."""
    x = np.asarray(a)
    if x.ndim != 0 or x.dtype.kind not in "US":
        raise HeadcastError(f"{what} must be a string")
    return str(x)
