"""The INIT message's body (docs/protocol.md, INIT): what a receiver needs before the first frame,
written and parsed with every count checked against its cap and the bytes that remain."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE
from headcast.stream.wire import (
    COMPACT,
    ETA_SIZES,
    MAX_EXPR,
    MAX_KEY_INTERVAL,
    MAX_NAME,
    MAX_PNG,
    MAX_PNG_SIDE,
    MAX_RHO,
    MAX_SHAPE,
    N_LAMBDA,
    POSE_SIZES,
    PROFILE_NAMES,
    InitInfo,
    ProtocolError,
)


class Reader:
    """Bounds-checked little-endian reads from bytes; every overrun is a ProtocolError."""

    def __init__(self, data: bytes, what: str):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"{self.what}: truncated (needs {n} bytes at {self.pos}, has {len(self.data) - self.pos})")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def f16s(self, n: int, cap: int, name: str) -> np.ndarray:
        """n float16 values (float64 array), finite."""
        if n > cap:
            raise ProtocolError(f"{self.what}: {name} has {n} values (cap {cap})")
        a = np.frombuffer(self.take(2 * n), dtype="<f2").astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ProtocolError(f"{self.what}: {name} has non-finite values")
        return a

    def text(self, cap: int, name: str) -> str:
        n = self.u8()
        if n > cap:
            raise ProtocolError(f"{self.what}: {name} is {n} bytes (cap {cap})")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.what}: {name} is not UTF-8") from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def _text(s: str, cap: int, name: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > cap:
        raise HeadcastError(f"{name} {s!r} is longer than {cap} bytes")
    return struct.pack("<B", len(b)) + b


def half(a, name: str = "value") -> np.ndarray:
    """``a`` rounded to float16 as the INIT carries beta, rho and lambda (float64 array); a value float16
    cannot hold (|x| > 65504 or not finite) is a HeadcastError."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)) or np.any(np.abs(a) > HALF_MAX):
        raise HeadcastError(f"{name} has a value that is not a finite 16-bit float (|x| <= {HALF_MAX:g})")
    return a.astype(np.float16).astype(np.float64)


def _f16(a, name: str) -> bytes:
    return half(a, name).astype("<f2").tobytes()



SIGNATURE_SIZE = 64
HALF_MAX = 65504.0
# quantisation steps travel as one byte each, a power of two: step = 2 ** ((code - STEP_CODE_ZERO) / STEP_CODE_PER_OCTAVE)
STEP_CODE_ZERO = 200
STEP_CODE_PER_OCTAVE = 8     # 1/8 octave: 9 % between neighbouring steps; codes 0..255 span 2^-25 .. 2^6.9
OFFSETS_TAG = 0x4F       # "O": the optional last section, the detail layer's offsets
OFFSET_STEP = 1e-4       # metres: offsets travel as int8 multiples of this (+-12.7 mm; the layer stays within 10)
MAX_OFFSET_VERTICES = 100_000


def offsets_section(offsets) -> bytes:
    """The INIT's detail-layer section: tag u8, V u32, step f32, length u32, then zlib of (a bit per vertex:
    has an offset | int8 x 3 per such vertex, in vertex order). Offsets (V, 3) metres."""
    off = np.asarray(offsets, dtype=np.float64).reshape(-1, 3)
    if not 0 < len(off) <= MAX_OFFSET_VERTICES or not np.all(np.isfinite(off)):
        raise HeadcastError(f"detail offsets: {len(off)} vertices, must be 1..{MAX_OFFSET_VERTICES} and finite")
    q = np.clip(np.rint(off / OFFSET_STEP), -127, 127).astype(np.int8)
    on = q.any(1)
    z = zlib.compress(np.packbits(on).tobytes() + q[on].tobytes(), 9)
    return struct.pack("<BIfI", OFFSETS_TAG, len(off), OFFSET_STEP, len(z)) + z


