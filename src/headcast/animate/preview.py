"""The preview video of ``headcast animate``: the input frame with its landmarks beside the subject's head
rendered for each frame's parameters (:class:`HeadView`, OpenGL), encoded while the next frames are made.

The head is posed in numpy (:class:`headcast.model.skinning.FixedShape`, the subject's beta folded in once).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from headcast.animate.subject import Subject, subject_light
from headcast.animate.video import PANEL, Prefetched, VideoInfo, VideoWriter, read_frames
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
            self.renderer = MeshRenderer(m.faces, m.n_vertices, uv=uv, uv_faces=uvf, texture=img)
        else:
            self.renderer = MeshRenderer(m.faces, m.n_vertices, colors=eye_colors(m))
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
                                      parts=vertices[V:])
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


def write_preview_video(path: Path, video: str | Path, subject: Subject, observations: list, frames: list,
                        info: VideoInfo, threshold: float, light: str = DEFAULT_LIGHT) -> tuple[float, list[np.ndarray]]:
    """Write the side-by-side MP4 of ``frames`` (TrackedFrame, one per video frame) with the detected
    ``observations`` (Observation or None) over the ``video`` described by ``info`` (its frame rate is
    the MP4's), the head lit by ``light`` (:class:`HeadView`); returns the
    seconds it took and four composed frames for a still. The video is decoded again, ahead of use
    (:func:`headcast.animate.video.Prefetched`), and encoded in ffmpeg while the next frames render."""
    view = HeadView(subject, light=light)
    fps = info.fps
    n = len(frames)
    keep = set(np.linspace(0, n - 1, 4).round().astype(int).tolist()) if n else set()
    stills = []
    t0 = time.perf_counter()
    writer = VideoWriter(path, fps)
    images = Prefetched(read_frames(video, n, info))
    try:
        for a in range(0, n, 16):
            chunk = frames[a:a + 16]
            verts = view.vertices(np.array([f.theta for f in chunk]), np.array([f.psi for f in chunk]))
            for k, (fr, v) in enumerate(zip(chunk, verts)):
                i = a + k
                obs = observations[i]
                if fr.face_found:
                    text = f"frame {i}  t {i / fps:6.2f} s  Loss5 {fr.loss:.3f}  iterations {fr.iterations}"
                    warn = not fr.loss < threshold
                else:
                    text = f"frame {i}  t {i / fps:6.2f} s  no face: holding the last parameters"
                    warn = True
                img = compose(next(images), view.render(v), None if obs is None else obs.landmarks,
                              fr.landmarks if fr.face_found else None, text, warn)
                writer.append_data(img)
                if i in keep:
                    stills.append(img)
            if (a // 16) % 10 == 9:
                logger.info(f"animate: video {min(a + 16, n)}/{n} frames")
    finally:
        images.close()
        writer.close()
        view.release()
    return time.perf_counter() - t0, stills
