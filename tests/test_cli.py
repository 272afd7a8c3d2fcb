"""The command line: help for every command, model set-up commands, one-line errors."""

import importlib.metadata
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headcast
from conftest import shared_path
from headcast.cli import build_parser, main
from headcast.model.head_model import load_model, save_model
from headcast.model.ict_version import VERSION


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


def test_every_command_that_writes_has_force(capsys):
    """--force wherever a command writes (bench results excepted: they replace their own files), said alike."""
    writers = []
    for cmd in _commands(build_parser()):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        if ("--out" in text or cmd == ("texture",)) and cmd[0] != "bench":
            writers.append(cmd)
            assert "--force" in text and "other files are never touched" in text, cmd
    assert len(writers) == 16, writers  # reconstruct animate decode demo synth texture encode export keygen
    #                                      model build-ict, model import-flame, model add-uv, receive, batch x3


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


NATIVE = re.compile(r"TensorFlow Lite|XNNPACK|absl::|inference_feedback_manager|^[IWEF]\d{4} |\.cc:\d+\]")


def _headcast(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headcast.cli", *args], capture_output=True, text=True, **kw)


def test_reconstruct_output_has_no_native_log_lines(tmp_path, headcast_home):
    prefix = shared_path("samples", "rgbd", "truedepth-mannequin") / "frame-050"
    run = _headcast("reconstruct", str(prefix), "--out", str(tmp_path / "r"), "--method", "landmarks-3d",
                    timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any(ln.startswith("landmarks: mediapipe") for ln in lines), run.stderr  # progress is shown ...
    assert not [ln for ln in lines if NATIVE.search(ln)], run.stderr  # ... and nothing from MediaPipe's C++ side
    assert lines[-1].startswith("headcast: wrote ")


def _no_face_frame(folder: Path) -> Path:
    """A real frame's depth and intrinsics beside a colour image without a face."""
    import shutil

    from headcast.render.images import save_png

    real = shared_path("samples", "rgbd", "truedepth-mannequin")
    folder.mkdir()
    shutil.copy(real / "frame-050_depth_mm.png", folder / "x_depth_mm.png")
    shutil.copy(real / "frame-050_intrinsics.json", folder / "x_intrinsics.json")
    save_png(folder / "x_color.png", np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3)))
    return folder / "x"


def test_no_face_is_one_line_and_debug_shows_native_logs(tmp_path):
    prefix = _no_face_frame(tmp_path / "in")
    run = _headcast("reconstruct", str(prefix), "--out", str(tmp_path / "r"), timeout=300)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"headcast: error: no face found in {prefix}_color.png; tried rotations "
                                       "0, 90, 180, 270"], run.stderr
    assert not (tmp_path / "r").exists()
    run = _headcast("--debug", "reconstruct", str(prefix), "--out", str(tmp_path / "r"), timeout=300)
    assert run.returncode == 1 and "Traceback" in run.stderr and NATIVE.search(run.stderr), run.stderr


def test_quiet_and_verbose_set_what_reaches_stderr(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "a.pem")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("headcast: private key ")
    assert main(["-q", "keygen", "--out", str(tmp_path / "b.pem")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["-q", "keygen", "--out", str(tmp_path / "b.pem")]) == 2  # errors still show
    assert capsys.readouterr().err.startswith("headcast: error: ")
    assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("headcast").handlers)  # handler removed


def test_version_has_one_source_and_help_imports_no_stage():
    assert headcast.__version__ == importlib.metadata.version("headcast")
    run = _headcast("--version", timeout=60)
    assert run.stdout.strip() == f"headcast {headcast.__version__}"
    code = ("import sys\nfrom headcast.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'mediapipe', 'open3d') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr


@pytest.mark.parametrize("argv, line", [
    (["reconstruct", "f", "--out", "o", "--grow-mm", "abc"],
     "headcast reconstruct: error: argument --grow-mm: invalid float value: 'abc' (see 'headcast reconstruct --help')"),
    (["texture", "R", "--bogus", "1"],
     "headcast texture: error: unrecognized arguments: --bogus 1 (see 'headcast texture --help')"),
    (["model", "import-flame"],
     "headcast model import-flame: error: the following arguments are required: pkl (see 'headcast model import-flame "
     "--help')"),
    (["bench", "render", "--size", "x"],
     "headcast bench render: error: argument --size: invalid int value: 'x' (see 'headcast bench render --help')"),
])
def test_usage_errors_are_one_line(argv, line, capsys):
    """A mistyped option is one line naming the command (not its whole usage), exit status 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and err.splitlines() == [line], err
