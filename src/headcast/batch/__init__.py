"""Batch runs of reconstruct, animate and texture over many inputs on Ray (``headcast batch``).

:func:`run` turns inputs (paths, folders, ``@list.txt``) into jobs (:mod:`.jobs`), skips those whose
complete output exists, runs the rest on a pool of workers (:mod:`.worker`, :mod:`.scheduler`: an
embedded local Ray, or a cluster), and writes ``OUT/summary.csv`` (:mod:`.summary`). See docs/scale.md.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from headcast.batch.jobs import Job, complete, figures, longest_first, make_jobs
from headcast.batch.summary import NAMES as SUMMARY_NAMES
from headcast.batch.summary import write_summary
from headcast.batch.worker import check_options
from headcast.core.errors import HeadcastError
from headcast.io.outputs import check_batch_dir, claim_batch_dir

logger = logging.getLogger(__name__)


def run(kind: str, inputs: list[str], out: str | Path, *, recon_dir: str | Path | None = None,
        options: dict | None = None, address: str | None = None, workers: int | None = None, threads: int = 1,
        force: bool = False, retries: int = 2) -> list[dict]:
    """Run ``kind`` (reconstruct, animate, texture) on every input; returns the summary rows in input order.

    inputs: frame prefixes / videos / reconstruction folders, folders of them, ``@list.txt`` files.
    out: the batch folder (``OUT/<name>/`` per reconstruct or animate job; texture writes into each input
    folder as ``headcast texture`` does) and its ``summary.csv``: new, empty or an earlier batch folder (its
    manifest, of kind ``batch KIND`` (:func:`headcast.io.outputs.batch_kind`), is written before any
    job), else refused (a batch folder of another kind too). recon_dir: the head every animate job
    drives. options: the single command's options by their argument names (see
    :data:`headcast.batch.worker.OPTIONS`; unset ones keep the stage's defaults). address: a Ray cluster
    (``auto``, ``HOST:PORT``, ``ray://...``); None starts an embedded one. workers: how many (default: the
    CPUs; on a cluster also a cap). threads: native threads per worker. force: redo complete jobs too.
    retries: how often a job whose worker died is tried again elsewhere.
    """
    options = dict(options or {})
    check_options(kind, options)
    if workers is not None and workers < 1 or threads < 1 or retries < 0:
        raise HeadcastError("--workers and --threads must be at least 1 and --retries at least 0")
    if kind == "animate":
        from headcast.io import recon

        if recon_dir is None:
            raise HeadcastError("batch animate needs the reconstruction folder to drive")
        recon.check_folder(recon_dir)
        recon_dir = str(recon_dir)
    out = Path(out)
    check_batch_dir(out, kind)  # another's folder, a file, a read-only one: one line before any job, nothing written
    jobs = make_jobs(kind, inputs, out, recon_dir, options)
    claim_batch_dir(out, kind, [*([j.name for j in jobs] if kind != "texture" else []), *SUMMARY_NAMES])
    rows = {j.name: r for j in jobs if (r := _skipped(j, force)) is not None}
    todo = [j for j in jobs if j.name not in rows]
    logger.info(f"batch {kind}: {len(jobs)} jobs, {len(rows)} already complete (skipped), {len(todo)} to run")
    try:
        if todo:
            _run_pool(todo, rows, len(jobs), address, workers, threads, force, retries)
    finally:
        ordered = [rows[j.name] for j in jobs if j.name in rows]
        paths = write_summary(out, ordered)
        logger.info(f"batch: wrote {', '.join(str(p) for p in paths)}")
    return ordered


def _skipped(job: Job, force: bool) -> dict | None:
    """The row of a job whose complete output exists (None: the job must run)."""
    if force or not complete(job):
        return None
    try:
        figs = figures(job)
    except HeadcastError:  # a damaged report: run the job again
        return None
    return {"name": job.name, "kind": job.kind, "input": job.input, "status": "skipped", "attempts": 0, **figs}


def _run_pool(todo: list[Job], rows: dict, total: int, address, workers, threads, force, retries) -> None:
    """Start Ray (or join ``address``) while the jobs are put in order (:func:`~.jobs.longest_first`), then
    run them. An embedded Ray is sized for no more workers than jobs (none is started to idle)."""
    # cv2 here, not first in the thread: OpenCV's loader restores the sys.path it found, which dropped the
    # entry ``import ray`` adds meanwhile (then Ray's ``import colorama`` failed: 3 runs of 7)
    import cv2  # noqa: F401

    from headcast.batch.scheduler import Progress, ray_session, run_jobs

    t0 = time.perf_counter()
    if not address:
        workers = min(workers or os.cpu_count() or 1, len(todo))
    with ThreadPoolExecutor(1) as pool:
        ordered = pool.submit(longest_first, todo)
        with ray_session(address, workers, threads) as slots:
            logger.info(f"batch: Ray {'joined at ' + address if address else 'started'} in "
                        f"{time.perf_counter() - t0:.1f} s; {min(slots, len(todo))} workers x {threads} thread(s)")
            times = run_jobs(ordered.result(), slots, threads, force, retries, Progress(total, total - len(todo)), rows)
            logger.info(f"batch: the jobs ran in {times['jobs_s']:.1f} s once the workers had started")


__all__ = ["run"]
