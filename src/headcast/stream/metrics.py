"""What a live link measured: the sender's and receiver's counts and times, and the latency report."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SendStats:
    """What a sender did: frames from the source, sent, dropped while disconnected; sessions, bytes."""

    frames: int = 0
    sent: int = 0
    dropped: int = 0
    sessions: int = 0
    bytes: int = 0
    sent_at: dict = field(default_factory=dict)   # seq -> wall time the frame was available



MAX_TIMED = 100_000     # frames whose wall times a receiver keeps (the latency report's; ~1 h at 30 fps)
MAX_REASON_KINDS = 32  # distinct rejection reasons counted; the rest count as "other"


@dataclass
class ReceiveStats:
    """What a receiver did, as counters (no amount of traffic makes them grow): frames decoded, written to
    the MP4 (``padded`` of them repeat a picture over a gap), rejected messages (``reasons``: count by kind),
    peers refused, messages dropped over a rate or queue bound, sessions, frames the renderer skipped;
    wall times of decoding and rendering by seq for the first :data:`MAX_TIMED` frames."""

    frames: int = 0
    written: int = 0
    padded: int = 0
    rejected: int = 0
    refused_peers: int = 0
    dropped: int = 0    # messages or frames dropped over a rate or queue bound
    log_held: int = 0   # log lines about peers held back by the per-peer and overall limits
    sessions: int = 0
    skipped: int = 0    # decoded but not rendered: the renderer was behind and showed a newer frame
    arrived_at: dict = field(default_factory=dict)    # seq -> wall time decoded
    rendered_at: dict = field(default_factory=dict)   # seq -> wall time rendered
    reasons: Counter = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        """Count a rejected message under its kind: the reason with key fingerprints folded to ``KEY`` and
        digits to ``#``, its first 64 characters."""
        self.rejected += 1
        kind = re.sub(r"\d", "#", re.sub(r"[0-9a-f]{4}(:[0-9a-f]{4})+", "KEY", reason))[:64]
        if kind not in self.reasons and len(self.reasons) >= MAX_REASON_KINDS:
            kind = "other"
        self.reasons[kind] += 1

    @staticmethod
    def timed(times: dict, seq: int, t: float) -> None:
        """Record ``seq``'s wall time in ``times`` (arrived_at, rendered_at) while under :data:`MAX_TIMED`."""
        if len(times) < MAX_TIMED:
            times[seq] = t


def latency_report(sent: SendStats, got: ReceiveStats, warmup: int = 25) -> dict:
    """End-to-end latency (frame available at the sender -> decoded, -> rendered) in ms, over all frames
    and after the first ``warmup`` frames (the receiver builds the head and its renderer on the INIT),
    and the sustained rendering rate."""
    seqs = sorted(sent.sent_at)
    steady = set(seqs[warmup:])
    dec = [1000 * (got.arrived_at[s] - sent.sent_at[s]) for s in seqs if s in got.arrived_at]
    ren = [1000 * (got.rendered_at[s] - sent.sent_at[s]) for s in seqs if s in got.rendered_at]
    ren_s = [1000 * (got.rendered_at[s] - sent.sent_at[s]) for s in seqs if s in got.rendered_at and s in steady]
    r_times = sorted(got.rendered_at[s] for s in steady if s in got.rendered_at)
    fps = (len(r_times) - 1) / (r_times[-1] - r_times[0]) if len(r_times) > 1 and r_times[-1] > r_times[0] else 0.0
    pct = lambda a, q: float(np.percentile(a, q)) if a else float("nan")  # noqa: E731
    return {"frames_sent": sent.sent, "frames_decoded": got.frames, "frames_rendered": len(got.rendered_at),
            "frames_skipped_by_renderer": got.skipped,
            "latency_decode_ms_median": pct(dec, 50), "latency_decode_ms_p95": pct(dec, 95),
            "latency_render_ms_median": pct(ren, 50), "latency_render_ms_p95": pct(ren, 95),
            "latency_render_ms_p95_steady": pct(ren_s, 95), "warmup_frames": warmup,
            "sustained_fps": float(fps), "sessions": sent.sessions, "rejected": got.rejected}
