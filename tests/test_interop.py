"""Interop (issue 15): FLAME as delivered (no UVs), Live Link Face CSV out and in, flame_param.npz out and in.

Everything goes through the command line (``headcast.cli.main``) on real files: the FLAME-shaped fixture
pickle with the real landmark files of ../shared/models/flame-assets, a real synthetic capture and
reconstruction of it, and the ICT model's built-in motion."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import shared_path
from headcast.animate.builtin import builtin_motion
from headcast.cli import main
from headcast.core.params import N_POSE, HeadParams
from headcast.io import anim as anim_io
from headcast.io.recon import read_params, write_params
from headcast.model.layer import HeadLayer
from headcast.model.registry import resolve_model

# The app's published header (Epic's Live Link Face, CSV export), 63 columns.
PUBLISHED = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
FLAME = "flame_interop"  # the imported model's name in the session's HEADCAST_HOME


def _run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("headcast: error: "), err
    assert "Traceback" not in err
    return lines[-1]


def _vertices(model, beta, theta, psi) -> np.ndarray:
    layer = HeadLayer(model, dtype=torch.float64)
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    with torch.no_grad():
        return layer.vertices(t(np.tile(beta, (len(theta), 1))), t(psi), t(theta)).numpy()


# --------------------------------------------------------------------- ICT: the CSV round trip
@pytest.fixture(scope="module")
def ict_take(ict_model, headcast_home, tmp_path_factory):
    """A reconstruction folder of the default model, the built-in motion as its animation folder, and
    that animation exported as a Live Link Face CSV."""
    d = tmp_path_factory.mktemp("ict-take")
    beta = np.clip(np.random.default_rng(3).normal(0, 1, ict_model.n_shape), -2, 2)
    (d / "recon").mkdir()
    write_params(d / "recon", HeadParams(beta, np.zeros(ict_model.n_expr), np.zeros(N_POSE), 1.0,
                                         np.array([0.0, 0.0, 0.5]), "ict"))
    motion = builtin_motion(ict_model, fps=25.0)
    n = len(motion.times)
    (d / "anim").mkdir()
    anim_io.write_animation(d / "anim", anim_io.Animation(
        motion.times, motion.theta, motion.psi, np.tile([1.0, 0.0, 0.0, 0.5], (n, 1)), np.ones(n, bool), 25.0,
        beta, "ict"))
    assert main(["export", str(d / "anim"), "--format", "livelink", "--out", str(d / "take.csv")]) == 0
    return d


def test_export_format_follows_the_out_suffix(ict_take, tmp_path, capsys):
    """Without --format the suffix of --out decides (.csv: Live Link, as the user meant, not a GLB named .csv);
    a suffix that disagrees with --format is refused in one line, nothing written."""
    assert main(["export", str(ict_take / "anim"), "--out", str(tmp_path / "take.csv")]) == 0
    assert (tmp_path / "take.csv").read_bytes() == (ict_take / "take.csv").read_bytes()
    capsys.readouterr()
    assert main(["export", str(ict_take / "anim"), "--format", "livelink", "--out", str(tmp_path / "x.glb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names a glb file but --format is livelink" in err[0]
    assert not (tmp_path / "x.glb").exists()


def test_livelink_header_is_the_published_one(ict_take):
    from headcast.io.livelink import HEADER

    assert ",".join(HEADER) == PUBLISHED and len(HEADER) == 63
    lines = (ict_take / "take.csv").read_text().splitlines()
    assert lines[0] == PUBLISHED
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 175 and all(len(r) == 63 and r[1] == "61" for r in rows)
    assert all(re.fullmatch(r"\d\d:\d\d:[0-5]\d:\d\d\.\d{3}", r[0]) for r in rows)
    # 25 fps: frame 26 is one second and one frame in
    assert rows[0][0] == "00:00:00:00.000" and rows[26][0] == "00:00:01:01.000"
    curves = np.array([r[2:54] for r in rows], float)
    assert curves.min() >= 0 and curves.max() <= 1
    jaw = PUBLISHED.split(",").index("JawOpen")
    assert np.array([r[jaw] for r in rows], float).max() == pytest.approx(0.32 / 0.44216, abs=2e-3)


def test_csv_round_trip_same_curves_and_vertices(ict_model, ict_take, capsys):
    code, err = _run(capsys, "animate", ict_take / "recon", ict_take / "take.csv", "--out", ict_take / "driven")
    assert code == 0, err
    for name in (anim_io.PARAMS, anim_io.FRAMES, anim_io.VIDEO, anim_io.PREVIEW, anim_io.REPORT):
        assert (ict_take / "driven" / name).is_file(), name
    a = anim_io.read_animation(ict_take / "anim")
    b = anim_io.read_animation(ict_take / "driven")
    assert b.fps == 25.0 and b.n_frames == a.n_frames
    np.testing.assert_allclose(b.times, a.times, atol=1e-6)
    assert np.abs(b.psi - a.psi).max() < 1e-3
    assert np.abs(b.theta - a.theta).max() < 1e-5
    beta = read_params(ict_take / "recon").beta
    err_m = np.linalg.norm(_vertices(ict_model, beta, a.theta, a.psi) - _vertices(ict_model, beta, b.theta, b.psi),
                           axis=2)
    assert err_m.max() < 1e-4  # 0.1 mm
    report = json.loads((ict_take / "driven" / anim_io.REPORT).read_text())
    assert report["driver"]["kind"] == "livelink" and report["driver"]["arkit_map"]["kind"] == "named"


def test_take_drives_with_the_light_asked_for(ict_take, tmp_path, capsys):
    """--light reaches a take's MP4 as it does a video's (it was ignored); the tracking options are refused."""
    import imageio.v3 as iio

    from headcast.io.recon import Lighting, write_lighting

    recon = tmp_path / "lit"
    recon.mkdir()
    for name in ("params.npz", "params.json"):
        (recon / name).write_bytes((ict_take / "recon" / name).read_bytes())
    sh = np.zeros((9, 3))
    sh[0] = (1.2, 0.3, 0.3)  # a red light: the fitted render is not the neutral one
    write_lighting(recon, Lighting(sh))
    stills = {}
    for light in ("fitted", "neutral"):
        code, err = _run(capsys, "animate", recon, ict_take / "take.csv", "--out", tmp_path / light, "--max-frames", 2,
                         "--light", light)
        assert code == 0, err
        stills[light] = iio.imread(tmp_path / light / anim_io.PREVIEW).astype(np.float64)
    red = {k: v[..., 0].mean() - v[..., 1].mean() for k, v in stills.items()}
    assert red["fitted"] > red["neutral"] + 5, red
    code, err = _run(capsys, "animate", recon, ict_take / "take.csv", "--out", tmp_path / "t", "--threshold", 0.1)
    assert code == 2 and _error_line(err).endswith("--threshold and --max-iters are for a video (they stop each "
                                                   "frame's tracking)")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("edit, says", [
    (lambda lines: [lines[0].replace(",MouthClose", "")] + [",".join(r.split(",")[:20] + r.split(",")[21:])
                                                          for r in lines[1:]], ":1: not a Live Link Face CSV"),
    (lambda lines: lines[:5] + [lines[5].replace("00:00:00:04", "00:00:0x:04")] + lines[6:], ":6: timecode"),
    (lambda lines: lines[:5] + [lines[3]] + lines[6:], ":6: timecode 00:00:00:02.000 is not after"),
    (lambda lines: lines[:7] + [_set(lines[7], 2, "1.7")] + lines[8:], ":8: EyeBlinkLeft 1.7 is outside [0, 1]"),
    (lambda lines: lines[:7] + [_set(lines[7], 54, "4.5")] + lines[8:], ":8: HeadYaw 4.5 is outside [-pi, pi]"),
    (lambda lines: lines[:9] + [_set(lines[9], 10, "abc")] + lines[10:], ":10: EyeLookDownRight 'abc' is not a number"),
    (lambda lines: lines[:9] + [lines[9] + ",0.5"] + lines[10:], ":10: 64 values; the header has 63 columns"),
])
def test_bad_csv_one_line_naming_the_line(ict_take, tmp_path, capsys, edit, says):
    lines = (ict_take / "take.csv").read_text().splitlines()[:12]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(edit(lines)) + "\n")
    code, err = _run(capsys, "animate", ict_take / "recon", bad, "--out", tmp_path / "out")
    assert code == 2
    line = _error_line(err)
    assert f"{bad}{says}" in line, line
    assert not (tmp_path / "out").exists()


def _set(line: str, col: int, value: str) -> str:
    cells = line.split(",")
    cells[col] = value
    return ",".join(cells)


# --------------------------------------------------------------------- FLAME as delivered
@pytest.fixture(scope="module")
def flame_recon(headcast_home, tmp_path_factory):
    """The FLAME-shaped fixture imported without UVs (real landmark file), a synthetic capture of it and
    its reconstruction (the fast landmarks-3d fit)."""
    from flame_fixture import write_flame_fixture

    assets = shared_path("models", "flame-assets")
    d = tmp_path_factory.mktemp("flame")
    pkl = write_flame_fixture(d / "generic_model.pkl", template_obj=assets / "head_template.obj")
    assert main(["model", "import-flame", str(pkl), "--landmarks", str(assets / "landmark_embedding.npy"),
                 "--name", FLAME, "--force"]) == 0
    assert main(["synth", "--model", FLAME, "--out", str(d / "synth"), "--size", "320x240"]) == 0
    assert main(["reconstruct", str(d / "synth" / "frame-000"), "--model", FLAME, "--out", str(d / "recon"),
                 "--method", "landmarks-3d"]) == 0
    return d


def test_flame_import_without_uv_then_every_non_texture_command(flame_recon, ict_take, capsys):
    d, assets = flame_recon, shared_path("models", "flame-assets")
    m = resolve_model(FLAME)
    assert not m.has_uv
    info = json.loads(_info(FLAME, capsys))
    assert info["texture_coordinates"] is None and "add-uv" in info["uv_from"]
    assert info["masks_from"].startswith("geometric")
    # animate from a video (a few frames), from a Live Link take, export an untextured GLB, encode, decode
    video = shared_path("samples", "video", "d0.mp4")
    code, err = _run(capsys, "animate", d / "recon", video, "--out", d / "anim-video", "--max-frames", "6")
    assert code == 0, err
    code, err = _run(capsys, "animate", d / "recon", ict_take / "take.csv", "--out", d / "anim-csv")
    assert code == 0, err
    rep = json.loads((d / "anim-csv" / anim_io.REPORT).read_text())["driver"]["arkit_map"]
    assert rep["kind"] == "linear" and len(rep["fit_rms_mm"]) == 50  # 52 less JawOpen (the jaw) and TongueOut
    code, err = _run(capsys, "export", d / "recon", "--anim", d / "anim-csv", "--out", d / "head.glb")
    assert code == 0, err
    from headcast.io.gltf import read_glb

    doc, _ = read_glb(d / "head.glb")
    assert "TEXCOORD_0" not in doc["meshes"][0]["primitives"][0]["attributes"] and "images" not in doc
    code, err = _run(capsys, "encode", d / "anim-csv", "--recon", d / "recon", "--out", d / "take.hcs")
    assert code == 0, err
    code, err = _run(capsys, "decode", d / "take.hcs", "--out", d / "decoded")
    assert code == 0, err
    # texture: one line saying how to add the UVs
    code, err = _run(capsys, "texture", d / "recon")
    assert code == 2 and f"headcast model add-uv {FLAME} head_template.obj" in _error_line(err)
    # a folder textured with the UV'd model cannot be exported textured with the UV-less one
    uv_model = d / "with_uv.npz"
    code, err = _run(capsys, "model", "add-uv", FLAME, assets / "head_template.obj", "--out", uv_model)
    assert code == 0, err
    code, err = _run(capsys, "texture", d / "recon", "--model", uv_model, "--size", "256")
    assert code == 0, err
    code, err = _run(capsys, "export", d / "recon", "--out", d / "textured.glb")
    assert code == 2 and "a textured export needs texture coordinates" in _error_line(err)
    assert "add-uv" in _error_line(err) and not (d / "textured.glb").exists()
    code, err = _run(capsys, "model", "add-uv", FLAME, assets / "head_template.obj")  # in place
    assert code == 0, err
    assert resolve_model(FLAME).has_uv
    code, err = _run(capsys, "export", d / "recon", "--out", d / "textured.glb")
    assert code == 0, err


def _info(name: str, capsys) -> str:
    assert main(["model", "info", name]) == 0
    return capsys.readouterr().out


def test_flame_masks_file_used_and_said(tmp_path, headcast_home, capsys):
    from flame_fixture import write_flame_fixture

    assets = shared_path("models", "flame-assets")
    pkl = write_flame_fixture(tmp_path / "generic_model.pkl", template_obj=assets / "head_template.obj")
    out = tmp_path / "with_masks.npz"
    code, err = _run(capsys, "model", "import-flame", pkl, "--landmarks", assets / "flame_static_embedding.pkl",
                     "--masks", assets / "FLAME_masks.pkl", "--out", out)
    assert code == 0, err
    info = json.loads(_info(str(out), capsys))
    assert info["masks_from"] == "FLAME_masks.pkl" and info["masks"]["lips"] > 0 and "boundary" in info["masks"]


def test_flame_npz_keys_shapes_and_drive(flame_recon, ict_take, capsys):
    d = flame_recon
    if not (d / "anim-csv").is_dir():
        assert main(["animate", str(d / "recon"), str(ict_take / "take.csv"), "--out", str(d / "anim-csv")]) == 0
    out = d / "flame_param.npz"
    code, err = _run(capsys, "export", d / "anim-csv", "--format", "flame-npz", "--out", out)
    assert code == 0, err
    z = np.load(out)
    T = 175
    shapes = {"shape": (300,), "expr": (T, 100), "rotation": (T, 3), "neck_pose": (T, 3), "jaw_pose": (T, 3),
              "eyes_pose": (T, 6), "translation": (T, 3), "static_offset": (1, 5023, 3), "focal_length": (2,),
              "principal_point": (2,), "image_size": (2,)}
    for k, s in shapes.items():
        assert z[k].shape == s, k
    a = anim_io.read_animation(d / "anim-csv")
    np.testing.assert_allclose(z["jaw_pose"][:, 0], a.theta[:, 6], atol=1e-6)
    code, err = _run(capsys, "animate", d / "recon", out, "--out", d / "anim-npz", "--no-video")
    assert code == 0, err
    b = anim_io.read_animation(d / "anim-npz")
    assert np.abs(b.theta - a.theta).max() < 1e-5 and np.abs(b.psi - a.psi).max() < 1e-5
    assert np.abs(b.placement - a.placement).max() < 1e-5
    # a video-tracked animation (eta in the video's pixels) becomes a perspective camera in front of the head
    code, err = _run(capsys, "export", d / "anim-video", "--format", "flame-npz", "--out", d / "video.npz")
    assert code == 0, err
    v = np.load(d / "video.npz")
    assert v["expr"].shape == (6, 100) and np.all(v["scale"] == 1)
    depth = -v["translation"][:, 2]  # the camera looks along the model's -z
    assert np.all((depth > 0.1) & (depth < 5)), depth
    # ICT is not a FLAME model: refused in one line
    code, err = _run(capsys, "export", ict_take / "anim", "--format", "flame-npz", "--out", d / "ict.npz")
    assert code == 2 and "not a FLAME model" in _error_line(err)
