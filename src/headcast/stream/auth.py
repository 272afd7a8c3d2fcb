"""Authenticity: Ed25519 sender identities, per-session MAC keys, trust, and a replay window.

- The sender's long-term Ed25519 key signs every INIT (and the END of a file stream).
- Live: the receiver opens with a HELLO carrying a fresh X25519 public key; the INIT carries the
  sender's fresh X25519 public key and echoes the receiver's. The frame MAC key is
  ``HKDF-SHA256(X25519(sender, receiver), salt = SHA-256(signed INIT), info = "headcast/1 frame mac")``,
  so only the two ends know it, and an INIT recorded from another session names another HELLO key.
- File: there is no receiver to agree a key with, so the MAC key is derived from public INIT bytes
  (it only detects corruption); authenticity comes from the END message, an Ed25519 signature over
  the SHA-256 of every byte before it.
- Frames carry ``HMAC-SHA256(key, header | body)[:8]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes, read_json
from headcast.core.paths import home
from headcast.io.outputs import staged_file, staged_files
from headcast.stream.wire import TAG_SIZE, ProtocolError

MAC_INFO = b"headcast/2 frame mac"
PUB_PREFIX = "headcast-ed25519"
MAX_KEY_BYTES = 64 << 10  # a key file (PEM or .pub) is a few hundred bytes


# -- keys --------------------------------------------------------------------------------------
def keys_dir() -> Path:
    d = home() / "keys"
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_key_path() -> Path:
    return keys_dir() / "sender_ed25519.pem"


def generate_key(path: str | Path | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (PEM, PKCS8, mode 0600) and its public key file
    (``<path>.pub``: ``headcast-ed25519 <64 hex digits>``, mode 0644). Returns both paths.

    Both or neither (:func:`headcast.io.outputs.staged_files`): each is written under a staging name with
    its mode set before a byte is written, and both are renamed into place once complete; ``overwrite``
    replaces existing key files (the new ones get the modes above whatever the old ones had).
    HeadcastError (nothing written) when a target is a folder or exists without ``overwrite``, or when
    writing fails.
    """
    p = Path(path).expanduser().absolute() if path is not None else default_key_path()  # "." has no name
    pub = p.with_name(p.name + ".pub")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with staged_files([p, pub], force=overwrite, modes=[0o600, 0o644]) as (tmp_key, tmp_pub):
        tmp_key.write_bytes(pem)
        tmp_pub.write_text(f"{PUB_PREFIX} {public_bytes(key).hex()}\n")
    return p, pub


def load_private_key(path: str | Path | None = None, create: bool = True) -> Ed25519PrivateKey:
    """The sender's key from a PEM file (default: HEADCAST_HOME/keys/sender_ed25519.pem, created on first use)."""
    p = Path(path) if path is not None else default_key_path()
    if not os.path.lexists(p):
        if path is None and create:
            generate_key(p)
        else:
            raise HeadcastError(f"no key file {p} (make one with 'headcast keygen')")
    try:
        key = serialization.load_pem_private_key(read_bytes(p, "key file", MAX_KEY_BYTES), password=None)
    except (ValueError, TypeError) as e:
        raise HeadcastError(f"{p} is not an unencrypted PEM private key ({e.__class__.__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HeadcastError(f"{p} is not an Ed25519 key")
    return key


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(path: str | Path) -> bytes:
    """32 raw bytes from a ``.pub`` file (``headcast-ed25519 HEX``, bare hex) or a PEM public key."""
    p = Path(path)
    if not os.path.lexists(p):
        raise HeadcastError(f"no public key file {p}")
    text = read_bytes(p, "public key file", MAX_KEY_BYTES)
    if b"BEGIN PUBLIC KEY" in text:
        try:
            k = serialization.load_pem_public_key(text)
        except ValueError:
            raise HeadcastError(f"{p} is not a PEM public key") from None
        if not isinstance(k, Ed25519PublicKey):
            raise HeadcastError(f"{p} is not an Ed25519 public key")
        return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    words = text.decode("ascii", "replace").split()
    hexs = words[-1] if words else ""
    try:
        raw = bytes.fromhex(hexs)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise HeadcastError(f"{p} is not a headcast public key ('{PUB_PREFIX} <64 hex digits>')")
    return raw


def fingerprint(pub: bytes) -> str:
    """SHA-256 of the raw public key, first 16 bytes as hex in groups of 4."""
    h = hashlib.sha256(pub).hexdigest()[:32]
    return ":".join(h[i:i + 4] for i in range(0, 32, 4))


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(pub: bytes, sig: bytes, data: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, data)
    except (InvalidSignature, ValueError):
        raise ProtocolError(f"{what}: bad Ed25519 signature (forged or tampered)") from None


# -- session keys ------------------------------------------------------------------------------
def x25519_pair() -> tuple[X25519PrivateKey, bytes]:
    k = X25519PrivateKey.generate()
    return k, k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def session_mac_key(own: X25519PrivateKey, peer_pub: bytes, signed_init: bytes) -> bytes:
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError:
        raise ProtocolError("INIT: invalid X25519 key") from None
    return HKDF(hashes.SHA256(), 32, hashlib.sha256(signed_init).digest(), MAC_INFO).derive(shared)


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_SIZE]


