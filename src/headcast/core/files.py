"""Reading an input file within bounds: regular files only, the size checked before reading, JSON with
bounded nesting and number literals. Every refusal is a one-line HeadcastError naming the file.

The bottom of the one validation layer (:mod:`headcast.io.arrays` reads ``.npy``/``.npz`` and
:mod:`headcast.io.validate` images, depth, PLY and numbers on top of it). It lives in ``core`` so that
``core.camera.Intrinsics.from_json`` can use it. The bounds are documented in docs/guarantees.md.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from headcast.core.errors import HeadcastError

MAX_JSON_BYTES = 1 << 20   # 1 MiB: intrinsics, lighting and reports are a few kB
MAX_JSON_DEPTH = 32        # nesting of arrays and objects
MAX_INT_DIGITS = 20        # digits of a JSON integer literal (2**64 has 20)
_CHUNK = 1 << 20


def size_text(n: int) -> str:
    """A byte count for people: ``'3.2 MB'``."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def check_input_file(path: str | Path, what: str, max_bytes: int) -> int:
    """Refuse ``path`` unless it is an existing, readable regular file of at most ``max_bytes``; returns its
    size. Folders, devices (``/dev/zero``), FIFOs and sockets are refused before anything is opened."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise HeadcastError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise HeadcastError(f"cannot read {what} {p}: {reason(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise HeadcastError(f"{what} {p} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise HeadcastError(f"{what} {p} is not a regular file (a device, pipe or socket)")
    if st.st_size > max_bytes:
        raise HeadcastError(f"{what} {p} is {size_text(st.st_size)}, more than the {size_text(max_bytes)} "
                            "headcast reads")
    if not os.access(p, os.R_OK):
        raise HeadcastError(f"cannot read {what} {p}: permission denied")
    return st.st_size


def read_bytes(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The content of a regular file of at most ``max_bytes`` (checked again while reading: files that
    report size 0, like those in /proc, or that grow, are still bounded)."""
    p = Path(path)
    check_input_file(p, what, max_bytes)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, should a FIFO replace the file
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise HeadcastError(f"{what} {p} is not a regular file (a device, pipe or socket)")
            # read(n) allocates n bytes up front: ask for the size the file reports, then for the rest
            parts = [f.read(min(st.st_size, max_bytes) + 1)]
            got = len(parts[0])
            while parts[-1] and got <= max_bytes:
                parts.append(f.read(min(_CHUNK, max_bytes + 1 - got)))
                got += len(parts[-1])
            data = b"".join(parts)
    except OSError as e:
        raise HeadcastError(f"cannot read {what} {p}: {reason(e)}") from None
    if len(data) > max_bytes:
        raise HeadcastError(f"{what} {p} is more than the {size_text(max_bytes)} headcast reads")
    return data


class _Refused(ValueError):
    pass


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(s.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(s)


def _parse_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise _Refused(f"the number {s[:20]}{'...' if len(s) > 20 else ''}, which overflows a float")
    return f


def _parse_constant(s: str) -> float:
    raise _Refused(f"{s}, which is not a JSON number")


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar 0, ``[]`` 1, ``[[1]]`` 2), without recursion."""
    depth, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d + 1)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def read_json(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """Parse a JSON file within bounds: a regular file of at most ``max_bytes``, then :func:`parse_json`."""
    return parse_json(read_bytes(path, what, max_bytes), f"{what} {path}", max_depth)


def parse_json(data: bytes, source: str, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON bytes (a file's, or a member of one) within bounds: UTF-8, nesting at most ``max_depth``,
    integers of at most MAX_INT_DIGITS digits, finite numbers only (``NaN``, ``Infinity`` and ``1e999`` are
    refused). ``source`` names the data in the error: "SOURCE is not valid JSON (...)"."""
    try:
        text = data.decode("utf-8-sig")
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except UnicodeDecodeError:
        raise HeadcastError(f"{source} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise HeadcastError(f"{source} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except _Refused as e:
        raise HeadcastError(f"{source} holds {e}") from None
    except RecursionError:
        raise HeadcastError(f"{source} is nested deeper than {max_depth} levels") from None
    if json_depth(value) > max_depth:
        raise HeadcastError(f"{source} is nested deeper than {max_depth} levels")
    return value


def reason(e: OSError) -> str:
    """An OSError's reason as a lower-case phrase: ``'no space left on device'``."""
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]
