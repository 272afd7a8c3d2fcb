"""Batch benchmark (``headcast bench batch``): ``headcast batch`` against a shell loop of single commands.

For each kind, the same jobs three ways, one after another in one run: ``loop`` (the single command once
per input, a new process each time, as a shell loop runs them), and ``headcast batch`` on an embedded
local Ray with 1 and with 2 workers (each its own process, as a user runs it). animate: the shared
videos, each ``repeat`` times (symbolic links, so the job count divides between the workers), the first
``max_frames`` frames (0 or None: the whole videos, 78, 400 and 1008 frames), parameters only (no preview
video) unless ``video``; driving a head reconstructed once beforehand (not timed). reconstruct: four
TrueDepth frames with ``method``, each ``repeat`` times (links again).

The ceiling without Ray, with the loop: ``loop-1t`` (the loop, one thread per process, as a batch
worker has) and ``pair-1t`` (two such loops at once, the inputs dealt alternately): what this machine
gives two independent one-thread processes, to hold ``batch-2 / batch-1`` against; and ``direct-1`` /
``direct-2``, the batch's workers without Ray: one or two processes each running jobs through one
:class:`headcast.batch.worker.Worker` with a batch worker's environment, taking the next one in the
batch's order (longest first) as each finishes, their steady window from the last one started to the
last one done: the ceiling of the steady
``batch-2 / batch-1`` (no command start-ups in it, as pair-1t has).

Figures per run: wall seconds end to end, jobs per minute and frames per second on it; for the batch
also its parts (Ray start-up, worker start-up: imports, head model and detector, then the jobs, and Ray's
shutdown), the fixed seconds (the wall less the jobs' window: the driver's, Ray's and the workers' start,
Ray's stop, the driver's exit), the steady jobs per minute (over the jobs' window the batch logs: from
the workers ready to the last job done, as direct-1/2 measure theirs), the scheduling
overhead per job (median of the driver's time from sending a job to its result, less the job's own
time), the CPU seconds per job (the worker's threads and its ffmpeg processes) and the cores a job kept
busy (CPU over wall, summed over the jobs: above 1, one worker already uses part of a second core, and
two workers cannot double it), the peak memory per worker (RSS), and for the batch rows the CPU seconds the
hypervisor took from this machine during the run (``steal``, from ``/proc/stat``; 0 on bare metal). Targets:
2 workers >= 1.7 x 1 worker; 1 worker faster than the loop.

A shared host's speed drifts by tens of per cent within minutes, so one 1-worker run then one 2-worker
run is a noisy ratio. ``rounds`` > 1 runs the batch rows that many times, alternating their order (1, 2,
then 2, 1, ...) so a drift weighs on both, and gives each round's ratios and their median.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from headcast.bench import machine, shared_samples, truedepth_folder
from headcast.core.errors import HeadcastError
from headcast.core.files import read_json
from headcast.core.threads import environment

logger = logging.getLogger(__name__)
ONE_THREAD = environment(1)  # a batch worker's thread pools
FRAMES = ("frame-040", "frame-046", "frame-050", "frame-056")  # near frontal: every method finds the face


def run_batch_bench(work: Path, kinds: tuple[str, ...] = ("animate", "reconstruct"), workers: tuple[int, ...] = (1, 2),
                    repeat: int = 2, max_frames: int | None = 100, method: str = "full", video: bool = False,
                    loop: bool = True, rounds: int = 1) -> dict:
    """Run the benchmark in ``work`` (a new or empty folder); returns the figures (module docstring)."""
    if repeat < 1 or rounds < 1 or not workers or min(workers) < 1:
        raise HeadcastError("bench batch: --repeat, --rounds and every --workers count must be at least 1")
    samples = shared_samples()
    if not (samples / "video").is_dir() or not truedepth_folder().is_dir():
        raise HeadcastError(f"bench batch needs the shared samples in {samples}")
    work = Path(work)
    if work.exists() and any(work.iterdir()):
        raise HeadcastError(f"bench batch needs a new or empty --work folder, not {work}")
    work.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine(), "workers": list(workers), "runs": {}}
    head = work / "head"
    _cli("reconstruct", str(truedepth_folder() / "frame-050"), "--out", str(head), "--method", "landmarks-3d",
         "--quiet")
    for kind in kinds:
        if kind == "animate":
            inputs = _repeated_videos(samples / "video", work / "videos", repeat)
            args = [*(["--max-frames", str(max_frames)] if max_frames else []), *([] if video else ["--no-video"])]
        else:
            inputs = _repeated_frames(truedepth_folder(), FRAMES, work / "frames", repeat)
            args = ["--method", method, "--quiet"]
        runs = {}
        if loop:
            runs["loop"] = _loop(kind, inputs, work / kind / "loop", head, args)
            runs["loop-1t"] = _loop(kind, inputs, work / kind / "loop-1t", head, args, ONE_THREAD)
            runs["pair-1t"] = _pair(kind, inputs, work / kind / "pair-1t", head, args)
            options = ({"max_frames": max_frames or None, "no_video": not video} if kind == "animate"
                       else {"method": method})
            for n in (1, 2):
                runs[f"direct-{n}"] = _direct(kind, inputs, work / kind / f"direct-{n}", head, options, n)
        per_round = []
        for r in range(rounds):
            name = lambda w: f"batch-{w}" + (f" #{r + 1}" if rounds > 1 else "")  # noqa: E731
            for w in workers if r % 2 == 0 else workers[::-1]:
                runs[name(w)] = _batch(kind, inputs, work / kind / name(w).replace(" #", "-r"), head, args, w)
            per_round.append(_speedups({w: runs[name(w)] for w in workers}, workers))
        res["runs"][kind] = runs
        res.setdefault("speedup", {})[kind] = {**_loop_speedups(runs, workers[0]), **_median(per_round)}
        if rounds > 1:
            res.setdefault("speedup_rounds", {})[kind] = per_round
    return res


def _cli(*args: str, env: dict | None = None) -> str:
    """Run ``headcast ARGS`` in a new process (``env``: extra environment variables); its stderr."""
    run = subprocess.run([sys.executable, "-m", "headcast.cli", *args], capture_output=True, text=True,
                         env={**os.environ, **env} if env else None)
    if run.returncode != 0:
        raise HeadcastError(f"headcast {' '.join(args[:2])} failed: {run.stderr.strip().splitlines()[-1:]}")
    return run.stderr


def _repeated_videos(folder: Path, into: Path, repeat: int) -> list[str]:
    """Each video of ``folder`` ``repeat`` times, as links in ``into`` (distinct job names)."""
    into.mkdir(parents=True)
    out = []
    for v in sorted(folder.glob("*.mp4")):
        for k in range(repeat):
            link = into / f"{v.stem}-{k}{v.suffix}"
            link.symlink_to(v.resolve())
            out.append(str(link))
    return out


def _repeated_frames(folder: Path, prefixes: tuple[str, ...], into: Path, repeat: int) -> list[str]:
    """Each frame prefix of ``folder`` ``repeat`` times, as links of its files in ``into`` (distinct job names),
    dealt round-robin so that every worker gets the same mix of frames."""
    into.mkdir(parents=True)
    out = []
    for k in range(repeat):
        for p in prefixes:
            for f in folder.glob(f"{p}_*"):
                (into / f"{p}-{k}{f.name[len(p):]}").symlink_to(f.resolve())
            out.append(str(into / f"{p}-{k}"))
    return out


def _loop(kind: str, inputs: list[str], out: Path, head: Path, args: list[str], env: dict | None = None) -> dict:
    """The single command once per input, one process after another (``env``: extra environment variables)."""
    t0 = time.perf_counter()
    frames = 0
    for i in inputs:
        name = Path(i).stem if kind == "animate" else Path(i).name
        logger.info(f"bench batch: loop {kind} {name}{' (extra environment: one thread)' if env else ''}")
        _cli(kind, *([str(head)] if kind == "animate" else []), i, "--out", str(out / name), *args, env=env)
        frames += read_json(out / name / "report.json", "report")["frames"] if kind == "animate" else 1
    return _rates({"wall_s": time.perf_counter() - t0, "jobs": len(inputs), "frames": frames})


def _pair(kind: str, inputs: list[str], out: Path, head: Path, args: list[str]) -> dict:
    """Two one-thread loops at once, the inputs dealt alternately between them; wall: until both end."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(lambda part: _loop(kind, part, out, head, args, ONE_THREAD), (inputs[::2], inputs[1::2])))
    return _rates({"wall_s": time.perf_counter() - t0, "jobs": len(inputs), "frames": sum(h["frames"] for h in halves)})


