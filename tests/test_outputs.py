"""Staged outputs (headcast.io.outputs): never destroy a user's file, never leave half an output or a
staging name, on errors, a full or read-only disk, and SIGTERM/SIGINT (docs/guarantees.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headcast.core.errors import HeadcastError
from headcast.io.outputs import (
    MANIFEST,
    STAGING_MARK,
    check_output_dir,
    extend_manifest,
    read_manifest,
    staged_dir,
    staged_file,
    staged_files,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def tree(root: Path) -> dict[str, bytes | str | None]:
    """Every entry below ``root``: file contents, None for folders, "special" for FIFOs (never opened)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes() if p.is_file() else "special")
            for p in sorted(root.rglob("*"))}


def no_staging(root: Path) -> bool:
    return not [p for p in root.rglob("*") if STAGING_MARK in p.name]


def user_folder(root: Path) -> Path:
    d = root / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    (d / "photo.jpg").write_bytes(b"\xff\xd8 not really")
    return d


def signed_stream(folder: Path) -> tuple[Path, Path]:
    """A valid signed stream file of 30 synthetic frames and its sender's public key file."""
    from headcast.stream import auth, files
    from test_stream import make_info, synthetic_frames

    key = auth.Ed25519PrivateKey.generate()
    data, _ = files.encode_frames(synthetic_frames(30), make_info(), key)
    (folder / "talk.hcs").write_bytes(data)
    (folder / "sender.pub").write_text(f"headcast-ed25519 {auth.public_bytes(key).hex()}\n")
    return folder / "talk.hcs", folder / "sender.pub"


def write_dir(out, kind="decoded", files=("a.txt",), **kw) -> Path:
    with staged_dir(out, kind, **kw) as tmp:
        for f in files:
            (tmp / f).write_text(f)
    return Path(out)


# --- folders -----------------------------------------------------------------------------------
def test_new_folder_gets_a_manifest(tmp_path):
    out = write_dir(tmp_path / "a" / "out", files=("x.txt", "y.txt"))
    assert sorted(os.listdir(out)) == [MANIFEST, "x.txt", "y.txt"]
    m = read_manifest(out)
    assert m["kind"] == "decoded" and m["files"] == ["x.txt", "y.txt"] and m["version"]
    assert no_staging(tmp_path)


@pytest.mark.parametrize("setup, match", [
    ("user", "did not write"),
    ("same", "--force"),
    ("other", "kind 'animation'"),
    ("file", "not a folder"),
    ("forged", "did not write"),
])
def test_existing_out_is_refused_and_untouched(tmp_path, setup, match):
    out = user_folder(tmp_path)
    if setup == "same":
        out = write_dir(tmp_path / "prev")
    elif setup == "other":
        out = write_dir(tmp_path / "prev", kind="animation")
    elif setup == "file":
        out = out / "notes.txt"
    elif setup == "forged":  # a manifest naming a path outside the folder counts as no manifest
        (out / MANIFEST).write_text(json.dumps({"format": "headcast-output", "kind": "decoded", "files": ["../x"]}))
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match=match):
        write_dir(out)
    assert tree(tmp_path) == before


def test_force_replaces_only_headcast_files(tmp_path):
    out = write_dir(tmp_path / "out", files=("a.txt", "old.txt"))
    (out / "mine.txt").write_text("keep me")
    write_dir(out, files=("a.txt", "b.txt"), force=True)
    assert sorted(os.listdir(out)) == [MANIFEST, "a.txt", "b.txt", "mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me" and (out / "a.txt").read_text() == "a.txt"
    assert read_manifest(out)["files"] == ["a.txt", "b.txt"]
    # a new entry that would overwrite a user's file: refused, everything as it was
    (out / "c.txt").write_text("user's c")
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match="c.txt, which headcast did not write"):
        write_dir(out, files=("a.txt", "c.txt"), force=True)
    assert tree(tmp_path) == before and no_staging(tmp_path)


