"""One batch worker: a long-lived process (a Ray actor) that runs jobs one after another with the same
library calls as the single commands, its threads pinned and its head models and landmark detector
loaded once (MediaPipe's graphs and dlib's predictor are cached per process by
:mod:`headcast.preprocess.landmarks`; a video's tracking landmarker is a fresh instance per video (0.02 s),
as it keeps the track).

A job never raises: a bad input, or any other exception, becomes its row's ``failed`` status and a
one-line error, and the worker goes on with the next job.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from headcast.batch.jobs import FIGURES, Job, figures
from headcast.core import memory
from headcast.core.errors import HeadcastError
from headcast.core.threads import pin
from headcast.io import recon
from headcast.io.outputs import read_manifest
from headcast.model.head_model import HeadModel

logger = logging.getLogger(__name__)

# the single commands' options each kind takes (the CLI passes them through by these names)
OPTIONS = {
    "reconstruct": ("depth_scale", "rotate", "model", "method", "landmarks", "face", "forehead", "hull_margin",
                    "w_beta", "w_psi", "grow_mm", "seed", "fit_quiet", "texture", "albedo_model", "texture_size",
                    "max_frames", "detail", "expression", "sweep"),
    "animate": ("model", "threshold", "max_iters", "max_frames", "no_video", "fps", "light"),
    "texture": ("albedo_model", "n_components", "size", "model"),
}
COLUMNS = ("name", "kind", "input", "status", "error", "seconds", "node", "attempts", *FIGURES, "cpu_s",
           "worker_rss_mb", "overhead_s")


def check_options(kind: str, options: dict) -> None:
    """Refuse option names ``kind``'s single command does not have, and out-of-range values, before any job."""
    from headcast.io.validate import check_options as check_ranges

    unknown = sorted(set(options) - set(OPTIONS[kind]))
    if unknown:
        raise HeadcastError(f"batch {kind} has no option {unknown[0]!r} (it takes {', '.join(OPTIONS[kind])})")
    if kind == "reconstruct" and options.get("sweep") and (
            options.get("method", "full") != "full" or options.get("face") is not None or options.get("forehead")
            or options.get("depth_scale") is not None):
        raise HeadcastError("--method, --face, --forehead and --depth-scale are for one frame; a --sweep job fits "
                            "the full method to the whole head")
    if kind == "reconstruct" and not options.get("sweep") and options.get("expression") == "per-frame":
        raise HeadcastError("--expression per-frame is for --sweep jobs; one frame has one expression")
    check_ranges(options)


def one_line(e: BaseException) -> str:
    """An exception as one line: a HeadcastError's own text, anything else with its class name."""
    text = " ".join(str(e).split()) or e.__class__.__name__
    return text if isinstance(e, HeadcastError) else f"{e.__class__.__name__}: {text}"


def _pick(options: dict, **names: str) -> dict:
    """Keyword arguments from the options that are set: ``param=option_name`` (unset ones keep the
    stage's own default)."""
    return {param: options[key] for param, key in names.items() if options.get(key) is not None}