def _direct(kind: str, inputs: list[str], out: Path, head: Path, options: dict, processes: int) -> dict:
    """``processes`` batch workers without Ray, started at once, taking the jobs in the batch's order as the
    batch hands them out (module docstring)."""
    from headcast.batch.scheduler import WORKER_MALLOC

    logger.info(f"bench batch: {kind} with {processes} worker(s) without Ray")
    t0, epoch = time.perf_counter(), time.time()
    env = {**os.environ, **ONE_THREAD, **WORKER_MALLOC}
    procs = [subprocess.Popen([sys.executable, "-c", "from headcast.bench.batch import direct_worker; direct_worker()",
                               json.dumps([kind, inputs, str(out), str(head), options, processes])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(processes)]
    ends = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise HeadcastError(f"bench batch: a worker without Ray failed: {[e[1].strip()[-300:] for e in ends]}")
    times = [json.loads(o.strip().splitlines()[-1]) for o, _ in ends]
    ready = max(t["ready"] for t in times)
    res = {"wall_s": wall, "jobs": len(inputs), "frames": sum(t["frames"] for t in times),
           "workers_ready_s": ready - epoch, "jobs_s": max(t["end"] for t in times) - ready,
           "cpu_per_job_s": sum(t["cpu_s"] for t in times) / len(inputs),
           "tail_s": max(t["end"] for t in times) - min(t["end"] for t in times)}  # one worker idle at the end
    res["jobs_per_min_steady"] = 60 * len(inputs) / res["jobs_s"]
    return _rates(res)


def direct_worker() -> None:
    """One worker of :func:`_direct` (``sys.argv[1]``: kind, inputs, out, head, options, the number of workers
    as JSON). Once every worker has started (a ``.ready-PID`` file each in ``out``) it goes through the jobs
    in the batch's order (:func:`headcast.batch.jobs.longest_first`) and runs each one no other worker has
    claimed (``.claim-NAME``, created exclusively): as the batch's driver hands the next job to whichever
    worker is free. Prints when it was ready and done (epoch seconds), its frames and its jobs' CPU seconds
    as JSON."""
    from headcast.batch.jobs import longest_first, make_jobs
    from headcast.batch.worker import Worker

    kind, inputs, out, head, options, processes = json.loads(sys.argv[1])
    worker = Worker(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f".ready-{os.getpid()}").touch()
    while len(list(out.glob(".ready-*"))) < processes:
        time.sleep(0.01)
    ready = time.time()
    jobs = longest_first(make_jobs(kind, inputs, out, head if kind == "animate" else None, options))
    rows = [worker.run(job) for job in jobs if _claim(out / f".claim-{job.name}")]
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    if failed:
        raise HeadcastError(f"jobs failed: {', '.join(failed)}")
    print(json.dumps({"ready": ready, "end": time.time(), "frames": sum(int(r.get("frames") or 1) for r in rows),
                      "cpu_s": sum(r["cpu_s"] for r in rows)}))


def _claim(path: Path) -> bool:
    """Create ``path`` if no one has: True for the one process that did."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _batch(kind: str, inputs: list[str], out: Path, head: Path, args: list[str], workers: int) -> dict:
    """``headcast batch`` (its own process, as a user runs it) on an embedded Ray with ``workers`` workers."""
    logger.info(f"bench batch: {kind} with {workers} worker(s)")
    t0, steal0 = time.perf_counter(), host_steal_s()
    log = _cli("batch", kind, *([str(head)] if kind == "animate" else []), *inputs, "--out", str(out),
               "--workers", str(workers), *args)
    wall, steal = time.perf_counter() - t0, host_steal_s() - steal0
    with open(out / "summary.csv", encoding="utf-8", newline="") as f:
        r = list(csv.DictReader(f))
    failed = [x["name"] for x in r if x["status"] != "ok"]
    if failed:
        raise HeadcastError(f"bench batch: {kind} jobs failed: {', '.join(failed)}")
    said = {k: float(m.group(1)) if (m := re.search(rf"{k} in ([0-9.]+) s", log)) else None
            for k in ("Ray started", "workers started", "Ray stopped", "jobs ran")}
    res = {"wall_s": wall, "jobs": len(r), "frames": sum(int(x["frames"] or 1) for x in r),
           "ray_start_s": said["Ray started"], "workers_ready_s": said["workers started"], "ray_stop_s": said["Ray stopped"],
           "job_s_mean": statistics.mean(float(x["seconds"]) for x in r),
           "overhead_per_job_s": statistics.median(float(x["overhead_s"]) for x in r),
           "cpu_per_job_s": statistics.mean(float(x["cpu_s"]) for x in r),
           "cores_per_job": sum(float(x["cpu_s"]) for x in r) / sum(float(x["seconds"]) for x in r),
           "worker_rss_mb": max(float(x["worker_rss_mb"]) for x in r), "nodes": len({x["node"] for x in r}),
           "steal_s": steal}
    if said["jobs ran"] is not None:  # the jobs alone: from the workers ready to the last job done
        res["jobs_s"] = said["jobs ran"]
        res["fixed_s"] = wall - res["jobs_s"]  # the driver's, Ray's and the workers' start, Ray's stop, the exit
        res["jobs_per_min_steady"] = 60 * len(r) / res["jobs_s"]
    return _rates(res)


def _rates(res: dict) -> dict:
    res["jobs_per_min"] = 60 * res["jobs"] / res["wall_s"]
    res["frames_per_s"] = res["frames"] / res["wall_s"]
    return res


def host_steal_s() -> float:
    """CPU seconds the hypervisor has taken from this machine since boot (``steal`` in ``/proc/stat``, all
    CPUs); 0 where the file or the field is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _speedups(batches: dict, workers: tuple[int, ...]) -> dict:
    """Ratios of one round's batch runs (``batches``: worker count -> figures), end to end and steady."""
    out = {}
    if len(workers) >= 2:
        a, b = batches[workers[0]], batches[workers[1]]
        out[f"batch-{workers[1]}_over_batch-{workers[0]}"] = a["wall_s"] / b["wall_s"]
        if "jobs_s" in a and "jobs_s" in b:
            out[f"batch-{workers[1]}_over_batch-{workers[0]}_steady"] = a["jobs_s"] / b["jobs_s"]
    return out


def _median(rounds: list[dict]) -> dict:
    """Each ratio's median over the rounds."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} if rounds else {}


def _loop_speedups(runs: dict, first: int) -> dict:
    """The ceilings without Ray (pair over loop, direct 2 over 1) and the first batch row over the loop."""
    out = {}
    if "pair-1t" in runs:
        out["pair-1t_over_loop-1t"] = runs["loop-1t"]["wall_s"] / runs["pair-1t"]["wall_s"]
        out["direct-2_over_direct-1_steady"] = runs["direct-1"]["jobs_s"] / runs["direct-2"]["jobs_s"]
    batch = next((r for n, r in runs.items() if n.split(" #")[0] == f"batch-{first}"), None)
    if "loop" in runs and batch is not None:
        out[f"batch-{first}_over_loop"] = runs["loop"]["wall_s"] / batch["wall_s"]
    return out


def markdown(res: dict) -> str:
    """The figures as markdown tables, one per kind."""
    lines = [f"Machine: {res['machine']}", ""]
    for kind, runs in res["runs"].items():
        lines += [f"### batch {kind}", "",
                  "| run | jobs | wall s | jobs/min | frames/s | Ray start s | workers start s | Ray stop s | fixed s "
                  "| steady jobs/min | overhead/job s | CPU s/job | cores/job | MB/worker | steal s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            f = lambda k, fmt="{:.1f}": fmt.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
            lines.append(f"| {name} | {r['jobs']} | {r['wall_s']:.1f} | {r['jobs_per_min']:.2f} | "
                         f"{r['frames_per_s']:.3g} | {f('ray_start_s')} | {f('workers_ready_s')} | {f('ray_stop_s')} | "
                         f"{f('fixed_s')} | "
                         f"{f('jobs_per_min_steady', '{:.2f}')} | {f('overhead_per_job_s', '{:.3f}')} | "
                         f"{f('cpu_per_job_s', '{:.2f}')} | {f('cores_per_job', '{:.2f}')} | {f('worker_rss_mb', '{:.0f}')} | "
                         f"{f('steal_s')} |")
        sp = ", ".join(f"{k} {v:.2f}x" for k, v in res.get("speedup", {}).get(kind, {}).items())
        each = res.get("speedup_rounds", {}).get(kind)
        lines += ["", f"Speed-ups{' (batch rows: median of the rounds)' if each else ''}: {sp}", ""]
        if each:
            lines += ["Each round: " + "; ".join(", ".join(f"{v:.2f}x" for v in r.values()) for r in each)
                      + f" ({', '.join(each[0])})", ""]
    return "\n".join(lines)
