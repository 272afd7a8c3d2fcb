"""Batch jobs: which inputs make which jobs, their names and output folders, whether a job's output is
already complete, and the key figures a finished job's report gives.

A job is one single command's run: ``reconstruct`` (a frame prefix -> ``OUT/<name>/``), ``animate`` (a
video -> ``OUT/<name>/``) or ``texture`` (a reconstruction folder, textured in place as ``headcast
texture`` does). Inputs are paths on storage every worker sees; the workers read them, not the driver.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from headcast.core.errors import HeadcastError
from headcast.core.files import read_json
from headcast.io import anim, recon
from headcast.io.outputs import STAGING_MARK, read_manifest
from headcast.preprocess.rgbd import COLOR_SUFFIXES

KINDS = ("reconstruct", "animate", "texture")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
MAX_LIST_BYTES = 64 << 20  # an @list.txt of a million paths
# Up to this many jobs, the videos of a batch animate are probed for their frame counts (their headers,
# about 5 ms of CPU a video, while Ray starts) and run longest first. Past it each worker runs so many jobs
# that the last one's length hardly shows, while probing would delay the first.
LONGEST_FIRST_MAX_JOBS = 256
FIGURES = ("p2m_median_mm", "landmarks_3d_mm", "frames", "share_under_threshold", "fps_fitting",
           "fps_end_to_end", "loss4")


@dataclass(frozen=True)
class Job:
    """One job: its ``kind``, unique ``name``, ``input`` path (frame prefix, video or reconstruction folder),
    the ``target`` folder it writes, and for animate the reconstruction folder ``recon_dir``."""

    kind: str
    name: str
    input: str
    target: str
    recon_dir: str | None = None
    options: dict = field(default_factory=dict, compare=False, hash=False)


# ------------------------------------------------------------------ inputs
def read_inputs(items: list[str]) -> list[str]:
    """The command line's inputs with every ``@list.txt`` replaced by its lines (blank lines and ``#``
    comments skipped; relative paths are relative to the list's folder)."""
    out: list[str] = []
    for item in items:
        if not item.startswith("@"):
            out.append(item)
            continue
        path = Path(item[1:])
        try:
            if path.stat().st_size > MAX_LIST_BYTES:
                raise HeadcastError(f"input list {path} is larger than {MAX_LIST_BYTES >> 20} MB")
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise HeadcastError(f"cannot read the input list {path}: {getattr(e, 'strerror', None) or e}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(str(path.parent / line) if not os.path.isabs(line) else line)
    return out


def expand(kind: str, items: list[str], sweep: bool = False) -> list[str]:
    """Each input as the jobs it makes: a folder gives its frame prefixes (reconstruct; with ``sweep`` the
    folder is one job, its frames one sweep), its videos (animate) or its reconstruction subfolders
    (texture, or itself when it is one); anything else is one job as it is (a missing file fails its own
    job, not the batch)."""
    out: list[str] = []
    for item in read_inputs(items):
        p = Path(item)
        if not p.is_dir() or (kind == "texture" and (p / recon.PARAMS).is_file()) or sweep:
            out.append(item)
            continue
        for c in sorted(p.iterdir()):
            if kind == "reconstruct":
                out += [str(p / c.name[: -len(s)]) for s in COLOR_SUFFIXES if c.name.endswith(s)]
            elif kind == "animate" and c.suffix.lower() in VIDEO_SUFFIXES and c.is_file():
                out.append(str(c))
            elif kind == "texture" and (c / recon.PARAMS).is_file():
                out.append(str(c))
    return list(dict.fromkeys(out))  # the same input twice is one job


def names(paths: list[str]) -> list[str]:
    """A unique folder name per input: its file name (without a video suffix), or, when two inputs share
    one, its path from the inputs' common folder joined with ``-``."""
    stems = [_stem(p) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    full = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([str(f.parent) for f in full]))
    return ["-".join(f.relative_to(root).with_name(_stem(str(f))).parts) for f in full]


def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in VIDEO_SUFFIXES else name


def make_jobs(kind: str, items: list[str], out: str | Path, recon_dir: str | None = None,
              options: dict | None = None) -> list[Job]:
    """The jobs for ``items`` (paths, folders, ``@list.txt``), writing below ``out``."""
    if kind not in KINDS:
        raise HeadcastError(f"batch kind must be one of {', '.join(KINDS)}, not {kind!r}")
    paths = expand(kind, items, sweep=kind == "reconstruct" and bool((options or {}).get("sweep")))
    if not paths:
        raise HeadcastError(f"no {kind} inputs found in {' '.join(items)}")
    out = Path(out)
    return [Job(kind, n, p, p if kind == "texture" else str(out / n), recon_dir, dict(options or {}))
            for n, p in zip(names(paths), paths)]


def longest_first(jobs: list[Job]) -> list[Job]:
    """``jobs`` in the order to run them: the videos of a batch animate longest first (their frame counts,
    capped by ``max_frames``), so that the last jobs to start are the short ones and no worker waits long
    for another at the end; a video whose length is unknown (a .csv take, a file whose header gives none)
    goes first, and jobs of equal length keep their order. Other kinds, and batches of more than
    :data:`LONGEST_FIRST_MAX_JOBS` jobs, keep the input order."""
    if len(jobs) > LONGEST_FIRST_MAX_JOBS or not any(j.kind == "animate" for j in jobs):
        return jobs
    frames = [_frames(j) for j in jobs]
    return [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: -frames[i])]