class Worker:
    """Runs batch jobs in one process; ``threads``: the size of its native thread pools."""

    def __init__(self, threads: int = 1):
        pin(threads)
        memory.keep_freed_blocks()  # as the program does: a worker runs fit after fit
        self.threads = threads
        self.models: dict[str, HeadModel] = {}
        self.node = node_name()
        try:  # load the default model and MediaPipe now, once, rather than in the first job
            from headcast.animate.video import VideoLandmarker
            from headcast.model.registry import DEFAULT_MODEL

            self.model(DEFAULT_MODEL)
            VideoLandmarker().close()
        except HeadcastError as e:  # a job that needs them reports it
            logger.warning(f"batch worker: {e}")

    def model(self, spec: str) -> HeadModel:
        """The head model ``spec`` (name or path), loaded once per worker."""
        from headcast.model.registry import resolve_model

        if spec not in self.models:
            self.models[spec] = resolve_model(spec)
        return self.models[spec]

    def run(self, job: Job, force: bool = False) -> dict:
        """Run ``job``; its summary row (see :data:`COLUMNS`)."""
        t0, c0 = time.perf_counter(), cpu_seconds()
        row = {"name": job.name, "kind": job.kind, "input": job.input, "node": self.node}
        try:
            {"reconstruct": self._reconstruct, "animate": self._animate, "texture": self._texture}[job.kind](job, force)
            row.update(status="ok", **figures(job))
        except Exception as e:  # the job's own failure; the worker carries on
            logger.warning(f"batch: {job.name} failed: {one_line(e)}")
            row.update(status="failed", error=one_line(e))
        row["seconds"] = time.perf_counter() - t0
        row["cpu_s"] = cpu_seconds() - c0
        row["worker_rss_mb"] = peak_rss_mb()
        return row

    def _reconstruct(self, job: Job, force: bool) -> None:
        from headcast.fit.config import FitConfig
        from headcast.fit.reconstruct import reconstruct_frame
        from headcast.model.registry import DEFAULT_MODEL
        from headcast.preprocess.rgbd import load_rgbd

        o, out = job.options, Path(job.target)
        model = self.model(o.get("model") or DEFAULT_MODEL)
        if o.get("sweep") and (force or not _fitted(out)):
            self._sweep(job, model, force)
        elif force or not _fitted(out):  # else only the texture is missing (an interrupted earlier run)
            t0 = time.perf_counter()
            frame = load_rgbd(job.input, **_pick(o, depth_scale="depth_scale", rotate="rotate", method="landmarks"))
            cfg = FitConfig(**_pick(o, w_beta="w_beta", w_psi="w_psi", grow_mm="grow_mm", seed="seed"))
            reconstruct_frame(frame, model, out, config=cfg, started=t0, force=force,
                              **_pick(o, method="method", landmarks="landmarks", face="face", forehead="forehead",
                                      hull_margin="hull_margin"))
        if o.get("texture"):
            from headcast.texture.pipeline import texture_reconstruction

            texture_reconstruction(out, model=model, force=force, **_pick(o, albedo_model="albedo_model",
                                                                          size="texture_size"))

    @staticmethod
    def _sweep(job: Job, model: HeadModel, force: bool) -> None:
        """One head from the frames of the folder ``job.input``, as ``headcast reconstruct FOLDER``."""
        from headcast.fit.config import FitConfig
        from headcast.fit.sweep import SweepConfig, reconstruct_sweep

        o = job.options
        sweep = SweepConfig(**_pick(o, max_frames="max_frames", detail="detail", expression="expression"))
        reconstruct_sweep([job.input], model, Path(job.target), config=FitConfig(**_pick(o, w_beta="w_beta",
                          w_psi="w_psi", seed="seed")), sweep=sweep, force=force,
                          **_pick(o, rotate="rotate", landmarks="landmarks"))

    def _animate(self, job: Job, force: bool) -> None:
        from headcast.animate.drivers import drive, is_driver_file
        from headcast.animate.pipeline import animate

        o = job.options
        _, params = recon.read_checked(job.recon_dir)
        model = self.model(o.get("model") or params.model)
        if is_driver_file(job.input):  # a Live Link Face .csv take, as 'headcast animate' drives it
            drive(Path(job.recon_dir), Path(job.input), Path(job.target), model_spec=model,
                  write_video=not o.get("no_video"), force=force,
                  **_pick(o, fps="fps", max_frames="max_frames", light="light"))
            return
        if o.get("fps") is not None:
            raise HeadcastError("--fps is for a .csv take (a video states its own frame rate)")
        animate(job.recon_dir, job.input, job.target, model_spec=model, write_video=not o.get("no_video"),
                force=force, **_pick(o, threshold="threshold", max_iters="max_iters", max_frames="max_frames",
                                     light="light"))

    def _texture(self, job: Job, force: bool) -> None:
        from headcast.texture.pipeline import texture_reconstruction

        o = job.options
        _, params = recon.read_checked(job.input)
        if o.get("model") and o["model"] != params.model:
            raise HeadcastError(f"{job.input} was fitted with model {params.model!r}, not {o['model']!r}")
        texture_reconstruction(job.input, model=self.model(params.model), force=force,
                               **_pick(o, albedo_model="albedo_model", n_components="n_components", size="size"))

    def ready(self) -> str:
        """The worker's node (a call that returns once the worker has started)."""
        return self.node


def _fitted(out: Path) -> bool:
    m = read_manifest(out)
    return m is not None and m["kind"] == recon.KIND and recon.FIT_REPORT in m["files"]


def node_name() -> str:
    """``host:node`` (the first 8 hex digits of the Ray node id; the host alone outside Ray, where asking Ray
    for its context would start a local Ray)."""
    host = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{host}:{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001 - the name only labels the summary's rows
        pass
    return host


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's threads and of its finished child processes (ffmpeg)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

