"""Binary arithmetic coding of small integers for the compact profile (pure Python, exact integers).

A 32-bit integer arithmetic coder (Witten-Neal-Cleary, with underflow bits) codes symbols under
static frequency tables whose total is at most 2**16. Residuals are coded under a discretised
Laplace (two-sided geometric) distribution chosen from :data:`SCALES` by an adaptive state (:func:`adapt`); values
beyond +-:data:`ALPHABET` go through an escape symbol followed by an Exp-Golomb code. The decoder
reads zeros past the end of its input, so the encoder drops trailing zero bytes.

All loops are bounded by the number of symbols asked for, and Exp-Golomb prefixes by
:data:`MAX_EG_PREFIX`, so hostile input can only yield a wrong value or a :class:`ProtocolError`.
"""

from __future__ import annotations

import bisect

import numpy as np

from headcast.stream.wire import ProtocolError

BITS = 32
TOP = (1 << BITS) - 1
HALF = 1 << (BITS - 1)
QUARTER = 1 << (BITS - 2)
TOTAL = 1 << 16
ALPHABET = 48                       # |r| <= ALPHABET is coded directly, beyond it escapes
N_SCALES = 16
SCALES = 0.1 * 2.0 ** (np.arange(N_SCALES) / 1.5)   # Laplace scale b in quantisation steps: 0.1 .. ~102
ESCAPE = 2 * ALPHABET + 1           # symbol index of the escape
EG_ORDER = 3
MAX_EG_PREFIX = 26


def zigzag(r: int) -> int:
    """0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ..."""
    return 2 * r if r >= 0 else -2 * r - 1


def unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def _laplace_table(b: float) -> np.ndarray:
    """Cumulative frequencies (2 * ALPHABET + 3,) for the zigzag symbols and the escape; every symbol >= 1."""
    p = np.exp(-1.0 / b)
    mags = np.array([unzigzag(z) for z in range(2 * ALPHABET + 1)])
    prob = np.r_[p ** np.abs(mags), 2 * p ** (ALPHABET + 1) / (1 - p)]  # escape: both tails
    prob /= prob.sum()
    n = prob.size
    freq = np.floor(prob * (TOTAL - n)).astype(np.int64) + 1
    freq[np.argmax(freq)] += TOTAL - freq.sum()
    return np.r_[0, np.cumsum(freq)]


CUM = [list(map(int, _laplace_table(b))) for b in SCALES]

# Adaptive scales: a per-component state ``m`` = ADAPT_ONE x a running mean of |residual| (integers, so both sides
# compute the same), updated by ``m += (ADAPT_ONE |r| - m) >> ADAPT_SHIFT``; the scale index is the number of
# THRESHOLDS below m: the boundaries between neighbouring scales, ADAPT_ONE x the geometric mean of the mean |r|
# each scale's distribution has (2 p / (1 - p^2), p = exp(-1 / b)).
ADAPT_ONE = 256
ADAPT_SHIFT = 2
ADAPT_MAX = ADAPT_ONE << 26          # a state never exceeds ADAPT_ONE x the largest residual (|r| <= 2^25)
_P = np.exp(-1.0 / SCALES)
_MEAN_ABS = 2 * _P / (1 - _P ** 2)
THRESHOLDS = [int(round(ADAPT_ONE * float(np.sqrt(a * b)))) for a, b in zip(_MEAN_ABS[:-1], _MEAN_ABS[1:])]


def scale_index(m: int) -> int:
    """The Laplace scale index (0..N_SCALES - 1) for an adaptive state m."""
    return bisect.bisect_left(THRESHOLDS, m)


def adapt(m: int, r: int) -> int:
    """The state after a residual r (floor shift: the same on every platform)."""
    return min(ADAPT_MAX, m + ((ADAPT_ONE * abs(r) - m) >> ADAPT_SHIFT))


