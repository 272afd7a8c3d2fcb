"""Transport-free sender and receiver state machines: bytes in, bytes or decoded frames out.

The live code (:mod:`headcast.stream.live`) and the file code (:mod:`headcast.stream.files`) both
drive these. The receiver tolerates lost, duplicated and reordered frames: it keeps the decoded
states of the last :data:`WINDOW` sequence numbers, parks frames whose reference has not arrived,
drops frames older than the newest one it has output, and starts (or restarts) at a keyframe.

A file stream is all or nothing: the receiver in file mode hands out its frames only once the signed
END has verified every byte before it, and after one rejected message it refuses everything that
follows, so a damaged, truncated or spliced file yields no frame at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass, replace

import numpy as np

from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.introduction import SIGNATURE_SIZE, half, init_body, parse_init_body, wire_steps
from headcast.stream.peers import shown
from headcast.stream.wire import (
    COMPACT,
    END,
    F_KEY,
    F_LEN,
    F_NEXT,
    F_NOFACE,
    F_SEQ,
    FRAME,
    HEADER_SIZE,
    HELLO,
    I_FILE,
    INIT,
    MAC_SEQ,
    TAG_SIZE,
    TYPE_NAMES,
    InitInfo,
    ProtocolError,
    pack_frame,
    pack_message,
    parse_message,
)

logger = logging.getLogger(__name__)

WINDOW = 128
END_BODY = struct.Struct("<I32s")  # frames sent, SHA-256 of every stream byte before the END


@dataclass
class DecodedFrame:
    """A frame as the receiver rebuilt it: seq, t (s), theta (15,), psi (E,), eta, face, keyframe."""

    seq: int
    t: float
    theta: np.ndarray
    psi: np.ndarray
    eta: np.ndarray
    face: bool
    key: bool


class SenderSession:
    """Makes the INIT and the frame messages of one session.

    Args:
        template: the stream's InitInfo (model, beta, appearance, profile, steps...).
        key: the sender's Ed25519 identity.
        file_mode: no receiver handshake; :meth:`end` signs the whole stream.
        ordered: the transport delivers every message once and in order (a WebSocket, a file): the frame
            after the previous one carries no sequence number (the receiver counts). False: each frame
            carries at least its low byte, so a receiver can take lost, duplicated and reordered frames.
    """

    def __init__(self, template: InitInfo, key, file_mode: bool = False, ordered: bool = False):
        self.template = template
        self.ordered = ordered or file_mode
        self.key = key
        self.file_mode = file_mode
        self.info: InitInfo | None = None
        self.mac_key: bytes | None = None
        self.encoder: K.CompactEncoder | None = None
        self.frames = 0
        self._hash = hashlib.sha256()
        self.last_seq: int | None = None

    def init(self, hello: bytes | None = None) -> bytes:
        """The signed INIT; live sessions pass the receiver's HELLO message."""
        rx = b"\0" * 32
        if not self.file_mode:
            if hello is None:
                raise ProtocolError("live session needs the receiver's HELLO")
            m = parse_message(hello)
            if m.type != HELLO or len(m.body) != 32:
                raise ProtocolError(f"expected a 32-byte HELLO, got {TYPE_NAMES.get(m.type)} of {len(m.body)} bytes")
            rx = m.body
        x_priv, x_pub = auth.x25519_pair()
        steps = self.template.steps  # the INIT carries one-byte steps: quantise with exactly those
        steps = None if steps is None else wire_steps(steps)
        info = replace(self.template, session_id=os.urandom(8), sender_xpub=x_pub, receiver_xpub=rx,
                       sign_pub=auth.public_bytes(self.key), flags=I_FILE if self.file_mode else 0, steps=steps,
                       beta=half(self.template.beta, "beta"))  # as the receiver gets it (float16)
        body = init_body(info)
        flags = I_FILE if self.file_mode else 0
        header = pack_message(INIT, flags, b"\0" * (len(body) + SIGNATURE_SIZE))[:HEADER_SIZE]
        signed = header + body
        msg = signed + auth.sign(self.key, signed)
        self.mac_key = None if self.file_mode else auth.session_mac_key(x_priv, rx, signed)
        self.info = info
        self.encoder = K.CompactEncoder(info) if info.profile == COMPACT else None
        self._emit(msg)
        return msg

    def _emit(self, msg: bytes) -> None:
        if self.file_mode:
            self._hash.update(msg)

    def frame(self, f: K.ParamFrame) -> bytes:
        """The FRAME message of one ParamFrame. Its time is not sent: the receiver derives it from the
        sequence number and the frame rate. The full sequence number goes with the first frame, every
        keyframe and a jump of 64 or more; otherwise its low byte (the receiver extends it)."""
        if self.info is None:
            raise ProtocolError("frame before INIT")
        flags = 0
        key = False
        if not f.face:
            flags |= F_NOFACE
            payload = b""
        else:
            x = K.to_vector(f.theta, f.psi, f.eta, self.info)
            if self.encoder is None:
                payload, key = K.paper_encode(x), True
            else:
                payload, key = self.encoder.encode(x, f.seq)
            flags |= F_KEY if key else 0
        seq = f.seq & 0xFFFFFFFF
        full = key or self.last_seq is None or not 0 < seq - self.last_seq < 64
        nxt = self.ordered and not full and seq == self.last_seq + 1
        msg = pack_frame(flags, None if nxt else seq, full, payload, self.file_mode)
        if not self.file_mode:
            msg += auth.mac(self.mac_key, MAC_SEQ.pack(seq) + msg)
        self.last_seq = seq
        self.frames += 1
        self._emit(msg)
        return msg

    def end(self) -> bytes:
        """File mode: the signed END (frame count and SHA-256 of everything before it)."""
        body = END_BODY.pack(self.frames, self._hash.digest())
        header = pack_message(END, 0, b"\0" * (len(body) + SIGNATURE_SIZE))[:HEADER_SIZE]
        return header + body + auth.sign(self.key, header + body)


