"""FLAME-shaped test files: a model pickle laid out like the official ones, and hostile pickles.

The official FLAME files cannot be downloaded here. :func:`write_flame_fixture` writes a pickle
with FLAME's keys, shapes and dtypes on FLAME's real topology (the mean head from
``head_template.obj``), with synthetic bases. By default it is written the way the official files
were (Python 2, protocol 2): strings as byte strings, arrays through
``numpy.core.multiarray._reconstruct``, ``shapedirs`` inside a ``chumpy.ch.Ch`` object and
``J_regressor`` as an old ``scipy.sparse.csc.csc_matrix``. ``style="py3"`` writes what Python 3
would (``numpy._core``, ``_codecs.encode`` bytes, ``scipy.sparse._csc``, a plain array).
"""

from __future__ import annotations

import builtins
import copyreg
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from headcast.io.mesh import read_obj

FILE_NAMES = {"2020": "generic_model.pkl", "2023": "flame2023.pkl", "2023_open": "flame2023_Open.pkl"}


class _Ch:
    """Pickles as ``chumpy.ch.Ch`` with chumpy's state (the array under ``x``)."""

    def __init__(self, x: np.ndarray):
        self.state = {"x": x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                      "_make_dense": False, "_make_sparse": False}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class _Csc:
    """Pickles as Python 2 scipy's ``scipy.sparse.csc.csc_matrix`` (state = the instance dict)."""

    def __init__(self, m: sp.csc_matrix):
        self.state = {"_shape": m.shape, "maxprint": 50, "format": "csc", "data": m.data,
                      "indices": m.indices, "indptr": m.indptr}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


