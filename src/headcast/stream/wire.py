"""The headcast wire format, version 2: little-endian messages.

HELLO, INIT and END carry a 9-byte header, ``header | body``:

    header  = magic b"HC" | version u8 | type u8 | flags u8 | body_length u32     (9 bytes)

A FRAME is lean: one byte ``0b11LS00NK`` (L: file form, S: full sequence number, N: no face, K: keyframe),
then the sequence (its low byte, or the whole number as a varint with S), then live (L clear) the payload
and a 4-byte truncated HMAC-SHA256 tag (the WebSocket message gives the length), or in a file (L set) the
payload length as a varint and the payload (the signed END covers every byte; no tag).

See docs/protocol.md for the field-by-field layout. Parsing never trusts a length: every count is
checked against its cap and against the bytes that remain before anything is allocated, and every
problem raises :class:`ProtocolError` (a :class:`HeadcastError`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE

MAGIC = b"HC"
VERSION = 2
HEADER = struct.Struct("<2sBBBI")  # magic, version, type, flags, body length
HEADER_SIZE = HEADER.size  # 9
TAG_SIZE = 4  # truncated HMAC-SHA256 on live frames (length justified in docs/protocol.md)
MAC_SEQ = struct.Struct("<I")  # the full sequence number, prepended to a frame's bytes in the MAC input

# message types
HELLO, INIT, FRAME, END = 1, 2, 3, 4
TYPE_NAMES = {HELLO: "HELLO", INIT: "INIT", FRAME: "FRAME", END: "END"}

# frame byte: FRAME_MARK | flags
FRAME_MARK = 0xC0  # the top two bits of a FRAME's first byte (never b"H" = 0x48 of the other messages)
F_KEY = 0x01      # keyframe: decodable on its own
F_NOFACE = 0x02   # no face in this video frame: hold the previous parameters (empty payload)
F_SEQ = 0x04      # the full sequence number follows as a varint (else its low byte)
F_LEN = 0x20      # file form: a varint payload length follows the sequence, and there is no tag
F_RESERVED = 0x18
MAX_VARINT = 5    # bytes: a u32
# init flags
I_FILE = 0x01     # written for a file: no receiver handshake (authenticity from the signed END)

# profiles
PAPER, COMPACT = 0, 1
PROFILES = {"paper": PAPER, "compact": COMPACT}
PROFILE_NAMES = {v: k for k, v in PROFILES.items()}

# placement (eta) kinds
ETA_PAPER = 0   # (s px/m, tx px, ty px): the paper's orthographic eta
ETA_SIM = 1     # (scale, tx, ty, tz metres): the similarity X_cam = s FLIP X + t
ETA_SIZES = {ETA_PAPER: 3, ETA_SIM: 4}

# caps (every field is bounded; a message over a cap is rejected before anything is allocated)
MAX_MESSAGE = 16 << 20          # 16 MiB: an init with an albedo PNG
MAX_FRAME_BODY = 4096
MAX_NAME = 64
MAX_SHAPE = 1024
MAX_EXPR = 1024
MAX_RHO = 1024
MAX_PNG = 12 << 20
MAX_PNG_SIDE = 8192
N_LAMBDA = 27
POSE_SIZES = (6, N_POSE)        # the paper's root + jaw, or the full FLAME pose
MAX_KEY_INTERVAL = 1000


class ProtocolError(HeadcastError):
    """Bytes that are not a valid headcast message (or fail authentication); ``reason`` is one line."""


@dataclass
class InitInfo:
    """What a receiver needs before the first frame.

    model: model id (e.g. ``ict``, ``flame2020``); n_shape, n_expr: basis sizes; beta (n_shape,);
    lam: (27,) SH lighting or None; rho: (M,) albedo-model coefficients or None; albedo_png: the
    albedo map as PNG bytes or None; fps: the video frame rate; n_pose: 6 (paper) or 15;
    eta_kind: ETA_PAPER or ETA_SIM; key_interval: frames between keyframes; steps: (C,)
    quantisation steps of the compact profile (None for paper).
    """

    model: str
    n_shape: int
    n_expr: int
    beta: np.ndarray
    lam: np.ndarray | None = None
    rho: np.ndarray | None = None
    albedo_png: bytes | None = None
    fps: float = 25.0
    profile: int = COMPACT
    n_pose: int = 15
    eta_kind: int = ETA_PAPER
    key_interval: int = 25
    steps: np.ndarray | None = None
    sender: str = "default"
    # session (filled in by the sender)
    session_id: bytes = b"\0" * 8
    sender_xpub: bytes = b"\0" * 32
    receiver_xpub: bytes = b"\0" * 32
    sign_pub: bytes = b"\0" * 32
    flags: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def n_eta(self) -> int:
        return ETA_SIZES[self.eta_kind]

    @property
    def n_components(self) -> int:
        return self.n_pose + self.n_expr + self.n_eta


@dataclass
class Message:
    """A parsed message: type, flags, body bytes (a FRAME's payload), tag (live frames), the raw bytes
    it came from, and a FRAME's sequence field (the whole number with ``F_SEQ``, else its low byte)."""

    type: int
    flags: int
    body: bytes
    tag: bytes
    raw: bytes
    seq: int = 0


# ---------------------------------------------------------------------------------------------
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

    def f32s(self, n: int, cap: int, name: str) -> np.ndarray:
        if n > cap:
            raise ProtocolError(f"{self.what}: {name} has {n} values (cap {cap})")
        a = np.frombuffer(self.take(4 * n), dtype="<f4").astype(np.float64)
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


def _f32(a) -> bytes:
    return np.asarray(a, dtype="<f4").tobytes()


# ---------------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """LEB128 of 0 <= n < 2^32: 7 bits a byte, low first, the top bit set on all but the last."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, position after it) of the varint at ``data[pos]``; at most MAX_VARINT bytes, < 2^32."""
    n = 0
    for k in range(MAX_VARINT):
        if pos + k >= len(data):
            raise ProtocolError(f"{what}: truncated inside a varint")
        b = data[pos + k]
        n |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            if n >= 1 << 32:
                raise ProtocolError(f"{what}: varint over 32 bits")
            return n, pos + k + 1
    raise ProtocolError(f"{what}: varint longer than {MAX_VARINT} bytes")


def pack_message(mtype: int, flags: int, body: bytes, tag: bytes = b"") -> bytes:
    """header | body | tag; a FRAME is its lean byte (FRAME_MARK | flags) | body | tag."""
    if mtype == FRAME:
        return bytes([FRAME_MARK | (flags & 0x3F)]) + body + tag
    if len(body) > MAX_MESSAGE:
        raise HeadcastError(f"message body of {len(body)} bytes exceeds the {MAX_MESSAGE}-byte cap")
    return HEADER.pack(MAGIC, VERSION, mtype, flags, len(body)) + body + tag


def pack_frame(flags: int, seq: int, full_seq: bool, payload: bytes, file_form: bool) -> bytes:
    """A FRAME without its tag: byte | seq (low byte, or varint with F_SEQ) | [varint length] | payload."""
    flags |= (F_SEQ if full_seq else 0) | (F_LEN if file_form else 0)
    s = varint(seq & 0xFFFFFFFF) if full_seq else bytes([seq & 0xFF])
    return bytes([FRAME_MARK | flags]) + s + (varint(len(payload)) if file_form else b"") + payload


def is_frame(data: bytes) -> bool:
    return len(data) > 0 and data[0] & 0xC0 == FRAME_MARK


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(type, flags, body length) of the 9-byte header at the start of ``data`` (not a FRAME)."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"message of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, ver, mtype, flags, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("bad magic (not a headcast message)")
    if ver == 1:
        raise ProtocolError("a version 1 headcast stream: this headcast reads version 2 only (encode it again)")
    if ver != VERSION:
        raise ProtocolError(f"unsupported protocol version {ver} (this is {VERSION})")
    if mtype not in TYPE_NAMES or mtype == FRAME:
        raise ProtocolError(f"unknown message type {mtype}")
    if n > MAX_MESSAGE:
        raise ProtocolError(f"{TYPE_NAMES[mtype]} body length {n} exceeds its cap {MAX_MESSAGE}")
    return mtype, flags, n


def message_type(data: bytes) -> int:
    """The type of the message ``data`` starts with."""
    return FRAME if is_frame(data) else parse_header(data)[0]


def _frame_fields(data: bytes) -> tuple[int, int, int]:
    """(flags, seq field, position of the length or payload) of the FRAME at the start of ``data``."""
    flags = data[0] & 0x3F
    if flags & F_RESERVED:
        raise ProtocolError("FRAME: reserved flag bits set")
    if flags & F_SEQ:
        return (flags, *read_varint(data, 1, "FRAME"))
    if len(data) < 2:
        raise ProtocolError("FRAME: truncated before its sequence byte")
    return flags, data[1], 2


def message_size(data: bytes) -> int:
    """Total size of the message at the start of ``data`` (a header, or a file-form FRAME's first bytes)."""
    if not is_frame(data):
        return HEADER_SIZE + parse_header(data)[2]
    flags, _, pos = _frame_fields(data)
    if not flags & F_LEN:
        raise ProtocolError("a live FRAME (tagged, no length) inside a file stream")
    n, pos = read_varint(data, pos, "FRAME")
    if n > MAX_FRAME_BODY:
        raise ProtocolError(f"FRAME payload length {n} exceeds its cap {MAX_FRAME_BODY}")
    return pos + n


def parse_message(data: bytes) -> Message:
    """One whole message (exactly; no trailing bytes)."""
    data = bytes(data)
    if is_frame(data):
        flags, seq, pos = _frame_fields(data)
        if flags & F_LEN:
            total = message_size(data)
            tag, pos = b"", read_varint(data, pos, "FRAME")[1]
        else:
            total = len(data)
            if total - TAG_SIZE < pos:
                raise ProtocolError(f"FRAME of {total} bytes is shorter than its sequence and tag")
            if total - TAG_SIZE - pos > MAX_FRAME_BODY:
                raise ProtocolError(f"FRAME payload exceeds its cap {MAX_FRAME_BODY}")
            tag = data[total - TAG_SIZE:]
        if len(data) != total:
            raise ProtocolError(f"FRAME message is {len(data)} bytes, its length says {total}")
        return Message(FRAME, flags, data[pos:total - len(tag)], tag, data, seq)
    mtype, flags, n = parse_header(data)
    total = HEADER_SIZE + n
    if len(data) != total:
        raise ProtocolError(f"{TYPE_NAMES[mtype]} message is {len(data)} bytes, its header says {total}")
    return Message(mtype, flags, data[HEADER_SIZE:total], b"", data)


def split_stream(data: bytes, max_messages: int = 10_000_000):
    """Yield the messages of a file stream (concatenated messages) in order."""
    pos = 0
    count = 0
    while pos < len(data):
        if count >= max_messages:
            raise ProtocolError(f"stream has more than {max_messages} messages")
        size = message_size(data[pos:pos + HEADER_SIZE + MAX_VARINT])
        if pos + size > len(data):
            raise ProtocolError(f"stream truncated inside a message at byte {pos}")
        yield parse_message(data[pos:pos + size])
        pos += size
        count += 1


# ---------------------------------------------------------------------------------------------
SIGNATURE_SIZE = 64


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
             _f32(beta)]
    rho = np.zeros(0) if info.rho is None else np.asarray(info.rho, dtype=np.float64).reshape(-1)
    if rho.size > MAX_RHO:
        raise HeadcastError(f"rho has {rho.size} values (cap {MAX_RHO})")
    parts += [struct.pack("<H", rho.size), _f32(rho)]
    lam = np.zeros(0) if info.lam is None else np.asarray(info.lam, dtype=np.float64).reshape(-1)
    if lam.size not in (0, N_LAMBDA):
        raise HeadcastError(f"lambda must have {N_LAMBDA} values, has {lam.size}")
    parts += [struct.pack("<B", lam.size), _f32(lam)]
    png = info.albedo_png or b""
    if len(png) > MAX_PNG:
        raise HeadcastError(f"albedo PNG of {len(png)} bytes exceeds the {MAX_PNG}-byte cap")
    parts += [struct.pack("<I", len(png)), png]
    if info.profile == COMPACT:
        steps = np.asarray(info.steps, dtype=np.float64).reshape(-1)
        if steps.size != info.n_components or not np.all(steps > 0):
            raise HeadcastError("compact profile needs one positive quantisation step per component")
        parts.append(half_steps(steps).astype("<f2").tobytes())
    return b"".join(parts)


