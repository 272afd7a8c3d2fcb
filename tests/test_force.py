"""Through the commands (docs/guarantees.md): ``--force`` replaces only headcast's own earlier output, a
signal during a write leaves nothing, files that belong together appear together. The refusals are the
table in test_guarantees.py."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from headcast.cli import main
from headcast.core.errors import HeadcastError
from headcast.io.outputs import MANIFEST, read_manifest, staged_dir
from test_outputs import no_staging, signed_stream, tree

SRC = Path(__file__).resolve().parents[1] / "src"


def test_decode_force_replaces_only_the_manifests_files(tmp_path, capsys):
    stream, trust = signed_stream(tmp_path)
    out = tmp_path / "dec"
    argv = ["decode", str(stream), "--trust", str(trust), "--out", str(out)]
    assert main(argv) == 0
    first = read_manifest(out)["files"]
    (out / "notes.txt").write_text("mine")
    (out / "params.npz").write_bytes(b"changed by hand")  # headcast's file: --force replaces it
    before = tree(tmp_path)
    assert main(argv) == 2 and "--force" in capsys.readouterr().err
    assert tree(tmp_path) == before
    assert main([*argv, "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "params.npz").read_bytes() != b"changed by hand"
    assert read_manifest(out)["files"] == first and sorted(os.listdir(out)) == sorted([*first, MANIFEST, "notes.txt"])
    assert no_staging(tmp_path)


@pytest.fixture
def tiny_anim(tmp_path, monkeypatch):
    """An animation folder of the model 'tiny' (a small FLAME-topology model in HEADCAST_HOME), a sender key."""
    shared_path("models", "flame-assets")
    from headcast.model.head_model import save_model
    from headcast.stream import auth
    from tiny_model import flame_template_model

    monkeypatch.setenv("HEADCAST_HOME", str(tmp_path / "home"))
    save_model(flame_template_model(n_shape=8, n_expr=4), tmp_path / "home" / "models" / "tiny.npz")
    d = tmp_path / "anim"
    with staged_dir(d, "animation") as tmp:
        theta = np.zeros((6, 15))
        theta[3, 0] = np.nan  # a frame without a fit: it holds the previous one
        np.savez(tmp / "params.npz", theta=theta, psi=np.full((6, 4), 0.1), eta=np.tile([2500.0, 256, 256], (6, 1)),
                 beta=np.zeros(8), model=np.str_("tiny"), fps=np.float64(25.0))
    auth.generate_key(tmp_path / "k.pem")
    return d, tmp_path / "k.pem"


def test_encode_replaces_a_stream_only_with_force(tiny_anim, tmp_path, capsys):
    anim, key = tiny_anim
    out = tmp_path / "talk.hcs"
    argv = ["encode", str(anim), "--key", str(key), "--out", str(out), "--profile", "paper"]
    assert main(argv) == 0, capsys.readouterr().err
    first = out.read_bytes()
    assert main(argv) == 2 and "exists: pass --force" in capsys.readouterr().err and out.read_bytes() == first
    assert main([*argv, "--force"]) == 0 and out.read_bytes() != first  # a new signature
    assert main(["decode", str(out), "--trust", f"{key}.pub", "--out", str(tmp_path / "dec")]) == 0
    with np.load(tmp_path / "dec" / "params.npz") as z:
        assert np.isfinite(z["theta"]).all() and len(z["theta"]) == 6  # the NaN frame was held, never sent
    assert no_staging(tmp_path)


def test_decode_from_a_file_object_is_bounded_and_named(tmp_path, monkeypatch):
    import io

    from headcast.stream import files

    monkeypatch.setattr(files, "MAX_STREAM_BYTES", 1000)
    with pytest.raises(HeadcastError, match="^stream file big.hcs is more than the 1.0 kB headcast reads$"):
        files.decode_file(_Named(bytes(1001), "big.hcs"), tmp_path / "out")
    with pytest.raises(HeadcastError, match="^stream: bad magic"):
        files.decode_file(io.BytesIO(b"XXXX" * 40), tmp_path / "out")
    assert os.listdir(tmp_path) == []


class _Named:
    """A readable file object with a name."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name

    def read(self, n: int = -1) -> bytes:
        return self.data if n < 0 else self.data[:n]


def test_keygen_force_writes_both_keys_with_their_modes(tmp_path):
    p = tmp_path / "id.pem"
    assert main(["keygen", "--out", str(p)]) == 0
    old = p.read_bytes()
    p.chmod(0o644)
    assert main(["keygen", "--out", str(p)]) == 2 and p.read_bytes() == old
    assert main(["keygen", "--out", str(p), "--force"]) == 0 and p.read_bytes() != old
    assert os.stat(p).st_mode & 0o777 == 0o600 and os.stat(f"{p}.pub").st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["id.pem", "id.pem.pub"]


