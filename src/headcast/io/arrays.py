"""Bounded reading of NumPy's ``.npy`` and ``.npz`` files: sizes are checked before anything is read.

A ``.npz`` is a zip of ``.npy`` members. :func:`read_npz` reads the zip directory first and refuses
a file with more than ``max_members`` members or more than ``max_bytes`` uncompressed (per member and
in total), then checks each member's ``.npy`` header (shape and dtype) against the member's size
before reading its data, so a small file can never make it allocate more than ``max_bytes``. Object
(pickled) arrays are refused. Every failure is a one-line :class:`HeadcastError` naming the file.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from headcast.core.errors import HeadcastError

MAX_BYTES = 256 << 20    # default bound on the uncompressed data of one file (256 MiB)
MAX_MEMBERS = 1024       # default bound on the arrays of one .npz
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
        raise HeadcastError(f"cannot read {source}: not a .npy array ({str(e)[:80]})") from None
    shape = tuple(int(n) for n in shape)
    if min(shape, default=0) < 0:
        raise HeadcastError(f"cannot read {source}: its header has a negative size {shape}")
    return NpyHeader(shape, dtype, bool(fortran), math.prod(shape) * dtype.itemsize)


def read_npy_body(f: BinaryIO, h: NpyHeader, source: str | Path) -> np.ndarray:
    """The array after header ``h`` (plain dtypes only), read in chunks into one writable buffer."""
    if h.dtype.hasobject:
        raise HeadcastError(f"cannot read {source}: it holds Python objects (pickled data), which is not allowed")
    buf = bytearray(h.data_bytes)
    view, got = memoryview(buf), 0
    try:
        while got < h.data_bytes:
            n = f.readinto(view[got:got + (16 << 20)])
            if not n:
                break
            got += n
    except _ZIP_ERRORS as e:
        raise HeadcastError(f"cannot read {source}: {e.__class__.__name__}: {str(e)[:80]}") from None
    if got != h.data_bytes:
        raise HeadcastError(f"cannot read {source}: truncated ({got} of {h.data_bytes} bytes of data)")
    try:
        a = np.frombuffer(buf, dtype=h.dtype)
        return a.reshape(h.shape[::-1]).T if h.fortran else a.reshape(h.shape)
    except ValueError as e:
        raise HeadcastError(f"cannot read {source}: {str(e)[:80]}") from None


def _checked_members(zf: zipfile.ZipFile, path: Path, max_bytes: int, max_members: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > max_members:
        raise HeadcastError(f"{path} has {len(infos)} arrays; at most {max_members} are read")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise HeadcastError(f"{path} holds {total / 1e6:.1f} MB of arrays uncompressed; "
                            f"at most {max_bytes / 1e6:.0f} MB are read")
    for i in infos:
        if not i.filename.endswith(".npy"):
            raise HeadcastError(f"{path}: member {i.filename[:60]!r} is not a .npy array")
    return infos


def read_npz(path: str | Path, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS,
             kind: str = "readable .npz file") -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``path`` (member name without ``.npy`` -> array).

    At most ``max_members`` members and ``max_bytes`` bytes of uncompressed data (all members
    together), both checked from the zip directory and each ``.npy`` header before any data is
    read; pickled (object) arrays are refused. HeadcastError naming the file on any problem
    (``kind`` names what the file should have been: "PATH is not a KIND (reason)").
    """
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist" if not path.exists() else f"{path} is not a regular file")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in _checked_members(zf, path, max_bytes, max_members):
                source = f"{path} (array {info.filename[:-4]!r})"
                with zf.open(info) as f:
                    h = read_npy_header(f, source)
                    if not h.dtype.hasobject and h.data_bytes + f.tell() != info.file_size:
                        raise HeadcastError(f"cannot read {source}: its header announces {h.shape} {h.dtype} "
                                            f"({h.data_bytes} bytes), the member holds {info.file_size} bytes")
                    out[info.filename[:-4]] = read_npy_body(f, h, source)
    except _ZIP_ERRORS as e:
        raise HeadcastError(f"{path} is not a {kind} ({e.__class__.__name__}: {str(e)[:80]})") from None
    return out


def read_npy(path: str | Path, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The plain (non-object) array in the ``.npy`` file at ``path``, at most ``max_bytes`` of data,
    its header checked against the file's size before the data is read."""
    path = Path(path)
    if not path.is_file():
        raise HeadcastError(f"{path} does not exist" if not path.exists() else f"{path} is not a regular file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = read_npy_header(f, path)
        if h.data_bytes > max_bytes:
            raise HeadcastError(f"{path} announces {h.data_bytes / 1e6:.1f} MB of data; at most {max_bytes / 1e6:.0f} MB are read")
        if not h.dtype.hasobject and f.tell() + h.data_bytes != size:
            raise HeadcastError(f"cannot read {path}: its header announces {h.shape} {h.dtype} "
                                f"({h.data_bytes} bytes), the file holds {size - f.tell()} bytes of data")
        return read_npy_body(f, h, path)