def describe(info: InitInfo, label: str = "") -> str:
    """The log line of a new session: its id, sender (escaped), key fingerprint, model, profile, rate."""
    return (f"{label}session {info.session_id.hex()} from {shown(info.sender)} ({auth.fingerprint(info.sign_pub)}): "
            f"model {shown(info.model)}, profile {'compact' if info.profile == COMPACT else 'paper'}, {info.fps:g} fps")


class ReceiverSession:
    """Authenticates and decodes messages.

    Args:
        trust: which sender keys to accept.
        file_mode: accept a file INIT (no HELLO) and require the signed END.
        label: the start of its log lines (a new session and a sender trusted on first use at INFO,
            rejected messages at DEBUG: the caller reports those).
        remember: store a sender trusted on first use at its INIT and log the new session; False: only
            mark it (``new_sender``) and leave storing and reporting to the caller (the live receiver, once
            it has admitted the session's head).
    """

    def __init__(self, trust: auth.Trust, file_mode: bool = False, label: str = "", remember: bool = True):
        self.trust = trust
        self.remember = remember
        self.new_sender = False
        self.file_mode = file_mode
        self.label = label
        self._x_priv = None
        self.hello_pub: bytes | None = None
        self.info: InitInfo | None = None
        self.mac_key: bytes | None = None
        self.window = auth.ReplayWindow(WINDOW)
        self.states: dict[int, tuple] = {}
        self.pending: dict[int, tuple] = {}
        self.last_out = -1
        self.last_in: int | None = None  # the seq of the last accepted frame (F_NEXT counts from it)
        self.frames_received = 0
        self.ended = False
        self.damaged: str | None = None   # file mode: why an earlier message was rejected
        self._held: list[DecodedFrame] = []  # file mode: decoded frames waiting for the END
        self._hash = hashlib.sha256()
        self.stats = {"rejected": 0, "late": 0, "unresolved": 0}

    def hello(self) -> bytes:
        """A fresh HELLO (starts a new session: the next INIT must echo this key)."""
        self._x_priv, self.hello_pub = auth.x25519_pair()
        self.info = None
        self.mac_key = None
        return pack_message(HELLO, 0, self.hello_pub)

    def handle(self, data: bytes) -> list[DecodedFrame]:
        """Frames decodable after this message (possibly several, possibly none); ProtocolError when
        the message is rejected (the reason is its text). File mode: frames come with the END."""
        try:
            if self.damaged is not None:
                raise ProtocolError(f"after a rejected message ({self.damaged[:80]}): the file is damaged from there")
            if self.ended:
                raise ProtocolError("a message after the END")
            m = parse_message(data)
            if m.type == INIT:
                out = self._init(m)
            elif m.type == FRAME:
                out = self._frame(m)
            elif m.type == END:
                out = self._end(m)
            else:
                raise ProtocolError(f"unexpected {TYPE_NAMES[m.type]} message")
        except ProtocolError as e:
            self.stats["rejected"] += 1
            logger.debug("%srejected: %s", self.label, e)
            if self.file_mode and self.damaged is None:
                self.damaged = str(e)
            raise
        if self.file_mode:
            self._hash.update(data)
            if not self.ended:
                self._held += out
                return []
        return out

    # ------------------------------------------------------------------------------------------
    def _init(self, m) -> list[DecodedFrame]:
        info, signed_body, sig = parse_init_body(m.body)
        signed = m.raw[:HEADER_SIZE] + signed_body
        auth.verify(info.sign_pub, sig, signed, "INIT")
        if self.file_mode != bool(m.flags & I_FILE):
            raise ProtocolError("INIT: file stream sent live, or live INIT in a file")
        if not self.file_mode:
            if self.hello_pub is None or info.receiver_xpub != self.hello_pub:
                raise ProtocolError("INIT: not an answer to this receiver's HELLO (replayed INIT?)")
        if self.info is not None and self.file_mode:
            raise ProtocolError("INIT: a second INIT in one file")
        self.new_sender = self.trust.check(info.sender, info.sign_pub, remember=self.remember)
        if self.new_sender and self.remember:
            logger.info(f"{self.label}trusting sender {shown(info.sender)} on first use: key "
                        f"{auth.fingerprint(info.sign_pub)} (stored in {self.trust.store})")
        self.mac_key = None if self.file_mode else auth.session_mac_key(self._x_priv, info.sender_xpub, signed)
        self.info = info
        self.window = auth.ReplayWindow(WINDOW)
        self.states.clear()
        self.pending.clear()
        self.last_out = -1
        self.last_in = None
        logger.log(logging.INFO if self.remember else logging.DEBUG, describe(info, self.label))
        return []

    def _end(self, m) -> list[DecodedFrame]:
        if not self.file_mode or self.info is None:
            raise ProtocolError("END outside a file stream")
        if len(m.body) != END_BODY.size + SIGNATURE_SIZE:
            raise ProtocolError(f"END body is {len(m.body)} bytes")
        signed = m.raw[:HEADER_SIZE] + m.body[:END_BODY.size]
        auth.verify(self.info.sign_pub, m.body[END_BODY.size:], signed, "END")
        n, digest = END_BODY.unpack(m.body[:END_BODY.size])
        if digest != self._hash.digest():
            raise ProtocolError("END: the stream's bytes differ from what the sender signed (tampered)")
        if n != self.frames_received:
            raise ProtocolError(f"END: sender sent {n} frames, {self.frames_received} arrived")
        self.ended = True
        out, self._held = self._held, []
        return out

    def _frame(self, m) -> list[DecodedFrame]:
        if self.info is None:
            raise ProtocolError("FRAME before an accepted INIT")
        if bool(m.flags & F_LEN) != self.file_mode:
            raise ProtocolError("FRAME: a file frame sent live, or a live frame in a file")
        if m.flags & F_NEXT:
            if self.last_in is None:
                raise ProtocolError("FRAME: no sequence number before any full one")
            seq = self.last_in + 1
        else:
            seq = m.seq if m.flags & F_SEQ else self._extend(m.seq)
        if not self.file_mode and not auth.check_mac(self.mac_key, MAC_SEQ.pack(seq) + m.raw[:-TAG_SIZE], m.tag):
            raise ProtocolError("FRAME: bad MAC (tampered, forged, replayed or from another session)")
        why = self.window.check(seq)
        if why is not None:
            raise ProtocolError(f"FRAME: {why}")
        self.window.accept(seq)
        self.last_in = seq
        self.frames_received += 1
        if m.flags & F_NOFACE and m.body:
            raise ProtocolError("FRAME: no-face frame with a payload")
        self.pending[seq] = (m.flags, seq / self.info.fps, m.body)
        out = self._resolve(seq)
        self._evict()
        return out

    def _extend(self, low: int) -> int:
        """The sequence number whose low byte is ``low`` nearest the newest one received (-128..+127)."""
        top = self.window.top
        if top < 0:
            raise ProtocolError("FRAME: only a sequence byte before any full sequence number")
        seq = top + ((low - top + 128) % 256) - 128
        if not 0 <= seq <= 0xFFFFFFFF:
            raise ProtocolError(f"FRAME: sequence byte {low} extends to {seq}, out of range")
        return seq

    def _resolve(self, seq: int) -> list[DecodedFrame]:
        out = []
        while seq in self.pending:
            flags, t, payload = self.pending[seq]
            state = self._decode(seq, flags, payload)
            if state is None:
                break
            del self.pending[seq]
            self.states[seq] = state
            if seq > self.last_out:
                self.last_out = seq
                theta, psi, eta = K.from_vector(state[2], self.info)
                out.append(DecodedFrame(seq, t, theta, psi, eta, not flags & F_NOFACE,
                                        bool(flags & F_KEY)))
            else:
                self.stats["late"] += 1
            seq += 1
        return out

    def _decode(self, seq: int, flags: int, payload: bytes):
        """(q or None, adaptive coder state or None, x) of a frame, or None while its reference is missing."""
        info = self.info
        prev = self.states.get(seq - 1)
        if flags & F_NOFACE:
            return prev  # hold the previous parameters
        if info.profile != COMPACT:
            return (None, None, K.paper_decode(payload, info))
        if flags & F_KEY:
            q, state = K.compact_decode_key(payload, info)
        elif prev is None:
            return None
        else:
            q, state = K.compact_decode_delta(payload, prev[0], prev[1])
        return (q, state, K.dequantise(q, info))

    def _evict(self) -> None:
        lo = self.window.top - WINDOW
        for d in (self.states, self.pending):
            old = [s for s in d if s <= lo]
            if d is self.pending:
                self.stats["unresolved"] += len(old)
            for s in old:
                del d[s]
