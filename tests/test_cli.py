"""The command line: help for every command, model set-up commands, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from headcast.cli import build_parser, main
from headcast.model.head_model import load_model, save_model
from headcast.model.ict import VERSION


def _commands(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _commands(sub, prefix + (name,))


def test_every_command_has_help(capsys):
    commands = list(_commands(build_parser()))
    assert ("reconstruct",) in commands and ("model", "import-flame") in commands and ("bench", "stream") in commands
    for cmd in commands:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage: headcast" in capsys.readouterr().out


def test_console_script_runs():
    exe = Path(sys.executable).parent / "headcast"  # the entry point installed beside the interpreter
    run = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("headcast ")


def test_build_ict_if_missing_rebuilds_a_stale_model(tmp_path, ict_model, capsys):
    out = tmp_path / "ict.npz"
    stale = ict_model.__class__(**{**vars(ict_model), "meta": dict(ict_model.meta, version="old")})
    save_model(stale, out)
    src = shared_path("models", "ict-facekit")
    assert main(["model", "build-ict", "--src", str(src), "--out", str(out), "--if-missing"]) == 0
    assert load_model(out).meta["version"] == VERSION
    assert "another headcast version" in capsys.readouterr().err
    assert main(["model", "build-ict", "--src", str(src), "--out", str(out), "--if-missing"]) == 0
    assert "present" in capsys.readouterr().err


def test_import_flame_cli_and_refusal(tmp_path, capsys):
    from flame_fixture import write_flame_fixture

    assets = shared_path("models", "flame-assets")
    pkl = tmp_path / "generic_model.pkl"
    write_flame_fixture(pkl)
    out = tmp_path / "flame2020.npz"
    code = main(["model", "import-flame", str(pkl), "--landmarks", str(assets / "landmark_embedding.npy"),
                 "--template-obj", str(assets / "head_template.obj"), "--masks", str(assets / "FLAME_masks.pkl"),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = load_model(out)
    assert m.n_vertices == 5023 and m.has_dynamic_contour and np.isfinite(m.v_template).all()
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    assert main(["model", "import-flame", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("headcast: error: ") and "refusing" in err[-1]
    assert not (tmp_path / "x.npz").exists()
