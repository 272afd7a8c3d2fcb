"""What a live link measured: the sender's and receiver's counts and times, and the latency report."""

from __future__ import annotations

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



@dataclass
class ReceiveStats:
    """What a receiver did: frames decoded, written to the MP4, rejected messages (with reasons), sessions,
    frames the renderer skipped; wall times of decoding and rendering by seq."""

    frames: int = 0
    written: int = 0
    rejected: int = 0
    sessions: int = 0
    skipped: int = 0    # decoded but not rendered: the renderer was behind and showed a newer frame
    arrived_at: dict = field(default_factory=dict)    # seq -> wall time decoded
    rendered_at: dict = field(default_factory=dict)   # seq -> wall time rendered
    reasons: list = field(default_factory=list)



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