# --- texture files in a reconstruction folder --------------------------------------------------
def _write(names, text="new", fail=False):
    def write(folder: Path) -> None:
        for n in names:
            (folder / n).write_text(text)
        if fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / names[0]))
    return write


def test_texture_files_join_the_manifest_and_are_replaced_only_with_force(tmp_path):
    from headcast.texture.pipeline import OUTPUTS, _write_outputs

    d = tmp_path / "r"
    with staged_dir(d, "reconstruction") as tmp:
        (tmp / "params.npz").write_bytes(b"fit")
    (d / "notes.txt").write_text("mine")
    _write_outputs(d, _write(OUTPUTS, "first"), force=False)
    assert set(read_manifest(d)["files"]) == {"params.npz", *OUTPUTS}
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match="textured already: pass --force"):
        _write_outputs(d, _write(OUTPUTS), force=False)
    with pytest.raises(HeadcastError, match="cannot write .*: no space left on device"):
        _write_outputs(d, _write(OUTPUTS, fail=True), force=True)
    assert tree(tmp_path) == before  # no staging, the earlier texture as it was
    _write_outputs(d, _write(OUTPUTS, "second"), force=True)
    assert {(d / n).read_text() for n in OUTPUTS} == {"second"} and (d / "notes.txt").read_text() == "mine"
    # reconstruct --force later replaces the texture files too: they are the manifest's
    with staged_dir(d, "reconstruction", force=True) as tmp:
        (tmp / "params.npz").write_bytes(b"refit")
    assert sorted(os.listdir(d)) == [MANIFEST, "notes.txt", "params.npz"] and no_staging(tmp_path)


@pytest.mark.parametrize("manifest", [True, False])
def test_texture_never_replaces_a_users_file(tmp_path, manifest):
    from headcast.texture.pipeline import OUTPUTS, _write_outputs

    d = tmp_path / "r"
    d.mkdir()
    if manifest:
        d.rmdir()
        with staged_dir(d, "reconstruction") as tmp:
            (tmp / "params.npz").write_bytes(b"fit")
    (d / "albedo.png").write_text("my painting")
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match="albedo.png, which headcast did not write"):
        _write_outputs(d, _write(OUTPUTS), force=True)
    assert tree(tmp_path) == before


# --- receive, bench, signals -------------------------------------------------------------------
def test_receive_stopped_before_any_frame_writes_nothing(tmp_path):
    from headcast.stream import auth, receiver

    out = tmp_path / "live.mp4"

    async def run():
        ready = asyncio.Event()
        task = asyncio.create_task(receiver.receive("127.0.0.1", 0, out, auth.Trust(bytes(32)),
                                                    ready=lambda s: ready.set()))
        await ready.wait()
        assert any(n.startswith(".live.mp4.staging-") for n in os.listdir(tmp_path))  # refused at start if it can't
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert os.listdir(tmp_path) == []


def test_bench_results_appear_together_and_replace_their_own(tmp_path):
    from headcast.bench import write_results

    write_results(tmp_path, "b", {"machine": "m", "x": 1}, "| x |")
    write_results(tmp_path, "b", {"machine": "m", "x": 2}, "| y |")
    assert json.loads((tmp_path / "b.json").read_text())["x"] == 2 and (tmp_path / "b.md").read_text() == "| y |\n"
    assert sorted(os.listdir(tmp_path)) == ["b.json", "b.md"]


@pytest.mark.parametrize("mine", [{"b.json": "[1, 2]"}, {"b.json": "not json"}, {"b.md": "# my notes\n"},
                                  {"b.json": '{"x": 1}', "b.md": "# my notes\n"}])
def test_bench_results_never_replace_other_files(tmp_path, mine):
    """A user's b.json or b.md (not a bench result: no machine line) is refused in one line, untouched."""
    from headcast.bench import write_results

    for n, text in mine.items():
        (tmp_path / n).write_text(text)
    with pytest.raises(HeadcastError, match=r"is not an earlier b benchmark's result: choose another --out$"):
        write_results(tmp_path, "b", {"machine": "m"}, "| x |")
    assert {n: (tmp_path / n).read_text() for n in os.listdir(tmp_path)} == mine


def test_main_restores_the_signal_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    assert main(["keygen", "--out", str(tmp_path / "k.pem")]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_sigterm_during_reconstruct_leaves_nothing(tmp_path, headcast_home):
    """A real ``headcast reconstruct`` is sent SIGTERM while its output is being written: exit 130, one line
    saying so, no output and no staging name left."""
    prefix = shared_path("samples", "rgbd", "truedepth-mannequin") / "frame-050"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    p = subprocess.Popen([sys.executable, "-m", "headcast.cli", "reconstruct", str(prefix), "--out", str(work / "r"),
                          "--method", "landmarks-3d"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 300
    while p.poll() is None and time.monotonic() < deadline:
        if any(".staging-" in n for n in os.listdir(work)):
            p.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "headcast: terminated by SIGTERM"
    assert os.listdir(work) == []
