"""Thread counts (core.threads), the --help cache, the preview video writer and the speed bench's runner."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from headcast.animate.video import VideoWriter, read_frames
from headcast.bench.speed import run_together
from headcast.core import threads
from headcast.core.errors import HeadcastError


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HEADCAST_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                              *threads.BLAS_VARS)}
    env.update(kw)
    return env


def test_thread_plan_from_environment(monkeypatch):
    for name in ("HEADCAST_THREADS", "OMP_NUM_THREADS", *threads.BLAS_VARS):
        monkeypatch.delenv(name, raising=False)
    p = threads.plan()
    assert (p.count, p.blas, p.source) == (threads.cpu_count(), 1, "CPUs")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert (threads.plan().count, threads.plan().source) == (1, "OMP_NUM_THREADS")
    monkeypatch.setenv("HEADCAST_THREADS", "3")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert threads.plan() == threads.ThreadPlan(count=3, blas=2, source="HEADCAST_THREADS")
    monkeypatch.setenv("HEADCAST_THREADS", "zero")  # not a positive count: the next source decides
    assert threads.plan().source == "OMP_NUM_THREADS"


def test_cli_sets_threads_before_torch_and_debug_reports_them(tmp_path):
    code = ("import os, sys\nfrom headcast.cli import main\nimport torch\n"
            "print(os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_NUM_THREADS'], "
            "torch.get_num_threads())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(HEADCAST_THREADS="1"))
    assert run.stdout.split() == ["1", "PASSIVE", "1", "1"], run.stderr
    run = subprocess.run([sys.executable, "-m", "headcast.cli", "--debug", "model", "list"], capture_output=True,
                         text=True, timeout=120, env=_env(HEADCAST_HOME=str(tmp_path), OMP_NUM_THREADS="2"))
    assert run.returncode == 0, run.stderr
    assert "threads: 2 (from OMP_NUM_THREADS; torch intra-op 2" in run.stderr


def test_help_cache_serves_sub_command_help_without_stage_imports(tmp_path):
    env = _env(HEADCAST_HOME=str(tmp_path), COLUMNS="100")
    code = ("import sys\nfrom headcast.cli import main\ntry:\n    main(['reconstruct', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint('headcast.fit.reconstruct' in sys.modules)")  # a stage import
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert first.stdout.splitlines()[-1] == "True" and second.stdout.splitlines()[-1] == "False", second.stderr
    assert first.stdout == second.stdout.replace("False", "True") and "--hull-margin" in second.stdout
    cache = tmp_path / "help-cache.json"
    data = json.loads(cache.read_text())
    data["reconstruct"]["stamp"] = "another source tree"
    data["reconstruct"]["text"] = "stale\n"
    cache.write_text(json.dumps(data))
    third = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert third.stdout == first.stdout  # a stale entry is rebuilt, never shown


def test_video_writer_round_trip_and_errors(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    base = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)  # smooth: chroma subsampling keeps it
    frames = [np.roll(base, 3 * i, axis=1) for i in range(12)]
    with VideoWriter(tmp_path / "a.mp4", 25.0, crf=0) as w:
        for f in frames:
            w.append_data(f)
    back = list(read_frames(tmp_path / "a.mp4"))
    assert len(back) == len(frames) and back[0].shape == (48, 64, 3)
    assert np.mean(np.abs(back[5].astype(float) - frames[5])) < 4
    w = VideoWriter(tmp_path / "missing" / "b.mp4", 25.0)
    with pytest.raises(Exception):
        for f in frames * 20:
            w.append_data(f)
        w.close()


def test_run_together_times_commands_and_names_failures():
    walls = run_together([["--version"], ["--version"]])
    assert len(walls) == 2 and all(0 < t < 120 for t in walls)
    with pytest.raises(HeadcastError, match="headcast no-such-command"):
        run_together([["no-such-command"]])