def parse_offsets(r: Reader) -> np.ndarray:
    """The offsets (V, 3) float32 metres of an INIT's detail-layer section (:func:`offsets_section`)."""
    tag, V, step, nz = r.unpack("BIfI")
    if tag != OFFSETS_TAG:
        raise ProtocolError(f"INIT: unknown section {tag} after the body")
    if not (0 < V <= MAX_OFFSET_VERTICES) or not (np.isfinite(step) and 0 < step <= 1e-3):
        raise ProtocolError(f"INIT: detail offsets of {V} vertices, step {step} out of range")
    nb = (V + 7) // 8
    cap = nb + 3 * V
    d = zlib.decompressobj()
    try:
        raw = d.decompress(r.take(nz), cap)
    except zlib.error:
        raise ProtocolError("INIT: detail offsets do not decompress") from None
    if not d.eof or d.unconsumed_tail or len(raw) < nb:
        raise ProtocolError("INIT: detail offsets are longer than their vertex count allows, or cut")
    on = np.unpackbits(np.frombuffer(raw[:nb], np.uint8))[:V].astype(bool)
    if len(raw) != nb + 3 * int(on.sum()):
        raise ProtocolError("INIT: detail offsets do not match their vertex mask")
    out = np.zeros((V, 3), np.float32)
    out[on] = np.frombuffer(raw[nb:], np.int8).reshape(-1, 3).astype(np.float32) * np.float32(step)
    return out


def init_body(info: InitInfo) -> bytes:
    """INIT body without the trailing Ed25519 signature (the signature covers header + this)."""
    if info.profile not in PROFILE_NAMES:
        raise HeadcastError(f"unknown profile {info.profile}")
    if not (0 < info.n_shape <= MAX_SHAPE and 0 < info.n_expr <= MAX_EXPR):
        raise HeadcastError(f"model sizes out of range: {info.n_shape} shape, {info.n_expr} expression components")
    if info.n_pose not in POSE_SIZES or info.eta_kind not in ETA_SIZES:
        raise HeadcastError(f"bad pose size {info.n_pose} or eta kind {info.eta_kind}")
    beta = np.asarray(info.beta, dtype=np.float64).reshape(-1)
    if beta.size != info.n_shape:
        raise HeadcastError(f"beta has {beta.size} values, the init says {info.n_shape}")
    parts = [_text(info.model, MAX_NAME, "model id"), _text(info.sender, MAX_NAME, "sender name"),
             struct.pack("<BBBHHfH", info.profile, info.n_pose, info.eta_kind, info.n_shape, info.n_expr,
                         float(info.fps), int(info.key_interval)),
             info.session_id, info.sender_xpub, info.receiver_xpub, info.sign_pub,
             _f16(beta, "beta")]
    rho = np.zeros(0) if info.rho is None else np.asarray(info.rho, dtype=np.float64).reshape(-1)
    if rho.size > MAX_RHO:
        raise HeadcastError(f"rho has {rho.size} values (cap {MAX_RHO})")
    parts += [struct.pack("<H", rho.size), _f16(rho, "rho")]
    lam = np.zeros(0) if info.lam is None else np.asarray(info.lam, dtype=np.float64).reshape(-1)
    if lam.size not in (0, N_LAMBDA):
        raise HeadcastError(f"lambda must have {N_LAMBDA} values, has {lam.size}")
    parts += [struct.pack("<B", lam.size), _f16(lam, "lambda")]
    png = info.albedo_png or b""
    if len(png) > MAX_PNG:
        raise HeadcastError(f"albedo PNG of {len(png)} bytes exceeds the {MAX_PNG}-byte cap")
    parts += [struct.pack("<I", len(png)), png]
    if info.profile == COMPACT:
        steps = np.asarray(info.steps, dtype=np.float64).reshape(-1)
        if steps.size != info.n_components or not np.all(steps > 0):
            raise HeadcastError("compact profile needs one positive quantisation step per component")
        parts.append(step_codes(steps).tobytes())
    if info.offsets is not None:
        parts.append(offsets_section(info.offsets))
    return b"".join(parts)