_np_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
_np_scalar = np.float64(0).__reduce__()[0]
_PY2_NAMES = {
    id(_Ch): ("chumpy.ch", "Ch"),
    id(_Csc): ("scipy.sparse.csc", "csc_matrix"),
    id(_np_reconstruct): ("numpy.core.multiarray", "_reconstruct"),
    id(_np_scalar): ("numpy.core.multiarray", "scalar"),
}


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: byte strings instead of bytes/str, Python 2 module names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_global(self, obj, name=None):
        names = _PY2_NAMES.get(id(obj))
        if names is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{names[0]}\n{names[1]}\n".encode())
        self.memoize(obj)

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(data)
        self.write((pickle.SHORT_BINSTRING + bytes([n])) if n < 256 else
                   (pickle.BINSTRING + n.to_bytes(4, "little")))
        self.write(data)
        self.memoize(obj)

    def _save_str(self, obj):
        if obj.isascii():
            self._save_py2_str(obj)
        else:
            super().save_str(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_str


def _smooth_fields(v: np.ndarray, n: int, rms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, n) smooth displacement fields: random quadratic polynomials of position, RMS ``rms`` (n,)."""
    p = (v - v.mean(0)) / v.std(0)
    feats = np.concatenate([p, p ** 2, p[:, [0]] * p[:, [1]], p[:, [1]] * p[:, [2]], p[:, [0]] * p[:, [2]],
                            np.sin(2 * p), np.ones((len(v), 1))], 1)
    w = rng.normal(size=(feats.shape[1], 3, n))
    d = np.einsum("vf,fcn->vcn", feats, w)
    return d * (rms / np.sqrt((d ** 2).mean(axis=(0, 1))))


def _rig(v: np.ndarray, f: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """A FLAME-like J_regressor (5, V) and skinning weights (V, 5) from the mean head's geometry."""
    V = len(v)
    adj = sp.coo_matrix((np.ones(f.size), (f.ravel(), np.roll(f, 1, axis=1).ravel())), shape=(V, V))
    _, comp = connected_components(adj, directed=False)
    sizes = np.bincount(comp)
    balls = [c for c in np.argsort(sizes)[::-1][1:3]]
    left = max(balls, key=lambda c: v[comp == c, 0].mean())  # FLAME joint 3 is the left eye (+x)
    right = min(balls, key=lambda c: v[comp == c, 0].mean())
    y0, y1 = v[:, 1].min(), v[:, 1].max()
    y_mouth = y0 + 0.47 * (y1 - y0)
    groups = [
        np.nonzero(v[:, 1] < y0 + 0.005)[0],  # root: the bottom rim of the neck
        np.nonzero(np.abs(v[:, 1] - (y0 + 0.08)) < 0.004)[0],  # neck: a ring of the neck
        np.r_[[np.argsort(np.linalg.norm(v - [x, y_mouth, -0.02], axis=1))[:4] for x in (-0.045, 0.045)]].ravel(),
        np.nonzero(comp == left)[0],
        np.nonzero(comp == right)[0],
    ]
    rows = np.concatenate([np.full(len(g), j) for j, g in enumerate(groups)])
    cols = np.concatenate(groups)
    vals = np.concatenate([np.full(len(g), 1.0 / len(g)) for g in groups])
    jreg = sp.csc_matrix((vals, (rows, cols)), shape=(5, V))

    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    w = np.zeros((V, 5))
    w[:, 0] = sig((y0 + 0.03 - v[:, 1]) / 0.008)
    w[:, 2] = sig((y_mouth - v[:, 1]) / 0.006) * sig((v[:, 2] + 0.01) / 0.01) * sig((v[:, 1] - y0 - 0.09) / 0.006)
    w[:, 1] = np.clip(1 - w[:, 0] - w[:, 2], 0, None) + 1e-3
    w[comp == left] = [0, 0, 0, 1, 0]
    w[comp == right] = [0, 0, 0, 0, 1]
    return jreg, w / w.sum(1, keepdims=True)


def flame_fixture_arrays(template_obj: str | Path, seed: int = 0) -> dict:
    """The fixture's arrays (official key names), dense: v_template, f, shapedirs, posedirs,
    J_regressor (scipy csc), weights, kintree_table, J, bs_style, bs_type."""
    rng = np.random.default_rng(seed)
    mesh = read_obj(template_obj)
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces.astype(np.uint32)
    rms = np.r_[0.004 / (1 + np.arange(300) / 20), 0.002 / (1 + np.arange(100) / 20)]
    shapedirs = _smooth_fields(v, 400, rms, rng)
    posedirs = _smooth_fields(v, 36, np.full(36, 0.001), rng)
    jreg, weights = _rig(v, f.astype(np.int64))
    return {
        "v_template": v, "f": f, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": jreg,
        "weights": weights, "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": jreg @ v, "bs_style": "lbs", "bs_type": "lrotmin",
    }


def write_flame_fixture(path: str | Path, seed: int = 0, version: str = "2020", style: str = "py2",
                        template_obj: str | Path | None = None, overrides: dict | None = None) -> Path:
    """Write a FLAME-shaped model pickle; returns its path.

    Args:
        path: a file, or a folder to write the official file name of ``version`` into.
        seed: seeds the synthetic bases.
        version: '2020', '2023' or '2023_open' (chooses the file name when ``path`` is a folder).
        style: 'py2' (as the official files: chumpy Ch, old scipy and numpy names, byte strings)
            or 'py3' (protocol 2 from Python 3, plain arrays).
        template_obj: FLAME's head_template.obj (default: the shared assets folder beside the repo).
        overrides: replace or add keys (e.g. a wrongly shaped array) before writing.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAMES[version]
    if template_obj is None:
        template_obj = Path(__file__).resolve().parents[1].parent / "shared/models/flame-assets/head_template.obj"
    data = flame_fixture_arrays(template_obj, seed)
    data.update(overrides or {})
    if style == "py2":
        data["shapedirs"] = _Ch(data["shapedirs"])
        if sp.issparse(data["J_regressor"]):
            data["J_regressor"] = _Csc(sp.csc_matrix(data["J_regressor"]))
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(data)
        path.write_bytes(buf.getvalue())
    elif style == "py3":
        path.write_bytes(pickle.dumps(data, protocol=2))
    else:
        raise ValueError(f"unknown style {style!r}")
    return path


# hostile files ------------------------------------------------------------------------------------
class _Reduce:
    """Unpickles by calling ``fn(*args)``: how a pickle runs code."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class Gadget:
    """An ordinary class whose __setstate__ has a side effect (writes ``marker``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text("gadget ran")


def _flame_like(payload) -> dict:
    return {"v_template": np.zeros((3, 3)), "f": np.zeros((1, 3), np.uint32), "shapedirs": payload}


def write_malicious_files(folder: str | Path, marker: str | Path) -> dict[str, Path]:
    """Pickles that would create ``marker`` if unpickled naively; returns name -> path.

    os_system (``os.system`` via __reduce__), builtins_eval (``eval``), unknown_class (an ordinary
    class with a side effect in __setstate__), inside_chumpy (``eval`` hidden in a chumpy state),
    npy_payload (a .npy object array whose pickle payload calls ``eval``), torch_storage (a .npy
    like DECA's whose torch storage calls ``os.system``).
    """
    folder = Path(folder)
    marker = str(marker)
    code = f"open({marker!r}, 'w').write('eval ran')"
    payloads = {
        "os_system": _flame_like(_Reduce(os.system, f"touch '{marker}'")),
        "builtins_eval": _flame_like(_Reduce(builtins.eval, code)),
        "unknown_class": _flame_like(Gadget(marker)),
    }
    out = {}
    for name, obj in payloads.items():
        out[name] = folder / f"{name}.pkl"
        # protocol 4 for eval: STACK_GLOBAL, and Python 3's module name (protocol 2 writes __builtin__)
        out[name].write_bytes(pickle.dumps(obj, protocol=4 if name == "builtins_eval" else 2))
    ch = _Ch(np.zeros(3))
    ch.state["x"] = _Reduce(builtins.eval, code)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_flame_like(ch))
    out["inside_chumpy"] = folder / "inside_chumpy.pkl"
    out["inside_chumpy"].write_bytes(buf.getvalue())
    out["npy_payload"] = folder / "npy_payload.npy"
    out["npy_payload"].write_bytes(_npy_bytes(_Reduce(builtins.eval, code)))
    out["torch_storage"] = folder / "torch_storage.npy"
    out["torch_storage"].write_bytes(_npy_bytes({"dynamic_lmk_faces_idx": _torch_storage_payload(marker)}))
    return out


def _torch_storage_payload(marker: str):
    """DECA's file stores tensors as torch storages in torch's legacy format, which torch unpickles
    with its full unpickler; this one's storage record calls ``os.system`` instead."""
    import torch.storage

    legacy = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    legacy += pickle.dumps(_Reduce(os.system, f"touch '{marker}'"), protocol=2)
    return _Reduce(torch.storage._load_from_bytes, legacy)


def _npy_bytes(obj) -> bytes:
    """A .npy file holding a 0-d object array whose pickle payload is ``obj``."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
    return f.getvalue() + pickle.dumps(obj, protocol=3)


def write_zip_bomb(path: Path, member: str = "v_template.npy", chunks: int = 200) -> int:
    """A ~3 MB .npz whose one member inflates to chunks * 16 MiB of zeros (an honest zip directory;
    the CRC is left 0: a reader that inflates everything fails only at the end). Returns the inflated size."""
    n = chunks << 24
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n // 8,)})
    zeros = bytes(1 << 24)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header.getvalue() + zeros) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_SYNC_FLUSH)  # the compressor's state repeats from here
    data = first + again * (chunks - 1) + c.flush()
    size = len(header.getvalue()) + n
    name = member.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, 0, len(data), size, len(name), 0) + name
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, 0, len(data), size, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return size
