"""The headcast wire format, version 4: little-endian messages.

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
from dataclasses import dataclass

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE

MAGIC = b"HC"
VERSION = 4
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
F_NEXT = 0x08     # no sequence field: the one after the session's previous frame
F_LEN = 0x20      # file form: a varint payload length follows the sequence, and there is no tag
F_RESERVED = 0x10
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
    quantisation steps of the compact profile (None for paper); offsets: the reconstruction's detail
    layer (sent in the INIT's optional last section, :mod:`headcast.stream.introduction`).
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
    offsets: np.ndarray | None = None  # the detail layer: rest-space vertex offsets (V, 3) metres, or None

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


def pack_frame(flags: int, seq: int | None, full_seq: bool, payload: bytes, file_form: bool) -> bytes:
    """A FRAME without its tag: byte | seq (nothing when None: F_NEXT; its low byte; or a varint with
    F_SEQ) | [varint length] | payload."""
    flags |= (F_SEQ if full_seq else 0) | (F_LEN if file_form else 0) | (F_NEXT if seq is None else 0)
    s = b"" if seq is None else varint(seq & 0xFFFFFFFF) if full_seq else bytes([seq & 0xFF])
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
    if ver in (1, 2, 3):
        raise ProtocolError(f"a version {ver} headcast stream: this headcast reads version {VERSION} only (encode it again)")
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
    if flags & F_SEQ and flags & F_NEXT:
        raise ProtocolError("FRAME: both a full and no sequence number")
    if flags & F_SEQ:
        return (flags, *read_varint(data, 1, "FRAME"))
    if flags & F_NEXT:
        return flags, 0, 1
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
