"""The receiver's MP4: a worker thread renders the shown session's decoded frames, in order, with the
head its INIT described (:class:`~headcast.stream.renderer.ReceivedHeadRenderer`), so decoding never
waits for rendering. Its queue is bounded (a full queue drops frames and counts them), a head that
cannot be built ends that session's picture with one log line (the worker carries on), and a sequence
gap is held in the video only as long as the frames' arrival times allow (a forged jump cannot pad the MP4).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from headcast.stream.metrics import ReceiveStats
from headcast.stream.peers import shown
from headcast.stream.session import DecodedFrame
from headcast.stream.wire import InitInfo

logger = logging.getLogger(__name__)

LAG_SECONDS = 0.1  # default renderer backlog before it skips to the newest frame (live view over completeness)
MAX_QUEUE = 256    # items waiting for the worker (frames of ~1.3 KB each); beyond it frames are dropped
MAX_HOLD = 250     # frames of the previous picture one gap may add to the video


def head_key(info: InitInfo) -> tuple:
    """What makes two INITs the same head (model, beta, albedo): a reconnecting sender keeps its renderer."""
    return (info.model, np.asarray(info.beta, np.float32).tobytes(), hashlib.sha256(info.albedo_png or b"").digest())


class RenderWorker(threading.Thread):
    """Renders decoded frames, in order, into an MP4 at the stream's rate. While its backlog is at
    most ``max_lag`` frames it renders every frame; beyond that it jumps to the newest one (bounded
    latency). Lost or skipped frames repeat the previous picture, so the video keeps its timing, but
    never for more than twice the time that passed between the two frames' arrivals.

    The receiver calls :meth:`init` (a session it shows: its INIT and admitted model) and :meth:`frame`,
    then :meth:`stop`; an unexpected exception in the thread is kept in ``error``. ``out`` None: render
    without writing.
    """

    def __init__(self, out: Path | None, stats: ReceiveStats, size: int, model, max_lag: int | None):
        super().__init__(daemon=True)
        self.q: queue.Queue = queue.Queue(MAX_QUEUE)
        self.out, self.stats, self.size, self.model, self.max_lag = out, stats, size, model, max_lag
        self.error: BaseException | None = None
        self.renderer = None
        self.key: tuple | None = None
        self.writer = None
        self.fps = 25.0
        self.lag = 0
        self.last_seq: int | None = None
        self.last_img: np.ndarray | None = None
        self.last_at = 0.0
        self._later: list = []  # items taken from the queue, to handle after the pending frames

    # -- the receiver's side (its event loop; never blocks) -------------------------------------
    def init(self, info: InitInfo, model=None) -> None:
        """A new shown session (never dropped: on a full queue its oldest frame makes room, counted)."""
        while True:
            try:
                self.q.put_nowait(("init", info, model))
                return
            except queue.Full:
                self._drop_one()

    def frame(self, f: DecodedFrame) -> None:
        """A decoded frame of the shown session, queued for rendering (dropped when the queue is full)."""
        try:
            self.q.put_nowait(("frame", f, time.perf_counter()))
        except queue.Full:
            self.stats.dropped += 1

    def stop(self) -> None:
        """Finish: the frames queued so far are rendered, then the MP4 is closed."""
        while True:
            try:
                self.q.put(None, timeout=0.1)
                return
            except queue.Full:
                if not self.is_alive():
                    return

    def _drop_one(self) -> None:
        try:
            item = self.q.get_nowait()
        except queue.Empty:
            return
        if item is None:  # the stop marker stays (it is put last)
            self.q.put_nowait(item)
        else:  # the oldest frame or a superseded session's INIT
            self.stats.dropped += 1

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        pending: list[tuple[DecodedFrame, float]] = []  # (frame, when it arrived)
        stop = False
        try:
            while not (stop and not pending):
                stop = self._take(pending, block=not pending and not stop) or stop
                if self.renderer is None or not pending:
                    pending.clear()
                    continue
                if self.lag and len(pending) > self.lag:
                    self.stats.skipped += len(pending) - 1
                    del pending[:-1]
                self._show(*pending.pop(0))
        except BaseException as e:  # surfaced by receive()
            self.error = e
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.renderer is not None:
                self.renderer.release()

    def _take(self, pending: list, block: bool) -> bool:
        """Move the queued frames to ``pending`` (waiting for one item when ``block``), switch heads on an
        INIT; True when the stop marker came."""
        items, self._later = self._later or ([self.q.get()] if block else []), []
        while True:
            try:
                items.append(self.q.get_nowait())
            except queue.Empty:
                break
        stop = False
        for i, item in enumerate(items):
            if item is None:
                stop = True
            elif item[0] == "frame":
                pending.append(item[1:])
            elif pending:  # a new session: the frames before it are rendered with their own head first
                self._later = items[i:]
                break
            else:
                self._start(item[1], item[2])
        return stop

    def _start(self, info: InitInfo, model) -> None:
        """Show the head of ``info`` (kept when it is the head already shown); a head that cannot be
        built is logged once and its frames are dropped until the next session."""
        from headcast.stream.renderer import ReceivedHeadRenderer

        key = head_key(info)
        if key != self.key:
            if self.renderer is not None:
                self.renderer.release()
            self.renderer, self.key = None, None
            try:
                self.renderer = ReceivedHeadRenderer(info, self.size, model if model is not None else self.model)
            except Exception as e:  # the session's head only; the recording goes on
                logger.info(f"receive: cannot render the head of {shown(info.sender)}: "
                            f"{shown(f'{e.__class__.__name__}: {e}', 160)}; its frames are dropped")
                return
            self.key = key
        self.lag = self.max_lag if self.max_lag is not None else max(1, round(info.fps * LAG_SECONDS))
        if self.out is not None and self.writer is None:
            from headcast.animate.video import VideoWriter

            self.fps = info.fps
            # encoded by ffmpeg from a queue (x264 veryfast): a frame's rendering never waits for the encoder
            self.writer = VideoWriter(self.out, info.fps, crf=15, macro_block_size=16)

    def _show(self, f: DecodedFrame, arrived: float) -> None:
        img = self.renderer.render(f)
        now = time.perf_counter()
        ReceiveStats.timed(self.stats.rendered_at, f.seq, now)
        if self.writer is not None:
            if self.last_seq is not None and self.last_img is not None:
                # a held gap is bounded by the time between the two frames' arrivals here (not by their seq)
                allowed = int(2 * (arrived - self.last_at) * self.fps) + 2
                for _ in range(min(max(0, f.seq - self.last_seq - 1), MAX_HOLD, allowed)):
                    self.writer.append_data(self.last_img)
                    self.stats.padded += 1
            self.writer.append_data(img)
            self.stats.written += 1
        self.last_seq, self.last_img, self.last_at = f.seq, img, arrived
