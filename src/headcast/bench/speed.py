"""Speed benchmark (``headcast bench speed``): whole ``headcast`` commands timed as a user runs them.

Each command runs in its own process (``python -m headcast.cli ...``), timed by wall clock from start
to exit, so imports, model loading and output writing count. Side by side in one run:

- ``--help`` of every command and sub-command (the first call may build the help cache; the figure is
  the second call's);
- ``reconstruct`` of one 640x480 frame alone, then two of the same frame started together (each
  writes its own folder): the ratio of the slower of the two to the one alone (target <= 2.2 on a
  2-core machine: no collapse from oversubscribed thread pools);
- ``animate`` of a clip with and without the MP4 (frames per second end to end), alone and two at once;
- ``demo``.

The frame is a synthetic subject (``headcast synth``, seeded), the clip the 512x512 ``wojtek.mp4`` of
``../shared/samples/video`` unless given. Timings depend on what else the machine runs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from headcast.bench import machine, shared_samples
from headcast.core.errors import HeadcastError
from headcast.core.threads import plan

logger = logging.getLogger(__name__)
TARGETS = {"help_s": 0.3, "reconstruct_s": 3.0, "pair_ratio": 2.2, "animate_fps": 30.0, "animate_no_video_fps": 60.0,
           "demo_s": 15.0}


def run_together(commands: list[list[str]], env: dict | None = None) -> list[float]:
    """Start ``headcast`` commands (argument lists) at once; wall seconds of each, from the common start
    to its exit. HeadcastError naming the command when one fails."""
    return [wall for wall, _ in run_timed(commands, env)]


def run_timed(commands: list[list[str]], env: dict | None = None) -> list[tuple[float, float]]:
    """As :func:`run_together`, with each command's CPU seconds (user + system, its threads and the
    processes it waited for, e.g. ffmpeg): (wall, cpu) per command. CPU time varies less than wall time
    when other jobs share the machine."""
    base = [sys.executable, "-m", "headcast.cli", "-q"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(base + c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in commands]
    out = [(0.0, 0.0)] * len(procs)
    pending = dict(enumerate(procs))
    while pending:
        for i, p in list(pending.items()):
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                out[i] = (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime)
                del pending[i]
        time.sleep(0.005)
    for c, p in zip(commands, procs):
        if p.returncode != 0:
            err = p.stderr.read().decode(errors="replace").strip().splitlines()
            raise HeadcastError(f"bench speed: `headcast {' '.join(c)}` failed: {err[-1] if err else p.returncode}")
        p.stderr.close()
    return out


def time_help(paths: list[list[str]]) -> dict:
    """Wall seconds of ``headcast PATH --help`` for every command path (second call of each)."""
    times = {}
    for path in paths:
        run_together([path + ["--help"]])  # fills the help cache when it is cold
        times[" ".join(path) or "(top)"] = run_together([path + ["--help"]])[0]
    return times


def time_pair(command: list[str], second: list[str], again: list[str] | None = None) -> dict:
    """One run of ``command`` alone, then ``again`` (default ``command``) and ``second`` together: seconds and
    the ratio. ``again``: the same command writing elsewhere, so the alone run's outputs stay as they were."""
    alone, cpu = run_timed([command])[0]
    both = run_together([again or command, second])
    return {"alone_s": alone, "alone_cpu_s": cpu, "together_s": both, "ratio": max(both) / alone}


PARTS = ("help", "reconstruct", "animate", "demo")


def run_speed_bench(work: Path, help_paths: list[list[str]], video: Path | None = None, frames: int = 250,
                    parts: str = ",".join(PARTS), model_spec: str = "ict") -> dict:
    """The timings above, with working folders under ``work``; ``help_paths``: the command paths whose
    ``--help`` is timed (the command line's tree); ``frames``: the clip's first frames animated; ``parts``:
    which of :data:`PARTS` to run, comma-separated (animate uses ``work/r1`` from the reconstruct part)."""
    todo = {p.strip() for p in parts.split(",") if p.strip()}
    if not todo <= set(PARTS):
        raise HeadcastError(f"bench speed: unknown parts {sorted(todo - set(PARTS))} (choose from {', '.join(PARTS)})")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    video = Path(video) if video else shared_samples() / "video" / "wojtek.mp4"
    if not video.is_file():
        raise HeadcastError(f"bench speed: no video {video} (pass --video)")
    res: dict = {"machine": machine(), "threads": plan().count, "time": time.strftime("%Y-%m-%d %H:%M"),
                 "video": video.name, "frames": frames, "targets": TARGETS}
    if "help" in todo:
        logger.info("bench speed: --help of every command")
        res["help_s"] = time_help(help_paths)
    if "reconstruct" in todo:
        _reconstruct(res, work, model_spec)
    if "animate" in todo:
        if not (work / "r1" / "params.npz").is_file():
            raise HeadcastError(f"bench speed: animate needs {work / 'r1'} (run the reconstruct part first)")
        _animate(res, work, video, frames)
    if "demo" in todo:
        logger.info("bench speed: demo")
        res["demo_s"], res["demo_cpu_s"] = run_timed([["demo", "--out", str(work / "demo"), "--force"]])[0]
    return res


