"""headcast batch on real Ray: an embedded local Ray (failed jobs isolated, exit 1, rerun skips), and a real
two-node cluster on loopback (both nodes work; a worker killed mid-batch has its job retried)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import shared_path
from headcast.batch.summary import read_summary
from headcast.io.outputs import STAGING_MARK, read_manifest

FRAMES = ("samples", "rgbd", "truedepth-mannequin")
FAST = ("--method", "landmarks-3d")          # the reconstruct baseline: seconds, not minutes, per frame


def _headcast(*args: str, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headcast.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _complete(folder: Path, kind: str, report: str) -> bool:
    m = read_manifest(folder)
    return m is not None and m["kind"] == kind and report in m["files"] and all(
        (folder / n).exists() for n in m["files"])


def _no_staging(out: Path) -> None:
    left = [p for p in out.rglob("*") if STAGING_MARK in p.name]
    assert not left, f"staging left behind: {left}"


def _sweep_folder(folder: Path, frames=("046", "050", "054")) -> Path:
    """A folder of a few frames of the real TrueDepth sweep (links to ../shared)."""
    folder.mkdir()
    for f in frames:
        for suffix in ("_color.png", "_depth_mm.png", "_intrinsics.json"):
            (folder / f"frame-{f}{suffix}").symlink_to(shared_path(*FRAMES) / f"frame-{f}{suffix}")
    return folder


def test_embedded_sweeps_bad_inputs_fail_alone_and_rerun_skips(headcast_home, tmp_path):
    """--sweep: each folder one job; a corrupt and a missing input fail alone (exit 1); a rerun skips the rest."""
    _sweep_folder(tmp_path / "three")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "frame-000_color.png").write_bytes(os.urandom(4096))
    for suffix in ("_depth_mm.png", "_intrinsics.json"):
        (corrupt / f"frame-000{suffix}").symlink_to(shared_path(*FRAMES) / f"frame-050{suffix}")
    listing = tmp_path / "folders.txt"
    listing.write_text(f"three\n# a comment\ncorrupt\n{tmp_path / 'missing'}\n")
    out = tmp_path / "out"
    args = ("batch", "reconstruct", f"@{listing}", "--sweep", "--max-frames", "3", "--quiet", "--out", str(out),
            "--workers", "2")
    run = _headcast(*args)
    assert run.returncode == 1, run.stderr
    rows = {r["name"]: r for r in read_summary(out)}
    assert sorted(rows) == ["corrupt", "missing", "three"]
    ok = rows["three"]
    assert ok["status"] == "ok" and int(ok["frames"]) == 3 and float(ok["p2m_median_mm"]) < 1.0, ok
    # the job's own CPU (not the worker's start-up before it): no more than every core for its whole time
    assert 0 < float(ok["cpu_s"]) <= os.cpu_count() * float(ok["seconds"]) + 0.1, ok
    poses = json.loads((out / "three" / "poses.json").read_text())
    assert [f["used"] for f in poses["frames"]] == [True, True, True]  # the three frames fit one head
    for name in ("corrupt", "missing"):
        r = rows[name]
        assert r["status"] == "failed" and r["error"] and "\n" not in r["error"], r
        assert not (out / name).exists()
        assert f"job {name} " in run.stderr  # listed at the end
    assert "missing" in rows["missing"]["error"] and "corrupt" in rows["corrupt"]["error"]
    assert "Traceback" not in run.stderr
    assert "Token authentication" not in run.stderr  # Ray's note for its own users (the embedded Ray keeps it on)
    assert _complete(out / "three", "reconstruction", "fit_report.json")
    m = read_manifest(out)  # the batch folder is headcast's: a rerun may resume it
    assert m["kind"] == "batch reconstruct" and {"three", "corrupt", "missing", "summary.csv"} <= set(m["files"]), m
    _no_staging(out)
    stamp = (out / "three" / "fit_report.json").stat().st_mtime_ns

    again = _headcast(*args)
    assert again.returncode == 1, again.stderr
    rows2 = {r["name"]: r for r in read_summary(out)}
    assert rows2["three"]["status"] == "skipped" and rows2["three"]["frames"] == "3"  # its figures from its report
    assert [rows2[n]["status"] for n in ("corrupt", "missing")] == ["failed", "failed"]
    assert (out / "three" / "fit_report.json").stat().st_mtime_ns == stamp  # not redone
    assert "1 already complete (skipped)" in again.stderr


# ---------------------------------------------------------------- a two-node cluster on loopback
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_start(temp: Path, env: dict, head_port: int, head: bool) -> None:
    """``ray start`` for one node (1 CPU, its own session files in ``temp`` and its own agent ports)."""
    agent, grpc, metrics, runtime_env, manager = _free_ports(5)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
           f"--temp-dir={temp}", "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={manager}",
           "--include-log-monitor=false", f"--object-store-memory={100 << 20}"]  # starts sooner
    cmd += ["--head", f"--port={head_port}", "--include-dashboard=false"] if head else [
        f"--address=127.0.0.1:{head_port}"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def _node_processes(temp: Path):
    """This node's Ray processes (those naming its session folder) and all their children."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(temp) in a for a in (p.info["cmdline"] or [])):
            roots.append(p)
    procs = {p.pid: p for p in roots}
    for r in roots:
        try:
            procs.update({c.pid: c for c in r.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return roots, list(procs.values())


def _stop_nodes(temps: list[Path]) -> None:
    """Kill, by process id, every process of the nodes this test started (never anyone else's Ray)."""
    import psutil

    procs = [p for t in temps for p in _node_processes(t)[1]]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _busy_worker(temp: Path):
    """A batch worker process of the node in ``temp`` that is running a job, or None."""
    import psutil

    for p in _node_processes(temp)[1]:
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::Worker.run"):
                return p
        except psutil.NoSuchProcess:
            pass
    return None


@pytest.fixture(scope="module")
def cluster(headcast_home):
    """A head node and a second node, 1 CPU each, on 127.0.0.1, for the module; stopped afterwards whatever
    happens."""
    temps = [Path(f"/tmp/hc-test-{os.getpid()}-{k}") for k in ("head", "node")]  # short: socket path limit
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=os.pathsep.join(sys.path))
    port = _free_ports(1)[0]
    try:
        _ray_start(temps[0], env, port, head=True)
        _ray_start(temps[1], env, port, head=False)
        yield f"127.0.0.1:{port}", env, temps[1]
    finally:
        _stop_nodes(temps)
        for t in temps:
            subprocess.run(["rm", "-rf", str(t)], check=False)


FRAMES_PER_JOB = 75  # long enough (seconds a job) to kill a worker inside one; d0.mp4 has 78 frames


def test_two_node_cluster_survives_a_killed_worker(cluster, tmp_path):
    address, env, second = cluster
    frames = shared_path(*FRAMES)
    out = tmp_path / "recon"
    run = _headcast("batch", "reconstruct", str(frames / "frame-050"), str(frames / "frame-030"), "--out", str(out),
                    "--address", address, *FAST, env=env)
    assert run.returncode == 0, run.stderr
    rows = read_summary(out)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert len({r["node"] for r in rows}) == 2, rows  # one job on each node
    assert all(float(r["p2m_median_mm"]) < 5 and float(r["landmarks_3d_mm"]) < 15 for r in rows)
    assert all(_complete(out / r["name"], "reconstruction", "fit_report.json") for r in rows)
    recon = out / "frame-050"  # the head the animate jobs drive

    videos = shared_path("samples", "video")
    anim = tmp_path / "anim"
    p = subprocess.Popen([sys.executable, "-m", "headcast.cli", "batch", "animate", str(recon), str(videos),
                          "--out", str(anim), "--address", address, "--max-frames", str(FRAMES_PER_JOB),
                          "--no-video"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed, deadline = None, time.monotonic() + 600
        while killed is None and p.poll() is None and time.monotonic() < deadline:
            w = _busy_worker(second)
            if w is not None:
                time.sleep(0.5)  # inside the job (a job takes seconds); the worker process outlives its jobs,
                if _busy_worker(second) is not None:  # so kill it only while it still runs one
                    w.send_signal(signal.SIGKILL)
                    killed = w.pid
            time.sleep(0.2)
        _, err = p.communicate(timeout=900)
    finally:
        if p.poll() is None:
            p.kill()
    assert killed is not None, "no job ran on the second node"
    assert p.returncode == 0, err
    assert "died; retrying it on another worker" in err
    rows = read_summary(anim)
    assert sorted(r["name"] for r in rows) == ["d0", "d6", "wojtek"]
    assert all(r["status"] == "ok" and int(r["frames"]) == FRAMES_PER_JOB for r in rows), rows
    assert max(int(r["attempts"]) for r in rows) == 2
    assert all(_complete(anim / r["name"], "animation", "report.json") for r in rows)
    _no_staging(anim)


# ---------------------------------------------------------------- jobs and options (no Ray)
def test_inputs_expand_to_named_jobs(tmp_path):
    from headcast.batch.jobs import make_jobs

    frames = shared_path(*FRAMES)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "clip.mp4").write_bytes(b"")
    (tmp_path / "list.txt").write_text("# videos\na/clip.mp4\n\nb/clip.mp4\n")
    jobs = make_jobs("animate", [f"@{tmp_path / 'list.txt'}"], tmp_path / "out", "r")
    assert [j.name for j in jobs] == ["a-clip", "b-clip"]  # the same stem twice: named by their paths
    assert jobs[0].input == str(tmp_path / "a" / "clip.mp4") and jobs[0].target == str(tmp_path / "out" / "a-clip")
    rec = make_jobs("reconstruct", [str(frames)], tmp_path / "out")
    assert len(rec) == 46 and rec[0].name == "frame-000" and rec[0].input == str(frames / "frame-000")
    sweeps = make_jobs("reconstruct", [str(frames), str(tmp_path / "a")], tmp_path / "out", options={"sweep": True})
    assert [(j.name, j.input) for j in sweeps] == [("truedepth-mannequin", str(frames)), ("a", str(tmp_path / "a"))]


def test_animate_jobs_run_longest_first(tmp_path):
    """batch animate runs the videos longest first, by the frames each will run (the header's length capped
    by --max-frames), unknown lengths (a .csv take, an unreadable file) first; ties keep the input order;
    other kinds keep the input order."""
    from headcast.batch.jobs import longest_first, make_jobs

    videos = shared_path("samples", "video")  # d0 78 frames, wojtek 400, d6 1008
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    inputs = [str(videos / "d0.mp4"), str(videos / "wojtek.mp4"), str(videos / "d6.mp4"), str(tmp_path / "bad.mp4")]
    whole = make_jobs("animate", inputs, tmp_path / "out", "r")
    assert [j.name for j in longest_first(whole)] == ["bad", "d6", "wojtek", "d0"]
    capped = make_jobs("animate", inputs, tmp_path / "out", "r", {"max_frames": 100})
    assert [j.name for j in longest_first(capped)] == ["bad", "wojtek", "d6", "d0"]  # wojtek and d6 both 100
    rec = make_jobs("reconstruct", [str(shared_path(*FRAMES) / "frame-050"), str(shared_path(*FRAMES) / "frame-040")],
                    tmp_path / "out")
    assert longest_first(rec) == rec


def test_summary_parquet_holds_the_csv_rows(tmp_path):
    """summary.parquet (written when pyarrow is importable) has the rows of summary.csv: ok, failed and
    skipped rows, integer and fractional figures in one column, empty cells as nulls."""
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: summary.parquet is not written")
    from headcast.batch.summary import write_summary

    rows = [{"name": "a", "kind": "animate", "input": "a.mp4", "status": "ok", "seconds": 5.5, "frames": 100,
             "share_under_threshold": 1, "cpu_s": 6.0, "attempts": 1},
            {"name": "b", "kind": "animate", "input": "b.mp4", "status": "failed", "error": "cannot read video b.mp4",
             "attempts": 1},
            {"name": "c", "kind": "animate", "input": "c.mp4", "status": "skipped", "frames": 78,
             "share_under_threshold": 0.93, "attempts": 0}]
    paths = write_summary(tmp_path, rows)
    assert [p.name for p in paths] == ["summary.csv", "summary.parquet"]
    table = pq.read_table(tmp_path / "summary.parquet").to_pylist()
    csv_rows = read_summary(tmp_path)
    assert [t["name"] for t in table] == [r["name"] for r in csv_rows] == ["a", "b", "c"]
    for t, r in zip(table, csv_rows):
        assert list(t) == list(r)
        for k, v in t.items():
            if isinstance(v, (int, float)):
                assert float(v) == pytest.approx(float(r[k])), (k, v, r[k])
            else:
                assert (v or "") == r[k], (k, v, r[k])


def test_cli_passes_the_single_commands_options(tmp_path):
    from headcast.cli import build_parser
    from headcast.fit.config import FitConfig

    p = build_parser()
    a = p.parse_args(["batch", "reconstruct", "x", "--out", str(tmp_path), "--method", "landmarks-3d"])
    assert a.method == "landmarks-3d" and a.grow_mm == FitConfig().grow_mm and a.workers is None
    assert set(a.batch_options) >= {"method", "grow_mm", "hull_margin", "texture", "seed"}
    a = p.parse_args(["batch", "reconstruct", "x", "--out", str(tmp_path), "--sweep", "--max-frames", "3"])
    assert a.sweep and a.max_frames == 3 and {"sweep", "max_frames", "detail"} <= set(a.batch_options)
    assert "inputs" not in a.batch_options
    a = p.parse_args(["batch", "animate", "r", "v.mp4", "--out", str(tmp_path), "--max-frames", "5"])
    assert a.max_frames == 5 and "threshold" in a.batch_options and "out" not in a.batch_options


def test_bad_options_are_refused_before_any_job(tmp_path):
    from headcast.batch import run
    from headcast.core.errors import HeadcastError

    with pytest.raises(HeadcastError, match="no option 'bogus'"):
        run("reconstruct", ["x"], tmp_path / "o", options={"bogus": 1})
    with pytest.raises(HeadcastError, match="a --sweep job fits the full method"):
        run("reconstruct", ["x"], tmp_path / "o", options={"sweep": True, "method": "landmarks-3d"})
    with pytest.raises(HeadcastError, match="--hull-margin"):
        run("reconstruct", ["x"], tmp_path / "o", options={"hull_margin": -1.0})
    for key, flag, value in (("seed", "--seed", -1), ("w_psi", "--w-psi", float("nan")), ("grow_mm", "--grow-mm", -3.0)):
        with pytest.raises(HeadcastError, match=f"^{flag} must be"):  # as the single command refuses them
            run("reconstruct", ["x"], tmp_path / "o", options={key: value})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.csv").write_text("my,own,table\n")
    with pytest.raises(HeadcastError, match="holds files headcast did not write"):
        run("reconstruct", ["x"], tmp_path / "mine")
    assert (tmp_path / "mine" / "summary.csv").read_text() == "my,own,table\n"


def test_batch_out_must_be_new_empty_or_a_batch_folder(tmp_path):
    """--out is refused in one line, exit 2, before Ray and nothing written, when it holds the user's files (a
    folder named like the job, a notes file) or another headcast output (a batch of another command too, whose
    summary.csv it would replace), as every other command's --out."""
    from headcast.io.outputs import claim_batch_dir, staged_dir

    mine = tmp_path / "mine"
    (mine / "frame-050").mkdir(parents=True)  # the job's name
    (mine / "frame-050" / "notes.txt").write_text("mine")
    (mine / "notes.txt").write_text("mine")
    with staged_dir(tmp_path / "recon", "reconstruction") as d:
        (d / "params.npz").write_bytes(b"")
    claim_batch_dir(tmp_path / "textured", "texture", ["summary.csv"])
    (tmp_path / "textured" / "summary.csv").write_text("name,kind\n")
    for out, says in ((mine, "holds files headcast did not write"), (tmp_path / "recon", "of kind 'reconstruction'"),
                      (tmp_path / "textured", "of kind 'batch texture', not 'batch reconstruct'")):
        before = sorted((p, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
        run = _headcast("batch", "reconstruct", str(tmp_path / "frame-050"), "--out", str(out), *FAST, timeout=300)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and says in lines[0] and str(out) in lines[0], run.stderr
        assert sorted((p, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--w-psi", "nan"), ("--grow-mm", "-3"),
                                         ("--hull-margin", "0.5"), ("--texture-size", "8")])
def test_batch_refuses_an_option_as_the_single_command_does(flag, value, tmp_path, capsys):
    """One table of ranges (io.validate.OPTION_RANGES): batch reconstruct's line is the single command's, units
    and all, and nothing is written."""
    from headcast.cli import main

    more = ["--texture"] if flag == "--texture-size" else []
    lines = []
    for argv in (["reconstruct", "x"], ["batch", "reconstruct", "x"]):
        assert main([*argv, "--out", str(tmp_path / "o"), flag, value, *more]) == 2
        lines.append(capsys.readouterr().err.strip())
    assert lines[0] == lines[1] and len(lines[0].splitlines()) == 1, lines
    assert not (tmp_path / "o").exists()
    if flag in ("--grow-mm", "--hull-margin", "--texture-size"):
        assert lines[0].split(", not ")[0].endswith((" mm", " metres", " texels")), lines[0]


def test_batch_sweep_refuses_max_frames_as_reconstruct_does(tmp_path, capsys):
    """A sweep's --max-frames has the single command's cap (io.validate.MAX_SWEEP_FRAMES) in batch --sweep too."""
    from headcast.cli import main
    from headcast.io.validate import MAX_SWEEP_FRAMES

    (tmp_path / "sweep").mkdir()
    lines = []
    for argv in (["reconstruct"], ["batch", "reconstruct", "--sweep"]):
        assert main([*argv, str(tmp_path / "sweep"), "--out", str(tmp_path / "o"),
                     "--max-frames", str(MAX_SWEEP_FRAMES + 1)]) == 2
        lines.append(capsys.readouterr().err.strip())
    assert lines[0] == lines[1] and "--max-frames" in lines[0] and len(lines[0].splitlines()) == 1, lines
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value", [("--threshold", "11"), ("--threshold", "-0.1"), ("--max-iters", "0")])
def test_batch_animate_refuses_an_option_as_animate_does(flag, value, tmp_path, capsys):
    """animate and batch animate check --threshold and --max-iters in the one table, with the same line."""
    from headcast.cli import main

    lines = []
    for argv in (["animate"], ["batch", "animate"]):
        assert main([*argv, str(tmp_path / "r"), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), flag, value]) == 2
        lines.append(capsys.readouterr().err.strip())
    assert lines[0] == lines[1] and lines[0].startswith(f"headcast: error: {flag} must be"), lines
    assert not (tmp_path / "o").exists()


def test_worker_threads_pinned_whatever_it_inherits():
    """A worker started with core.threads.environment(1) and pinned has one thread in every pool, even when
    the environment it inherited (the driver's, applied for 2 CPUs) said 2."""
    from headcast.core import threads

    code = ("import os\nfrom headcast.core import threads\nthreads.apply()\nimport torch, cv2\n"
            "p = threads.pin(1)\nprint(p.count, p.blas, os.environ['OMP_NUM_THREADS'], "
            "os.environ['OPENBLAS_NUM_THREADS'], torch.get_num_threads(), cv2.getNumThreads(), "
            "threads.apply() == p)")
    env = {k: v for k, v in os.environ.items() if k not in ("HEADCAST_THREADS", *threads.BLAS_VARS)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(env, OMP_NUM_THREADS="2"))
    assert run.stdout.split() == ["1", "1", "1", "1", "1", "1", "True"], run.stderr
    assert threads.environment(3)["OMP_NUM_THREADS"] == "3" == threads.environment(3)["OPENBLAS_NUM_THREADS"]


def test_embedded_ray_starts_lean_and_workers_get_two_arenas():
    """The embedded Ray starts no autoscaler monitor and no log monitor (the monitor held every shutdown for
    its 1 s SIGTERM grace) and no dashboard head; its raylet has prestarted the worker the actor takes over
    (no second process); its workers inherit the malloc arena cap; the driver's own environment is left as
    it was."""
    code = ("import os, ray\nfrom ray._private import worker\nfrom headcast.batch.scheduler import ray_session\n"
            "def workers(raylet):\n"
            "    kids = open(f'/proc/{raylet}/task/{raylet}/children').read().split()\n"
            "    return [k for k in kids if b'Agent' not in open(f'/proc/{k}/cmdline', 'rb').read()]\n"
            "with ray_session(None, 1) as slots:\n"
            "    kinds = sorted(worker._global_node.all_processes)\n"
            "    raylet = worker._global_node.all_processes['raylet'][0].process.pid\n"
            "    prestarted = workers(raylet)\n"
            "    actor = ray.remote(num_cpus=1)(type('A', (), {'pid': lambda self: str(os.getpid()), 'arenas': "
            "lambda self: os.environ.get('MALLOC_ARENA_MAX')})).remote()\n"
            "    pid, arenas = ray.get([actor.pid.remote(), actor.arenas.remote()])\n"
            "    print(slots, kinds, prestarted == [pid] == workers(raylet), arenas, os.environ.get('MALLOC_ARENA_MAX'))")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.stdout.split() == ["1", "['gcs_server',", "'raylet']", "True", "2", "None"], \
        run.stdout + run.stderr[-2000:]
