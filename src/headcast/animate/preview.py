"""The preview video of ``headcast animate``: the input frame with its landmarks beside the subject's head
rendered for each frame's parameters (:class:`HeadView`, OpenGL), encoded while the next frames are made.

The head is posed in numpy (:class:`headcast.model.skinning.FixedShape`, the subject's beta folded in once).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from headcast.animate.subject import Subject, subject_light
from headcast.animate.video import PANEL, Prefetched, SharedFrames, VideoInfo, VideoWriter
from headcast.core.camera import Intrinsics, to_camera
from headcast.model.cavity import interior_of
from headcast.model.eyes import eye_colors
from headcast.model.skinning import FixedShape
from headcast.render.gl import DEFAULT_LIGHT

logger = logging.getLogger(__name__)


class HeadView:
    """Renders the subject's head for (theta, psi) in a fixed square camera looking at its face, lit by
    :func:`subject_light` (``light``: fitted or neutral). The camera's view frame is the model frame, so
    the fitted light stays where the capture camera saw it while the head turns."""

    def __init__(self, subject: Subject, size: int = PANEL, light: str = DEFAULT_LIGHT):
        from headcast.animate.builtin import head_placement
        from headcast.render.gl import MeshRenderer

        m = subject.model
        self.model, self.beta = m, subject.params.beta.astype(np.float64)
        f = 1.9 * size
        self.K = Intrinsics(f, f, (size - 1) / 2, (size - 1) / 2 + 0.06 * size, size, size)
        self.t = head_placement(m, self.beta, distance=0.75)
        if subject.texture is not None:
            img, uv, uvf = subject.texture
            self.renderer = MeshRenderer(m.faces, m.n_vertices, uv=uv, uv_faces=uvf, texture=img, vertex_light=True)
        else:
            self.renderer = MeshRenderer(m.faces, m.n_vertices, colors=eye_colors(m), vertex_light=True)
        self.renderer.cull_back = True  # the head's back faces: ~15 % of the render, <= 4 silhouette pixels a frame
        self.textured = subject.texture is not None
        self.light = subject_light(subject, light)
        interior = interior_of(m)
        if interior is not None:
            self.renderer.add_parts(interior.faces, interior.colors)
        self.shape = FixedShape(m, self.beta, interior)

    def vertices(self, theta: np.ndarray, psi: np.ndarray) -> np.ndarray:
        """Camera-frame vertices (B, V + P, 3) for theta (B, N_POSE), psi (B, E): the head's V, then the
        mouth interior's P (none without one)."""
        return to_camera(self.shape.vertices(theta, psi).astype(np.float64), 1.0, self.t)

    def render(self, vertices: np.ndarray) -> np.ndarray:
        V = self.model.n_vertices
        img, _ = self.renderer.render(vertices[:V], self.K, background=(34, 36, 40), light=self.light,
                                      parts=vertices[V:], coverage=False)
        return img

    def release(self) -> None:
        self.renderer.release()


def compose(frame: np.ndarray, head: np.ndarray, detected: np.ndarray | None, fitted: np.ndarray | None,
            text: str, warn: bool) -> np.ndarray:
    """Input frame (scaled to the panel height) with landmarks, beside the rendered head; a caption line."""
    import cv2

    H, W = frame.shape[:2]
    s = PANEL / H
    w = int(round(W * s / 2)) * 2
    left = cv2.resize(frame, (w, PANEL), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    for pts, colour, r in ((fitted, (255, 60, 60), 2), (detected, (60, 255, 60), 1)):
        if pts is None:
            continue
        for x, y in np.rint((pts + 0.5) * s - 0.5).astype(int):
            cv2.circle(left, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
    out = np.hstack([left, head])
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 120, 80) if warn else (230, 230, 230), 1,
                cv2.LINE_AA)
    return out


