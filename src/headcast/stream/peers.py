"""What the receiver allows each remote peer: message rates (token buckets), log lines (rate-limited
per peer and overall) and how a remote-controlled string may appear in a log line (escaped, capped).

Everything here is a fixed number of counters: no amount of traffic makes it grow.
"""

from __future__ import annotations

import logging
import time

MAX_SHOWN = 80             # characters of a remote-controlled string in a log line


def shown(text: object, cap: int = MAX_SHOWN) -> str:
    """``text`` as a log line may show it: ``repr``-escaped (no newline, no terminal escape sequence
    survives) and at most ``cap`` characters of it, with ``...`` when cut."""
    s = str(text)
    cut = len(s) > cap
    return repr(s[:cap]) + ("..." if cut else "")


class Bucket:
    """A token bucket: ``rate`` events per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class PeerLog:
    """Log lines about one peer: at most ``per_peer`` of them, and within the ``overall`` :class:`Bucket`
    shared by all peers; each line held back is counted in ``stats.log_held``."""

    def __init__(self, logger: logging.Logger, overall: Bucket, per_peer: int, stats):
        self.logger, self.overall, self.left, self.stats = logger, overall, per_peer, stats

    def info(self, line: str) -> bool:
        """Log ``line`` (already escaped where it quotes the peer) unless a limit holds it back."""
        if self.left > 0 and self.overall.take():
            self.left -= 1
            self.logger.info("%s", line)
            return True
        self.stats.log_held += 1
        return False


def clean(text: object, cap: int = 240) -> str:
    """A message (e.g. a rejection reason quoting remote strings with :func:`shown`) fit for one log line:
    as it is when every character is printable, else ``repr``-escaped; at most ``cap`` characters."""
    s = str(text)
    if not s.isprintable():
        s = repr(s)[1:-1]
    return s if len(s) <= cap else s[:cap] + "..."