def _reconstruct(res: dict, work: Path, model_spec: str) -> None:
    run_together([["synth", "--out", str(work / "synth"), "--seed", "3", "--size", "640x480", "--force"]])
    frame = str(work / "synth" / "frame-000")
    rec = lambda name: ["reconstruct", frame, "--out", str(work / name), "--force", "--model", model_spec]  # noqa: E731
    logger.info("bench speed: reconstruct alone and two at once")
    res["reconstruct"] = time_pair(rec("r1"), rec("r2"), rec("r3"))  # r1: the alone run's report and fit time
    res["reconstruct"]["fit_s"] = json.loads((work / "r1" / "fit_report.json").read_text()).get("seconds_fit")


def _animate(res: dict, work: Path, video: Path, frames: int) -> None:
    for video_on in (True, False):
        key = "animate" if video_on else "animate_no_video"
        logger.info(f"bench speed: {key} alone and two at once")
        anim = lambda name: (["animate", str(work / "r1"), str(video), "--out", str(work / name), "--force",  # noqa: E731
                              "--max-frames", str(frames)] + ([] if video_on else ["--no-video"]))
        res[key] = time_pair(anim(f"{key}1"), anim(f"{key}2"))
        res[key]["fps"] = frames / res[key]["alone_s"]


def markdown(res: dict) -> str:
    """The figures as markdown for bench/RESULTS.md."""
    t = res["targets"]
    L = [f"### Speed (`headcast bench speed`, {res['machine']}, {res['threads']} threads, {res['time']})", "",
         "| what | alone | two at once (each) | ratio | target |", "|---|---|---|---|---|"]
    r = res.get("reconstruct")
    if r:
        L.append(f"| reconstruct 640x480 (fit {r['fit_s'] or float('nan'):.2f} s) | {r['alone_s']:.2f} s "
                 f"(CPU {r.get('alone_cpu_s', float('nan')):.1f} s) | "
                 + " / ".join(f"{x:.2f}" for x in r["together_s"]) + f" s | {r['ratio']:.2f} | "
                 f"<= {t['reconstruct_s']:g} s, ratio <= {t['pair_ratio']:g} |")
    for key, target in (("animate", t["animate_fps"]), ("animate_no_video", t["animate_no_video_fps"])):
        a = res.get(key)
        if not a:
            continue
        L.append(f"| {key.replace('_', ' ')} {res['video']} ({res['frames']} frames) | {a['alone_s']:.2f} s = "
                 f"{a['fps']:.1f} fps (CPU {a.get('alone_cpu_s', float('nan')):.1f} s) | " +
                 " / ".join(f"{x:.2f}" for x in a["together_s"]) +
                 f" s | {a['ratio']:.2f} | >= {target:g} fps, ratio <= {t['pair_ratio']:g} |")
    if "demo_s" in res:
        L.append(f"| demo | {res['demo_s']:.1f} s (CPU {res.get('demo_cpu_s', float('nan')):.1f} s) | | | "
                 f"<= {t['demo_s']:g} s |")
    helps = res.get("help_s")
    if helps:
        slowest = max(helps, key=helps.get)
        L.append(f"| --help ({len(helps)} commands) | slowest {slowest}: {helps[slowest]:.2f} s, median "
                 f"{sorted(helps.values())[len(helps) // 2]:.2f} s | | | <= {t['help_s']:g} s |")
    L += ["", "Wall clock from process start to exit (imports and writing included); CPU: user + system seconds of "
          "the run alone (its threads and its ffmpeg processes); the ratio is the slower of the two runs started "
          "together over the run alone. Timings depend on the machine's other load."]
    return "\n".join(L)