def _frames(job: Job) -> float:
    """The frames an animate job's video will run, capped by ``max_frames``; infinity when unknown (the
    header gives none, or :func:`headcast.animate.video.video_info` refuses the file). About 5 ms of CPU a
    video; the job itself still reads and checks the file as the single command does."""
    from headcast.animate.video import video_info

    if Path(job.input).suffix.lower() not in VIDEO_SUFFIXES:
        return math.inf
    try:
        frames = video_info(job.input).frames
    except HeadcastError:
        return math.inf
    return min(frames, job.options.get("max_frames") or math.inf) if frames > 0 else math.inf


# ------------------------------------------------------------------ outputs
def report_path(job: Job) -> Path:
    """The report a complete output of ``job`` holds (its manifest lists it)."""
    if job.kind == "animate":
        return Path(job.target) / anim.REPORT
    if job.kind == "texture" or job.options.get("texture"):
        return Path(job.target) / recon.TEXTURE_REPORT
    return Path(job.target) / recon.FIT_REPORT


def complete(job: Job) -> bool:
    """Whether ``job``'s output is already there whole (headcast's manifest of its kind lists its report)."""
    m = read_manifest(job.target)
    kind = anim.KIND if job.kind == "animate" else recon.KIND
    return (m is not None and m["kind"] == kind and report_path(job).name in m["files"]
            and report_path(job).is_file())


def figures(job: Job) -> dict:
    """The key figures of ``job``'s report: reconstruct, face points to mesh median and 3D landmark mean
    error (mm) (a sweep: its registered points to mesh median and the frames registered); animate, frames,
    share of frames under the Loss5 threshold, fitting and end-to-end fps; texture, Loss4."""
    rep = read_json(report_path(job), "report")
    if job.kind == "animate":
        fps = rep.get("fps", {})
        return {"frames": rep.get("frames"), "share_under_threshold": rep.get("share_under_threshold"),
                "fps_fitting": fps.get("fitting"), "fps_end_to_end": fps.get("end_to_end")}
    if report_path(job).name == recon.TEXTURE_REPORT:
        more = figures(Job(job.kind, job.name, job.input, job.target)) if job.kind == "reconstruct" else {}
        return {**more, "loss4": rep.get("loss4")}
    if "registered_points_to_mesh_mm" in rep:  # a sweep
        return {"p2m_median_mm": rep["registered_points_to_mesh_mm"].get("median"),
                "frames": rep.get("frames", {}).get("registered")}
    return {"p2m_median_mm": rep.get("point_to_mesh_mm", {}).get("median"),
            "landmarks_3d_mm": rep.get("landmarks_3d_mm", {}).get("mean")}


def remove_staging(job: Job) -> None:
    """Remove what a worker that died (killed, out of memory) left staged for ``job``: headcast's hidden
    ``.<name>.staging-*`` entries beside and inside its target. Completed outputs are never touched."""
    target = Path(job.target)
    found = list(target.parent.glob(f".{target.name}{STAGING_MARK}*"))
    if target.is_dir():
        found += [p for p in target.glob(f".*{STAGING_MARK}*")]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