def test_out_dot_is_never_wiped(tmp_path, monkeypatch):
    d = user_folder(tmp_path)
    monkeypatch.chdir(d)
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match="did not write"):
        write_dir(".", force=True)
    assert tree(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    write_dir(".")  # an empty current folder is filled in place, never renamed
    assert Path.cwd() == empty and (empty / "a.txt").is_file() and Path(os.getcwd()).exists()


@pytest.mark.parametrize("where, match", [("equal", "is the input"), ("inside", "inside the input"),
                                          ("replaced", "would replace the input")])
def test_inputs_and_output_may_not_overlap(tmp_path, where, match):
    recon = user_folder(tmp_path)
    prev = write_dir(tmp_path / "prev", files=("video.mp4",))
    out, inputs = {"equal": (recon, [recon]), "inside": (recon / "anim", [recon]),
                   "replaced": (prev, [prev / "video.mp4"])}[where]
    before = tree(tmp_path)
    with pytest.raises(HeadcastError, match=match):
        write_dir(out, force=True, inputs=inputs)
    assert tree(tmp_path) == before
    write_dir(prev, force=True, inputs=[prev / "other.mp4"])  # an input headcast does not replace is fine


def test_failure_removes_staging_and_keeps_the_old_output(tmp_path):
    out = write_dir(tmp_path / "out")
    before = tree(tmp_path)
    for exc in (RuntimeError("bug"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with staged_dir(out, "decoded", force=True) as tmp:
                (tmp / "a.txt").write_text("half")
                raise exc
        assert tree(tmp_path) == before
    check_output_dir(tmp_path / "new", "decoded")
    assert not (tmp_path / "new").exists()


def test_extend_manifest(tmp_path):
    out = write_dir(tmp_path / "out", kind="reconstruction")
    (out / "albedo.png").write_bytes(b"png")
    extend_manifest(out, "reconstruction", ["albedo.png"])
    assert read_manifest(out)["files"] == ["a.txt", "albedo.png"]
    with pytest.raises(HeadcastError, match="not a headcast animation"):
        extend_manifest(out, "animation", ["x"])


# --- files -------------------------------------------------------------------------------------
def test_staged_file(tmp_path):
    target = tmp_path / "k" / "key.pem"
    with staged_file(target, mode=0o600) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".key.pem" + STAGING_MARK)
        assert os.stat(tmp).st_mode & 0o777 == 0o600  # before anything is written
        tmp.write_bytes(b"secret")
    assert target.read_bytes() == b"secret"
    with pytest.raises(HeadcastError, match="exists: pass --force"):
        with staged_file(target) as tmp:
            tmp.write_bytes(b"x")
    target.chmod(0o644)
    with staged_file(target, force=True, mode=0o600) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.stat(target).st_mode & 0o777 == 0o600
    with pytest.raises(HeadcastError, match="is a folder"):
        with staged_file(tmp_path / "k", force=True):
            pass
    with pytest.raises(HeadcastError, match="is an input"):
        with staged_file(target, force=True, inputs=[target]):
            pass
    with pytest.raises(HeadcastError, match="key.pem is a file, not a folder"):
        with staged_file(target / "x.glb"):
            pass
    with pytest.raises(ValueError):
        with staged_file(target, force=True) as tmp:
            tmp.write_bytes(b"half")
            raise ValueError
    assert target.read_bytes() == b"new" and no_staging(tmp_path)


def test_staged_files_both_or_neither(tmp_path):
    priv, pub = tmp_path / "id", tmp_path / "id.pub"
    pub.mkdir()  # the public key's name is a folder: refused before anything is written
    with pytest.raises(HeadcastError, match="is a folder"):
        with staged_files([priv, pub], modes=[0o600, 0o644]):
            pass
    pub.rmdir()
    assert not priv.exists() and no_staging(tmp_path)
    with staged_files([priv, pub], modes=[0o600, 0o644]) as (a, b):
        a.write_bytes(b"private")
        b.write_bytes(b"public")
    assert priv.read_bytes() == b"private" and os.stat(pub).st_mode & 0o777 == 0o644


# --- disks that fail ---------------------------------------------------------------------------
@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder (root only; skips otherwise); unmounted afterwards."""
    mounted = []

    def make(options: str) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            pytest.skip(f"needs root to mount a tmpfs ({r.stderr.decode().strip()})")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_full_disk_is_one_line_and_leaves_nothing(mount):
    fs = mount("size=64k")
    with pytest.raises(HeadcastError, match=r"^cannot write .*out: no space left on device$"):
        with staged_dir(fs / "out", "decoded") as tmp:
            (tmp / "big.bin").write_bytes(bytes(200_000))
    with pytest.raises(HeadcastError, match=r"^cannot write .*x\.glb: no space left on device$"):
        with staged_file(fs / "x.glb") as tmp:
            tmp.write_bytes(bytes(200_000))
    assert os.listdir(fs) == []


@pytest.mark.parametrize("options, reason", [("size=4k", "no space left on device"),
                                             ("ro,size=4k", "read-only file system")])
def test_decode_onto_a_failing_disk_through_the_cli(tmp_path, mount, capsys, options, reason):
    from headcast.cli import main

    stream, trust = signed_stream(tmp_path)
    fs = mount(options)
    assert main(["decode", str(stream), "--trust", str(trust), "--out", str(fs / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"headcast: error: cannot write {fs / 'out'}: {reason}"
    assert os.listdir(fs) == []


def test_read_only_folder_is_one_line(mount):
    fs = mount("ro,size=64k")
    for ctx in (staged_dir(fs / "out", "decoded"), staged_file(fs / "x.glb")):
        with pytest.raises(HeadcastError, match="^cannot write .*: read-only file system$"):
            with ctx:
                pass


def test_staging_paths_are_shown_as_their_outputs():
    from headcast.io.outputs import shown

    staging = Path("/data") / f".demo{STAGING_MARK}4242-0a1b2c3d"  # as headcast.io.outputs names them
    assert shown(staging / "reconstruction") == "/data/demo/reconstruction"
    assert shown("/data/.notes.txt") == "/data/.notes.txt" and shown("rel/x") == "rel/x"


def test_read_only_out_is_refused_before_the_work(tmp_path, mount, capsys):
    """The checks made before the work already refuse a folder that cannot be written (not after the fit)."""
    from headcast.cli import main
    from headcast.io.outputs import check_output_dir, check_output_file

    fs = mount("ro,size=4k")
    for check, target in ((lambda p: check_output_dir(p, "reconstruction"), fs / "out" / "r"),
                          (check_output_file, fs / "x.glb")):
        with pytest.raises(HeadcastError, match=f"^cannot write {target}: read-only file system$"):
            check(target)
    # the frame does not exist: the output is refused before any input is read
    assert main(["reconstruct", str(tmp_path / "frame-000"), "--out", str(fs / "r")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"headcast: error: cannot write {fs / 'r'}: "
                                                            "read-only file system"]
    # a batch too (it was an internal error from its mkdir), before Ray starts
    assert main(["batch", "texture", str(tmp_path), "--out", str(fs / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"headcast: error: cannot write {fs / 'b'}: "
                                                            "read-only file system"]


def _child(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_file_size_limit_is_one_line(tmp_path):
    """RLIMIT_FSIZE (EFBIG) stands for a disk that fills up, without root."""
    p = _child("""
        import resource, signal, sys
        from headcast.core.errors import HeadcastError
        from headcast.io.outputs import staged_dir
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
        try:
            with staged_dir(sys.argv[1], "decoded") as tmp:
                (tmp / "big.bin").write_bytes(bytes(50000))
        except HeadcastError as e:
            print(e)
    """, str(tmp_path / "out"))
    out, err = p.communicate(timeout=60)
    assert out.strip().endswith("out: file too large"), (out, err)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_a_write_removes_the_staging(tmp_path, sig):
    p = _child("""
        import sys, time
        from headcast.io.outputs import install_signal_handlers, staged_dir, staged_file
        install_signal_handlers()
        with staged_dir(sys.argv[1], "decoded") as tmp, staged_file(sys.argv[2]) as f:
            (tmp / "a.bin").write_bytes(bytes(1000))
            f.write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(60)
    """, str(tmp_path / "out"), str(tmp_path / "head.glb"))
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(sig)
    p.communicate(timeout=30)
    assert p.returncode != 0
    assert os.listdir(tmp_path) == []