class Encoder:
    def __init__(self):
        self.low, self.high, self.pending = 0, TOP, 0
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def encode(self, lo: int, hi: int, total: int) -> None:
        rng = self.high - self.low + 1
        self.high = self.low + rng * hi // total - 1
        self.low = self.low + rng * lo // total
        while True:
            if self.high < HALF:
                self._emit(0)
            elif self.low >= HALF:
                self._emit(1)
                self.low -= HALF
                self.high -= HALF
            elif self.low >= QUARTER and self.high < 3 * QUARTER:
                self.pending += 1
                self.low -= QUARTER
                self.high -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1

    def put_bits(self, value: int, n: int) -> None:
        """n raw (equiprobable) bits, most significant first."""
        for k in range(n - 1, -1, -1):
            b = (value >> k) & 1
            self.encode(b, b + 1, 2)

    def put_eg(self, v: int, k: int = EG_ORDER) -> None:
        """Exp-Golomb of order k of v >= 0."""
        v += 1 << k
        n = v.bit_length()
        self.put_bits(0, n - 1 - k)
        self.put_bits(v, n)

    def put_residual(self, r: int, scale: int) -> None:
        z = zigzag(int(r))
        cum = CUM[scale]
        if z < ESCAPE:
            self.encode(cum[z], cum[z + 1], TOTAL)
        else:
            self.encode(cum[ESCAPE], cum[ESCAPE + 1], TOTAL)
            self.put_eg(z - ESCAPE)

    def finish(self) -> bytes:
        self.pending += 1
        self._emit(0 if self.low < QUARTER else 1)
        bits = self.bits + [0] * (-len(self.bits) % 8)
        out = np.packbits(np.array(bits, dtype=np.uint8)).tobytes() if bits else b""
        return out.rstrip(b"\0")  # the decoder reads zeros past the end


class Decoder:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        self.pos = 0
        self.low, self.high = 0, TOP
        self.value = 0
        for _ in range(BITS):
            self.value = 2 * self.value + self._bit()

    def _bit(self) -> int:
        b = self.bits[self.pos] if self.pos < len(self.bits) else 0
        self.pos += 1
        return b

    def _target(self, total: int) -> int:
        rng = self.high - self.low + 1
        return ((self.value - self.low + 1) * total - 1) // rng

    def _update(self, lo: int, hi: int, total: int) -> None:
        rng = self.high - self.low + 1
        self.high = self.low + rng * hi // total - 1
        self.low = self.low + rng * lo // total
        while True:
            if self.high < HALF:
                pass
            elif self.low >= HALF:
                self.low -= HALF
                self.high -= HALF
                self.value -= HALF
            elif self.low >= QUARTER and self.high < 3 * QUARTER:
                self.low -= QUARTER
                self.high -= QUARTER
                self.value -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
            self.value = 2 * self.value + self._bit()

    def get_bits(self, n: int) -> int:
        v = 0
        for _ in range(n):
            b = 1 if self._target(2) >= 1 else 0
            self._update(b, b + 1, 2)
            v = 2 * v + b
        return v

    def get_eg(self, k: int = EG_ORDER) -> int:
        zeros = 0
        while self.get_bits(1) == 0:
            zeros += 1
            if zeros > MAX_EG_PREFIX:
                raise ProtocolError("compact frame: Exp-Golomb prefix too long (corrupt payload)")
        rest = self.get_bits(zeros + k)
        return ((1 << (zeros + k)) | rest) - (1 << k)

    def get_residual(self, scale: int) -> int:
        cum = CUM[scale]
        t = self._target(TOTAL)
        if not 0 <= t < TOTAL:
            raise ProtocolError("compact frame: arithmetic decoder out of range (corrupt payload)")
        z = bisect.bisect_right(cum, t) - 1
        self._update(cum[z], cum[z + 1], TOTAL)
        if z == ESCAPE:
            z = ESCAPE + self.get_eg()
        return unzigzag(z)