def write_preview_video(path: Path, frames: Iterable[np.ndarray], subject: Subject, items: Iterable,
                        info: VideoInfo, threshold: float, light: str = DEFAULT_LIGHT, expected: int = 0
                        ) -> tuple[float, list[np.ndarray]]:
    """Write the side-by-side MP4 of ``items``, (Observation or None, TrackedFrame) per video frame in
    order (a list, or an iterator that yields them as they are tracked), over the video's ``frames`` in
    order (a :class:`SharedFrames`' or :func:`read_frames`') described by ``info`` (its frame rate is the
    MP4's), the head lit by ``light`` (:class:`HeadView`); returns the seconds it took and four composed
    frames for a still: three spread over the ``expected`` frame count (:func:`expected_frames`) and the
    last. A pipeline: heads posed (numpy) and rendered (OpenGL) each in a thread of their own
    (:func:`_heads`), composed here, encoded in ffmpeg."""
    fps = info.fps
    keep = set(np.linspace(0, expected - 1, 4).round().astype(int)[:3].tolist()) if expected > 1 else {0}
    stills, last = [], None
    t0 = time.perf_counter()
    # superfast at crf 17: 2/3 of veryfast's x264 CPU at crf 15 for the same SSIM against the composed frames
    # (0.989 vs 0.987 on wojtek), files about twice as large (4.5 MB for the 400-frame clip)
    writer = VideoWriter(path, fps, crf=17, preset="superfast")
    images = iter(frames)
    heads = Prefetched(_heads(subject, light, items), depth=4)
    i = 0
    try:
        for obs, fr, head in heads:
            last = compose(next(images), head, None if obs is None else obs.landmarks,
                           fr.landmarks if fr.face_found else None, *_caption(i, fps, fr, threshold))
            writer.append_data(last)
            if i in keep:
                stills.append(last)
            i += 1
            if i % 160 == 0:
                logger.info(f"animate: video {i}{f'/{expected}' if expected else ''} frames")
    finally:
        heads.close()
        getattr(images, "close", lambda: None)()
        writer.close()
    if last is not None and i - 1 not in keep:
        stills.append(last)
    return time.perf_counter() - t0, stills


def _heads(subject: Subject, light: str, items: Iterable) -> Iterator[tuple]:
    """(Observation or None, TrackedFrame, the rendered head (PANEL, PANEL, 3) uint8) per item, rendered in
    the thread that iterates this (its GL context) while the next heads are posed in another."""
    view = HeadView(subject, light=light)
    try:
        with Prefetched(_posed(view, items), depth=32) as posed:
            for obs, fr, v in posed:
                yield obs, fr, view.render(v)
    finally:
        view.release()


def _posed(view: HeadView, items: Iterable) -> Iterator[tuple]:
    """(Observation or None, TrackedFrame, camera-frame vertices (V + P, 3)) per item, posed 16 at a time."""
    items = iter(items)
    while chunk := list(itertools.islice(items, 16)):
        verts = view.vertices(np.array([f.theta for _, f in chunk]), np.array([f.psi for _, f in chunk]))
        yield from ((obs, fr, v) for (obs, fr), v in zip(chunk, verts))


def _caption(i: int, fps: float, fr, threshold: float) -> tuple[str, bool]:
    """The caption of frame ``i`` (TrackedFrame ``fr``) and whether it warns."""
    if fr.face_found:
        return f"frame {i}  t {i / fps:6.2f} s  Loss5 {fr.loss:.3f}  iterations {fr.iterations}", not fr.loss < threshold
    return f"frame {i}  t {i / fps:6.2f} s  no face: holding the last parameters", True


def expected_frames(info: VideoInfo, max_frames: int | None) -> int:
    """The frame count a video's metadata promises (0 when it does not say), at most ``max_frames``."""
    n = info.frames
    return n if max_frames is None else (min(n, max_frames) if n else max_frames)


class PreviewThread:
    """:func:`write_preview_video` in a thread of its own, fed frame by frame with :meth:`add` while the
    caller finds and fits the next frames (MediaPipe and the renderer's llvmpipe run native threads, x264
    its own process); the caller's decoder hands each decoded frame to :attr:`frames` (a
    :class:`SharedFrames`). :meth:`close` waits for the file and returns what the function returns."""

    def __init__(self, path: Path, video: str | Path, subject: Subject | Callable[[], Subject], info: VideoInfo,
                 threshold: float, light: str = DEFAULT_LIGHT, expected: int = 0):
        """``subject``: the head, or a call that returns it (made in the thread, e.g. once its texture is
        made); :attr:`subject` is the head the video shows once :meth:`close` returned."""
        self._queue: queue.Queue = queue.Queue()  # unbounded: the items are small, the caller never waits
        self._ended = False  # the end of the items was read (by whichever of the video's threads reads them)
        self._result: tuple | None = None
        self._error: BaseException | None = None
        self.frames = SharedFrames(video, info)
        self.subject = subject
        args = (path, self.frames.frames(), self._items(), info, threshold, light, expected)
        self._thread = threading.Thread(target=self._run, args=args, name="preview video", daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[tuple]:
        while (item := self._queue.get()) is not None:
            yield item
        self._ended = True

    def _run(self, path, frames, *args) -> None:
        try:
            if callable(self.subject):
                self.subject = self.subject()
            self._result = write_preview_video(path, frames, self.subject, *args)
        except BaseException as e:  # raised in the caller's thread at close
            self._error = e
            self.frames.close()
            while not self._ended and self._queue.get() is not None:  # the caller's later items
                pass
        finally:
            self.frames.close()  # the decoder never waits for this reader again

    def add(self, observation, frame) -> None:
        """The next frame: its Observation (or None) and TrackedFrame."""
        self._queue.put((observation, frame))

    def close(self) -> tuple[float, list[np.ndarray]]:
        """Finish the video (waits); raises what the writer raised."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result