def step_codes(steps) -> np.ndarray:
    """The one-byte codes (C,) uint8 of quantisation steps: the nearest power of 2^(1/8), clipped to the codes'
    range."""
    k = np.rint(np.log2(np.maximum(np.asarray(steps, np.float64), 1e-30)) * STEP_CODE_PER_OCTAVE) + STEP_CODE_ZERO
    return np.clip(k, 0, 255).astype(np.uint8)


def steps_of_codes(codes) -> np.ndarray:
    """The steps (C,) float64 that one-byte codes stand for (exact powers of two, the same on both sides)."""
    return 2.0 ** ((np.asarray(codes, np.float64) - STEP_CODE_ZERO) / STEP_CODE_PER_OCTAVE)


def wire_steps(steps) -> np.ndarray:
    """Quantisation steps as the INIT carries them (the sender quantises with exactly these)."""
    return steps_of_codes(step_codes(steps))


def parse_init_body(body: bytes) -> tuple[InitInfo, bytes, bytes]:
    """(info, signed part, signature) of an INIT body."""
    if len(body) < SIGNATURE_SIZE:
        raise ProtocolError("INIT: shorter than its signature")
    signed, sig = body[:-SIGNATURE_SIZE], body[-SIGNATURE_SIZE:]
    r = Reader(signed, "INIT")
    model = r.text(MAX_NAME, "model id")
    sender = r.text(MAX_NAME, "sender name")
    profile, n_pose, eta_kind, n_shape, n_expr, fps, key_interval = r.unpack("BBBHHfH")
    if profile not in PROFILE_NAMES:
        raise ProtocolError(f"INIT: unknown profile {profile}")
    if n_pose not in POSE_SIZES:
        raise ProtocolError(f"INIT: pose size {n_pose} (must be 6 or {N_POSE})")
    if eta_kind not in ETA_SIZES:
        raise ProtocolError(f"INIT: unknown eta kind {eta_kind}")
    if not (0 < n_shape <= MAX_SHAPE) or not (0 < n_expr <= MAX_EXPR):
        raise ProtocolError(f"INIT: model sizes out of range ({n_shape}, {n_expr})")
    if not (np.isfinite(fps) and 0 < fps <= 1000):
        raise ProtocolError(f"INIT: frame rate {fps} out of range")
    if not (1 <= key_interval <= MAX_KEY_INTERVAL):
        raise ProtocolError(f"INIT: keyframe interval {key_interval} out of range")
    session_id, sx, rx, spub = r.take(8), r.take(32), r.take(32), r.take(32)
    beta = r.f16s(n_shape, MAX_SHAPE, "beta")
    n_rho = r.u16()
    rho = r.f16s(n_rho, MAX_RHO, "rho") if n_rho else None
    n_lam = r.u8()
    if n_lam not in (0, N_LAMBDA):
        raise ProtocolError(f"INIT: lambda has {n_lam} values (0 or {N_LAMBDA})")
    lam = r.f16s(n_lam, N_LAMBDA, "lambda") if n_lam else None
    n_png = r.u32()
    if n_png > MAX_PNG:
        raise ProtocolError(f"INIT: albedo PNG of {n_png} bytes exceeds its cap {MAX_PNG}")
    png = r.take(n_png) if n_png else None
    if png is not None:
        check_png(png)
    info = InitInfo(model, n_shape, n_expr, beta, lam, rho, png, float(fps), profile, n_pose, eta_kind,
                    key_interval, None, sender, session_id, sx, rx, spub)
    if profile == COMPACT:
        info.steps = steps_of_codes(np.frombuffer(r.take(info.n_components), dtype=np.uint8))
    if r.pos < len(r.data):
        info.offsets = parse_offsets(r)
    r.done()
    return info, signed, sig


def check_png(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, refusing non-PNGs and images over the side cap (so decoding
    it later cannot allocate without bound)."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ProtocolError("INIT: albedo map is not a PNG")
    w, h = struct.unpack(">II", png[16:24])
    if not (0 < w <= MAX_PNG_SIDE and 0 < h <= MAX_PNG_SIDE):
        raise ProtocolError(f"INIT: albedo map of {w}x{h} exceeds the {MAX_PNG_SIDE}-pixel side cap")
    return w, h