def check_mac(key: bytes, data: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, data), tag)


# -- trust -------------------------------------------------------------------------------------
class Trust:
    """Which sender keys a receiver accepts: one pinned key (``--trust``), or trust on first use,
    remembering ``sender name -> key`` in ``HEADCAST_HOME/trust/known_senders.json``.

    Trust on first use trusts a new sender name only while the store is empty (the first sender), or
    always when ``accept_new`` (``receive --accept-new``; file decoding keeps it on): a stranger never
    joins a store that already trusts someone without the user saying so."""

    def __init__(self, pinned: bytes | None = None, store: Path | None = None, accept_new: bool = True):
        self.pinned = pinned
        self.store = store or (home() / "trust" / "known_senders.json")
        self.accept_new = accept_new

    @classmethod
    def from_file(cls, path: str | Path | None, accept_new: bool = True) -> "Trust":
        return cls(load_public_key(path)) if path is not None else cls(accept_new=accept_new)

    def check(self, sender: str, pub: bytes, remember: bool = True) -> bool:
        """Accept ``pub`` for ``sender`` or raise ProtocolError saying why; True when the sender is new
        (trusted on first use; its key stored now when ``remember``, else by :meth:`remember`).
        A trust store that is not one headcast wrote: HeadcastError."""
        if self.pinned is not None:
            if not hmac.compare_digest(pub, self.pinned):
                raise ProtocolError(f"INIT: sender key {fingerprint(pub)} is not the trusted key {fingerprint(self.pinned)}")
            return False
        known = self.known()
        if sender in known:
            if known[sender] != pub.hex():
                raise ProtocolError(f"INIT: sender {sender[:64]!r} presented key {fingerprint(pub)}, but "
                                    f"{fingerprint(bytes.fromhex(known[sender]))} was trusted on first use ({self.store})")
            return False
        if known and not self.accept_new:
            raise ProtocolError(f"INIT: new sender {sender[:64]!r} (key {fingerprint(pub)}) is not trusted: this "
                                f"receiver trusts {len(known)} sender(s) already (--accept-new trusts new ones)")
        if remember:
            self.remember(sender, pub)
        return True

    def remember(self, sender: str, pub: bytes) -> None:
        """Store ``sender -> pub`` (after :meth:`check` said it is new); the store is checked again first,
        so two new senders racing for an empty store are not both trusted."""
        known = self.known()
        if sender in known or (known and not self.accept_new):
            self.check(sender, pub, remember=False)
            return
        known[sender] = pub.hex()
        with staged_file(self.store, force=True) as tmp:  # headcast's own store: replaced whole
            tmp.write_text(json.dumps(known, indent=2) + "\n")

    def known(self) -> dict:
        """The stored ``name -> key hex``, read within bounds (:func:`headcast.core.files.read_json`);
        HeadcastError (one line) when the store is not a map of names to keys."""
        if not os.path.lexists(self.store):
            return {}
        d = read_json(self.store, "trust store")
        if not isinstance(d, dict) or not all(isinstance(v, str) and _is_key_hex(v) for v in d.values()):
            raise HeadcastError(f"trust store {self.store} is not a map of sender names to keys "
                                "(64 hex digits); fix or delete it")
        return d


def _is_key_hex(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


class ReplayWindow:
    """Accepts each sequence number once, within ``size`` of the highest seen (anti-replay bitmap)."""

    def __init__(self, size: int = 256):
        self.size = size
        self.top = -1
        self.seen: set[int] = set()

    def check(self, seq: int) -> str | None:
        """None when ``seq`` is new and recent enough, else the reason to reject it."""
        if seq <= self.top - self.size:
            return f"seq {seq} is older than the replay window (highest {self.top})"
        if seq in self.seen:
            return f"seq {seq} was already received (duplicate or replay)"
        return None

    def accept(self, seq: int) -> None:
        self.seen.add(seq)
        if seq > self.top:
            self.top = seq
            lo = self.top - self.size
            if len(self.seen) > 2 * self.size:
                self.seen = {s for s in self.seen if s > lo}
