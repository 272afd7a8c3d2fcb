"""``headcast animate RECON_DIR take.csv | flame_param.npz --out DIR``: drive the head from recorded curves
instead of a video: a Live Link Face CSV take (ARKit curves and angles, through the model's ARKit map,
:mod:`headcast.model.arkit`) or a FLAME parameter file (:mod:`headcast.io.flame_params`).

The outputs are a video drive's (:mod:`headcast.animate.pipeline`): ``params.npz`` and ``frames.jsonl``
(theta, psi, the placement, the subject's beta; the camera as ``camera_K`` and ``image_size``),
``report.json``, ``animation.mp4`` (the head, as the video drive's right panel) and ``preview.png``.
The subject keeps its own identity (a FLAME file's ``shape`` is not used). A Live Link take has no
head position: the head stays where the reconstruction placed it, in the reconstruction's camera.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcast.animate.subject import Subject, load_subject
from headcast.animate.video import PANEL
from headcast.core.camera import FLIP, Intrinsics
from headcast.core.errors import HeadcastError
from headcast.io import anim as anim_io
from headcast.io import recon
from headcast.io.outputs import check_output_dir, shown, staged_dir
from headcast.io.validate import check_number, check_options
from headcast.render.gl import DEFAULT_LIGHT

logger = logging.getLogger(__name__)

DRIVER_SUFFIXES = (".csv", ".npz")


@dataclass
class Driven:
    """Per-frame parameters read from a driver file: times (N,) s, theta (N, N_POSE), psi (N, E),
    placement (N, 4) similarity, fps, the camera, the driver's kind and notes for the report."""

    times: np.ndarray
    theta: np.ndarray
    psi: np.ndarray
    placement: np.ndarray
    fps: float
    camera: Intrinsics
    kind: str
    notes: dict = field(default_factory=dict)


def is_driver_file(path: str | Path) -> bool:
    """Whether ``path`` names a curves file (``.csv``, ``.npz``) rather than a video."""
    return Path(path).suffix.lower() in DRIVER_SUFFIXES


def read_driver(path: str | Path, subject: Subject, camera: Intrinsics, fps: float | None = None) -> Driven:
    """The parameters a driver file gives the subject's model, placed in ``camera``."""
    path = Path(path)
    m, p = subject.model, subject.params
    if path.suffix.lower() == ".csv":
        from headcast.io.livelink import read_livelink
        from headcast.model.arkit import arkit_map

        take = read_livelink(path, fps)
        amap = arkit_map(m)
        theta, psi = amap.params(take.curves, take.rotations)
        placement = np.tile(np.r_[p.scale, p.translation], (len(theta), 1))
        return Driven(take.times, theta, psi, placement, take.fps, camera, "livelink",
                      {"fps_from": "--fps" if fps is not None else "the timecodes", "arkit_map": amap.report})
    if path.suffix.lower() == ".npz":
        from headcast.io.flame_params import read_flame_params

        fp = read_flame_params(path, fps or 25.0)
        E = fp.expr.shape[1]
        if E > m.n_expr:
            raise HeadcastError(f"{path}: expr has {E} values per frame; model {m.name!r} has {m.n_expr}")
        psi = np.pad(fp.expr, ((0, 0), (0, m.n_expr - E)))
        t = fp.scale[:, None] * (fp.translation @ FLIP.astype(np.float64))
        return Driven(fp.times, fp.theta, psi, np.c_[fp.scale, t], fp.fps, fp.camera or camera, "flame-npz",
                      {"expressions_in_file": E})
    raise HeadcastError(f"{path}: a driver is a video, a Live Link Face .csv take or a flame_param .npz")


def drive(recon_dir: str | Path, driver: str | Path, out_dir: str | Path, model_spec: str | None = None,
          write_video: bool = True, fps: float | None = None, max_frames: int | None = None,
          force: bool = False, light: str = DEFAULT_LIGHT) -> dict:
    """Animate the head in ``recon_dir`` with the curves in ``driver``; write ``out_dir``; return the report.
    ``light``: the MP4's lighting, as ``headcast animate --light`` (fitted or neutral)."""
    t0 = time.perf_counter()
    check_options({"max_frames": max_frames})  # None: every frame
    if fps is not None:
        check_number(fps, "--fps", 1, 1000)
    check_output_dir(out_dir, anim_io.KIND, force=force, inputs=(recon_dir, driver))  # refuse before the work
    subject = load_subject(recon_dir, model_spec)
    camera = recon.read_intrinsics(recon_dir) or Intrinsics.nominal(PANEL, PANEL)
    d = read_driver(driver, subject, camera, fps)
    n = len(d.times) if max_frames is None else min(len(d.times), max_frames)
    anim = anim_io.Animation(d.times[:n], d.theta[:n], d.psi[:n], d.placement[:n], np.ones(n, bool), d.fps,
                             subject.params.beta, subject.model.name,
                             {"camera_K": d.camera.K, "image_size": np.array([d.camera.width, d.camera.height])})
    report = {"frames": n, "fps_video": d.fps, "driver": {"file": str(driver), "kind": d.kind, **d.notes},
              "model": subject.model.name, "textured": subject.texture is not None,
              "seconds": {"read": time.perf_counter() - t0}}
    logger.info(f"animate: {n} frames at {d.fps:g} fps from {d.kind} {driver}")
    with staged_dir(out_dir, anim_io.KIND, force=force, inputs=(recon_dir, driver)) as tmp:
        if write_video:
            report["seconds"]["video"] = write_driven_video(tmp, subject, anim, Path(driver).name, light)
        anim_io.write_animation(tmp, anim, (), report)
    logger.info(f"animate: wrote {shown(out_dir)}/ (params.npz, frames.jsonl, report.json"
                f"{', animation.mp4, preview.png' if write_video else ''})")
    return report


def write_driven_video(folder: Path, subject: Subject, anim: anim_io.Animation, source: str,
                       light: str = DEFAULT_LIGHT) -> float:
    """animation.mp4 (the head with a caption) and preview.png (four frames) in ``folder``; returns seconds."""
    import cv2

    from headcast.animate.preview import HeadView  # torch: only when a video is made
    from headcast.animate.video import VideoWriter
    from headcast.render.images import save_png

    t0 = time.perf_counter()
    view = HeadView(subject, light=light)
    n = anim.n_frames
    keep = set(np.linspace(0, n - 1, 4).round().astype(int).tolist())
    stills = []
    writer = VideoWriter(folder / anim_io.VIDEO, anim.fps)
    try:
        for a in range(0, n, 16):
            verts = view.vertices(anim.theta[a:a + 16], anim.psi[a:a + 16])
            for k, v in enumerate(verts):
                img = np.ascontiguousarray(view.render(v))
                cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
                cv2.putText(img, f"frame {a + k}  t {anim.times[a + k]:6.2f} s  {source}"[:60], (6, 16),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
                writer.append_data(img)
                if a + k in keep:
                    stills.append(img)
    finally:
        writer.close()
        view.release()
    rows = [np.hstack(stills[k:k + 2]) for k in range(0, len(stills) - 1, 2)] or stills[:1]
    save_png(folder / anim_io.PREVIEW, np.vstack(rows))
    return time.perf_counter() - t0
