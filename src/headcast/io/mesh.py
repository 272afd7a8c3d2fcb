"""Wavefront OBJ reading and writing (plain ``.obj`` or xz-compressed ``.obj.xz``).

Polygons are fan-triangulated on reading. Texture coordinates keep the OBJ
convention (origin bottom-left).
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes, size_text


@dataclass
class ObjMesh:
    """vertices (V, 3), faces (F, 3) int32, uv (T, 2) or None, uv_faces (F, 3) or None,
    materials: per-triangle material name index into ``material_names`` (F,) or None."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    face_material: np.ndarray | None = None
    material_names: tuple[str, ...] = ()


MAX_OBJ_BYTES = 256 << 20  # an OBJ's text (after xz decompression); FLAME's head template is 0.6 MB


def _read_text(path: Path) -> str:
    """The OBJ's text, within MAX_OBJ_BYTES (an ``.xz`` is decompressed only that far)."""
    data = read_bytes(path, "mesh file", MAX_OBJ_BYTES)
    if path.suffix == ".xz":
        try:
            d = lzma.LZMADecompressor()
            data = d.decompress(data, MAX_OBJ_BYTES + 1)
        except lzma.LZMAError as e:
            raise HeadcastError(f"{path} is not a readable OBJ file (xz: {e})") from None
        if len(data) > MAX_OBJ_BYTES:
            raise HeadcastError(f"mesh file {path} decompresses to more than the {size_text(MAX_OBJ_BYTES)} "
                                "headcast reads")
        if not d.eof:
            raise HeadcastError(f"{path} is not a readable OBJ file (a truncated .xz)")
    return data.decode("utf-8", "replace")


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """Only the ``v`` lines of an OBJ as (V, 3) float64 (fast: for meshes sharing a topology)."""
    text = _read_text(Path(path))
    rows = [ln[2:] for ln in text.splitlines() if ln.startswith("v ")]
    return np.array(" ".join(rows).split(), dtype=np.float64).reshape(len(rows), -1)[:, :3]


def read_obj(path: str | Path) -> ObjMesh:
    """Read an OBJ's vertices, triangulated faces, texture coordinates and materials."""
    path = Path(path)
    text = _read_text(path)
    try:
        return _parse_obj(text, path)
    except (ValueError, IndexError) as e:  # unparsable numbers or indices
        raise HeadcastError(f"{path} is not a readable OBJ file ({e.__class__.__name__})") from None


def _parse_obj(text: str, path: Path) -> ObjMesh:
    verts, uvs, faces, uv_faces, mats = [], [], [], [], []
    names: dict[str, int] = {}
    current = -1
    for ln in text.splitlines():
        if ln.startswith("v "):
            verts.append(ln[2:])
        elif ln.startswith("vt "):
            uvs.append(ln[3:])
        elif ln.startswith("usemtl "):
            current = names.setdefault(ln[7:].strip(), len(names))
        elif ln.startswith("f "):
            corners = [c.split("/") for c in ln[2:].split()]
            vi = [int(c[0]) for c in corners]
            ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
            for k in range(1, len(vi) - 1):
                faces.append((vi[0], vi[k], vi[k + 1]))
                uv_faces.append((ti[0], ti[k], ti[k + 1]))
                mats.append(current)
    if not verts or not faces:
        raise HeadcastError(f"{path} has no vertices or faces")
    V = np.array(" ".join(verts).split(), dtype=np.float64).reshape(len(verts), -1)[:, :3]
    f = np.array(faces, dtype=np.int64)
    f = np.where(f < 0, f + len(V), f - 1)  # OBJ: 1-based, negative = relative
    uv = uvf = None
    if uvs:
        uv = np.array(" ".join(uvs).split(), dtype=np.float64).reshape(len(uvs), -1)[:, :2]
        t = np.array(uv_faces, dtype=np.int64)
        if (t != 0).all():
            uvf = np.where(t < 0, t + len(uv), t - 1).astype(np.int32)
    fm = np.array(mats, dtype=np.int32) if names else None
    return ObjMesh(V, f.astype(np.int32), uv, uvf if uv is not None else None, fm, tuple(names))


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
              uv_faces: np.ndarray | None = None, mtl_name: str | None = None,
              material: str | None = None) -> None:
    """Write a triangle mesh; with ``uv`` and ``uv_faces`` also texture coordinates.

    ``mtl_name`` adds ``mtllib``; ``material`` adds ``usemtl``.
    """
    parts = [f"mtllib {mtl_name}\n"] if mtl_name else []
    parts.append(_rows("v %.6f %.6f %.6f\n", np.asarray(vertices, dtype=np.float64)))
    f1 = np.asarray(faces, dtype=np.int64) + 1
    if uv is not None and uv_faces is not None:
        parts.append(_rows("vt %.6f %.6f\n", np.asarray(uv, dtype=np.float64)))
        if material:
            parts.append(f"usemtl {material}\n")
        t1 = np.asarray(uv_faces, dtype=np.int64) + 1
        parts.append(_rows("f %d/%d %d/%d %d/%d\n", np.stack([f1, t1], axis=2).reshape(len(f1), 6)))
    else:
        if material:
            parts.append(f"usemtl {material}\n")
        parts.append(_rows("f %d %d %d\n", f1))
    Path(path).write_text("".join(parts))


def _rows(line: str, table: np.ndarray) -> str:
    """``line`` (a %-format of one row) applied to every row of the (n, k) table, one formatting call."""
    return (line * len(table)) % tuple(table.ravel().tolist())


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None,
              colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: vertices (V, 3) metres, optional faces (F, 3), colors (V, 3) uint8."""
    v = np.asarray(vertices, dtype=np.float32)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    vdt = [("p", "<f4", 3)]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vdt.append(("c", "u1", 3))
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    rec = np.zeros(len(v), dtype=vdt)
    rec["p"] = v
    if colors is not None:
        rec["c"] = np.asarray(colors, dtype=np.uint8)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode())
        fh.write(rec.tobytes())
        if faces is not None:
            frec = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
            frec["n"] = 3
            frec["i"] = np.asarray(faces)
            fh.write(frec.tobytes())
