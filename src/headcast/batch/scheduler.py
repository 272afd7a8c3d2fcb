"""Jobs over a pool of Ray actors: an embedded local Ray by default, a cluster with ``address``.

Each actor (:class:`headcast.batch.worker.Worker`, ``threads`` CPUs each, spread over the nodes) runs one
job at a time; the driver sends only the job's paths and options. When an actor dies (its process
killed, out of memory, its node gone) the job it held is retried on a new actor, up to ``retries``
times, after removing what it had staged. Ctrl-C (or SIGTERM) kills the actors, removes what the
running jobs had staged and raises; finished jobs stay finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from typing import Iterator

from headcast.batch.jobs import Job, remove_staging
from headcast.core.errors import HeadcastError
from headcast.core.threads import environment
from headcast.io.outputs import HELD_SIGNALS

logger = logging.getLogger(__name__)
# The embedded Ray's background work kept small: it shares the cores with the workers. No metrics are
# collected or exported, no usage statistics gathered. Its raylet prestarts one Ray worker per CPU as it
# starts (see _lean_config), and the actors take them over: their Python and Ray imports overlap the
# rest of Ray's start instead of following it.
LEAN_RAY = {"prestart_worker_first_driver": False, "enable_metrics_collection": False}
# glibc's malloc arenas in a worker: by default up to 8 per core, handed to the threads each job starts
# (decoding, landmarks, MediaPipe's graph) beside Ray's own; memory freed in one stays there. Measured over
# 8 animate jobs in one Ray-connected process: the resident size grew 307 -> 482 MB with the default and
# stayed at 267-280 MB with 2 arenas, at the same CPU seconds per job.
WORKER_MALLOC = {"MALLOC_ARENA_MAX": "2"}
# Ray's logger that tells, on every new local cluster, that token authentication is on (Ray's default,
# which the embedded Ray keeps): a line for Ray's users, not headcast's
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
PROGRESS_EVERY_S = 10.0  # at most one progress line this often (and one per finished job before that)
WORKER_START_S = 600.0  # how long jobs wait for every worker to start before going to those ready


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None, threads: int = 1) -> Iterator[int]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or start an
    embedded one sized for ``workers`` x ``threads`` CPUs (default: this machine's CPUs) with its session
    files in a temporary folder; yields the number of workers to run (``workers`` capped by the cluster's
    CPUs). An embedded Ray is stopped at the end, a cluster left running."""
    import ray

    env = {"env_vars": {**environment(threads), **WORKER_MALLOC}}
    tmp = None
    handlers = _python_handlers()
    try:
        if address:
            try:
                ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise HeadcastError(f"cannot join the Ray cluster at {address}: {' '.join(str(e).split())[:300]}"
                                    ) from None
            cpus = int(ray.cluster_resources().get("CPU", 0))
        else:
            cpus = (workers or os.cpu_count() or 1) * threads
            tmp = tempfile.mkdtemp(prefix="hc-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
            with _inherited({**env["env_vars"], "RAY_USAGE_STATS_ENABLED": "0"}), _lean_start(), _quiet(AUTH_LOGGER):
                ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False, _system_config=_lean_config(threads))
        for sig, handler in handlers.items():  # Ray's own handlers abort the process; the CLI's unwind it
            signal.signal(sig, handler)
        slots = max(1, cpus // threads)
        yield min(workers, slots) if workers else slots
    finally:
        if ray.is_initialized():
            t0 = time.perf_counter()
            ray.shutdown()  # the embedded Ray's processes stop here; a cluster only loses this driver
            logger.info(f"batch: Ray {'stopped' if tmp else 'left'} in {time.perf_counter() - t0:.1f} s")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _inherited(variables: dict[str, str]) -> Iterator[None]:
    """This process's environment with ``variables`` set, then as it was: the processes an embedded
    ray.init starts (and the workers they start) inherit them. Measured: this gives a worker the thread
    environment for about 0.8 CPU s and seconds of start-up less than a runtime environment does (whose
    workers start through Ray's runtime-env agent and a set-up process)."""
    before = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The logger ``name`` shows errors only within the block."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _lean_config(threads: int) -> dict:
    """The embedded Ray's system config (:data:`LEAN_RAY`): with one thread per worker its raylet prestarts
    one Ray worker per CPU, one per actor to come (with more threads per worker that would be more
    processes than actors, so none is). Measured (2 cores, load 2-4, 2 actors loading the head model and
    MediaPipe): the actors ready 1.7-1.9 -> 0.9-1.0 s after ``ray.init`` (1.3-2.3 -> 1.8-1.9 s), the
    same two worker processes and CPU seconds."""
    return {**LEAN_RAY, "enable_worker_prestart": threads == 1}


@contextlib.contextmanager
def _lean_start() -> Iterator[None]:
    """A ``ray.init`` within the block that starts a new local Ray starts it without the autoscaler monitor,
    the log monitor (``ray start``'s ``--no-monitor`` and ``--include-log-monitor=False``, which
    ``ray.init`` has no parameters for) and the dashboard's head process: one machine has nothing to
    autoscale, with ``log_to_driver`` off no log is forwarded, and without the dashboard (and with usage
    statistics off) the head process runs no module, yet ``ray.init`` waits until it is up before it
    starts the raylet; Ray goes on without it as when it fails to start. Measured (2 cores, load 3-4):
    without the monitors Ray's start 4.5 -> 3.2 s and its shutdown 1.1-1.4 -> 0.1-0.3 s (the monitor's
    SIGTERM handler reports to the GCS already stopped and held ``ray.shutdown`` for its whole 1 s
    grace); without the dashboard head (load 2-4) ``ray.init`` 1.8-3.2 -> 1.3-2.3 s and 0.5 CPU s less."""
    from ray._private import node, parameter

    init, api_server = parameter.RayParams.__init__, node.Node.start_api_server

    def lean(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.no_monitor, self.include_log_monitor = True, False

    parameter.RayParams.__init__ = lean
    node.Node.start_api_server = lambda self, **kwargs: None
    try:
        yield
    finally:
        parameter.RayParams.__init__, node.Node.start_api_server = init, api_server


def _python_handlers() -> dict:
    """The Python handlers of SIGINT, SIGTERM and SIGHUP now (main thread only; elsewhere none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: h for s in HELD_SIGNALS if (h := signal.getsignal(s)) is not None}


class Progress:
    """Done / failed / rate / ETA lines through logging."""

    def __init__(self, total: int, skipped: int):
        self.total, self.skipped, self.done, self.failed = total, skipped, 0, 0
        self.t0 = self.last = time.monotonic()

    def count(self, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if row["status"] == "failed":
            logger.warning(f"batch: {row['name']} failed: {row['error']}")
        self.show(final=self.done + self.skipped == self.total)

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_EVERY_S and self.done > 1:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9) * 60
        left = self.total - self.skipped - self.done
        eta = f"{left / rate:.1f} min" if rate > 0 else "?"
        logger.info(f"batch: {self.done + self.skipped}/{self.total} done ({self.failed} failed, {self.skipped} "
                    f"skipped) after {now - self.t0:.0f} s, {rate:.1f} jobs/min, ETA {eta}")


def run_jobs(jobs: list[Job], slots: int, threads: int, force: bool, retries: int, progress: Progress,
             rows: dict[str, dict]) -> dict:
    """Run ``jobs`` on ``slots`` actors; each finished job's row goes into ``rows`` (by name) as it arrives,
    with ``overhead_s``: the driver's time from sending the job to its result, less the job's own
    ``seconds``. Returns the seconds the workers took to start (``workers_ready_s``) and then to run every
    job (``jobs_s``)."""
    import ray
    from ray.exceptions import OutOfMemoryError, RayActorError, WorkerCrashedError

    from headcast.batch.worker import Worker

    t0 = time.perf_counter()
    remote = ray.remote(Worker).options(num_cpus=threads, scheduling_strategy="SPREAD", max_restarts=0)
    new_actor = lambda: remote.remote(threads)  # noqa: E731
    queue, idle = deque(jobs), [new_actor() for _ in range(min(slots, len(jobs)))]
    starting = [a.ready.remote() for a in idle]
    ray.wait(starting, num_returns=len(starting), timeout=WORKER_START_S)  # a slow one gets its job when ready
    t1 = time.perf_counter()
    logger.info(f"batch: {len(idle)} workers started in {t1 - t0:.1f} s (the head model and detector loaded)")
    attempts: dict[str, int] = {}
    running: dict = {}  # ref -> (actor, job, time sent)
    try:
        while queue or running:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                attempts[job.name] = attempts.get(job.name, 0) + 1
                running[actor.run.remote(job, force)] = (actor, job, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY_S)
            if not ready:
                progress.show()
            for ref in ready:
                actor, job, sent = running.pop(ref)
                try:
                    row = ray.get(ref)
                    row["overhead_s"] = time.perf_counter() - sent - row["seconds"]
                    idle.append(actor)
                except (RayActorError, WorkerCrashedError, OutOfMemoryError) as e:  # the process died, not the job
                    remove_staging(job)
                    idle.append(new_actor())
                    if attempts[job.name] <= retries:
                        logger.warning(f"batch: the worker running {job.name} died; retrying it on another worker")
                        queue.appendleft(job)
                        continue
                    row = {"name": job.name, "kind": job.kind, "input": job.input, "status": "failed",
                           "error": f"its worker died {attempts[job.name]} times (last: {e.__class__.__name__})"}
                row["attempts"] = attempts[job.name]
                rows[job.name] = row
                progress.count(row)
    except BaseException:  # Ctrl-C, SIGTERM, a lost cluster: stop the running jobs and clear what they staged
        _stop(running)
        raise
    return {"workers_ready_s": t1 - t0, "jobs_s": time.perf_counter() - t1}


def _stop(running: dict) -> None:
    """Kill the actors of the running jobs, wait (briefly) until they are gone, remove their staging."""
    import ray

    for actor, _, _ in running.values():
        ray.kill(actor)
    with contextlib.suppress(Exception):
        ray.wait(list(running), num_returns=len(running), timeout=30)
    for _, job, _ in running.values():
        remove_staging(job)
        logger.info(f"batch: stopped {job.name} (no output written)")
