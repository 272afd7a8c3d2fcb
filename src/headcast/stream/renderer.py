"""The receiver's picture: the head an INIT describes, rendered frame by frame into an MP4 by a worker
thread (so decoding never waits for rendering)."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.stream.metrics import ReceiveStats
from headcast.stream.session import DecodedFrame
from headcast.stream.wire import InitInfo

LAG_SECONDS = 0.1  # default renderer backlog before it skips to the newest frame (live view over completeness)


def init_head(info: InitInfo, model=None):
    """The head model an INIT names (``model`` when the names match, else resolved here) and the sent beta
    zero-padded to its components; HeadcastError when the sizes disagree."""
    if model is None or model.name != info.model:
        from headcast.model.registry import resolve_model

        model = resolve_model(info.model, build_missing=info.model == "ict")
    if model.n_shape < info.n_shape or model.n_expr != info.n_expr:
        raise HeadcastError(f"model {info.model!r} here has {model.n_shape}/{model.n_expr} components, "
                            f"the stream {info.n_shape}/{info.n_expr}")
    beta = np.zeros(model.n_shape)
    beta[:info.n_shape] = info.beta
    return model, beta


def init_light(info: InitInfo) -> np.ndarray | None:
    """The SH light (9, 3) an INIT carries (its lam), or None."""
    return None if info.lam is None else np.asarray(info.lam, dtype=np.float64).reshape(9, 3)


class ReceivedHeadRenderer:
    """Rebuilds the head from an INIT (model, beta, albedo, SH light lam) and renders frames (theta, psi)
    with the animation stage's fixed face camera (OpenGL), lit by the sent 27 SH numbers like the
    sender's previews (the neutral light when the INIT has none)."""

    def __init__(self, info: InitInfo, size: int = 512, model=None):
        from headcast.animate.pipeline import HeadView, Subject
        from headcast.core.params import N_POSE, HeadParams

        model, beta = init_head(info, model)
        texture = self._texture(info, model)
        params = HeadParams(beta, np.zeros(model.n_expr), np.zeros(N_POSE), model=info.model)
        self.view = HeadView(Subject(params, model, texture, init_light(info)), size)

    @staticmethod
    def _texture(info: InitInfo, model):
        if not info.albedo_png or model.uv is None:
            return None
        from headcast.io.validate import read_image
        from headcast.texture.atlas import build_atlas

        img = read_image("albedo map", "the stream's", data=bytes(info.albedo_png), formats=("PNG",))
        atlas = build_atlas(model.uv, model.uv_faces, model.v_template, model.faces)
        return img, atlas.uv, atlas.uv_faces

    def render(self, f: DecodedFrame) -> np.ndarray:
        return self.view.render(self.view.vertices(f.theta[None], f.psi[None])[0])

    def release(self) -> None:
        self.view.release()


class RenderWorker(threading.Thread):
    """Renders decoded frames, in order, into an MP4 at the stream's rate. While its backlog is at
    most ``max_lag`` frames it renders every frame; beyond that it jumps to the newest one (bounded
    latency). Lost or skipped frames repeat the previous picture, so the video keeps its timing.

    Feed ``q`` with ``("init", InitInfo)`` and ``("frame", DecodedFrame)``, then ``None`` to stop; an
    exception in the thread is kept in ``error``. ``out`` None: render without writing.
    """

    def __init__(self, out: Path | None, stats: ReceiveStats, size: int, model, max_lag: int | None):
        super().__init__(daemon=True)
        self.q: queue.Queue = queue.Queue()
        self.out, self.stats, self.size, self.model, self.max_lag = out, stats, size, model, max_lag
        self.error: BaseException | None = None
        self.renderer: ReceivedHeadRenderer | None = None
        self.writer = None
        self.lag = 0
        self.last_seq: int | None = None
        self.last_img: np.ndarray | None = None

    def init(self, info: InitInfo) -> None:
        """A new session (the receiver's :class:`~headcast.stream.receiver.Sink` call)."""
        self.q.put(("init", info))

    def frame(self, f: DecodedFrame) -> None:
        """A decoded frame, queued for rendering."""
        self.q.put(("frame", f))

    def run(self) -> None:
        pending: list[DecodedFrame] = []
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
                self._show(pending.pop(0))
        except BaseException as e:  # surfaced by receive()
            self.error = e
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.renderer is not None:
                self.renderer.release()

    def _take(self, pending: list[DecodedFrame], block: bool) -> bool:
        """Move the queued frames to ``pending`` (waiting for one item when ``block``), start on the
        first INIT; True when the stop marker came."""
        items = [self.q.get()] if block else []
        while True:
            try:
                items.append(self.q.get_nowait())
            except queue.Empty:
                break
        stop = False
        for item in items:
            if item is None:
                stop = True
            elif item[0] == "frame":
                pending.append(item[1])
            elif self.renderer is None:  # the head is the same for every session of one sender
                self._start(item[1])
        return stop

    def _start(self, info: InitInfo) -> None:
        self.renderer = ReceivedHeadRenderer(info, self.size, self.model)
        self.lag = self.max_lag if self.max_lag is not None else max(1, round(info.fps * LAG_SECONDS))
        if self.out is not None:
            import imageio.v2 as iio2

            self.writer = iio2.get_writer(self.out, fps=info.fps, codec="libx264", quality=7, macro_block_size=16)

    def _show(self, f: DecodedFrame) -> None:
        img = self.renderer.render(f)
        self.stats.rendered_at[f.seq] = time.perf_counter()
        if self.writer is not None:
            if self.last_seq is not None and self.last_img is not None:
                for _ in range(min(max(0, f.seq - self.last_seq - 1), 250)):
                    self.writer.append_data(self.last_img)
            self.writer.append_data(img)
            self.stats.written += 1
        self.last_seq, self.last_img = f.seq, img