def half_steps(steps) -> np.ndarray:
    """Quantisation steps as the INIT carries them: float16, within [2^-14, 1000] (float64 array)."""
    return np.clip(np.asarray(steps, np.float64), 2.0 ** -14, 1000.0).astype(np.float16).astype(np.float64)


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
    beta = r.f32s(n_shape, MAX_SHAPE, "beta")
    n_rho = r.u16()
    rho = r.f32s(n_rho, MAX_RHO, "rho") if n_rho else None
    n_lam = r.u8()
    if n_lam not in (0, N_LAMBDA):
        raise ProtocolError(f"INIT: lambda has {n_lam} values (0 or {N_LAMBDA})")
    lam = r.f32s(n_lam, N_LAMBDA, "lambda") if n_lam else None
    n_png = r.u32()
    if n_png > MAX_PNG:
        raise ProtocolError(f"INIT: albedo PNG of {n_png} bytes exceeds its cap {MAX_PNG}")
    png = r.take(n_png) if n_png else None
    if png is not None:
        check_png(png)
    info = InitInfo(model, n_shape, n_expr, beta, lam, rho, png, float(fps), profile, n_pose, eta_kind,
                    key_interval, None, sender, session_id, sx, rx, spub)
    if profile == COMPACT:
        steps = np.frombuffer(r.take(2 * info.n_components), dtype="<f2").astype(np.float64)
        if not np.all(np.isfinite(steps) & (steps > 0)):
            raise ProtocolError("INIT: quantisation steps must be positive")
        info.steps = steps
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
