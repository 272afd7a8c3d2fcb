"""The folder formats (headcast.io.recon, .anim, .gltf): round trips, the one precedence, and every damaged
file refused with one HeadcastError line that names it, by the readers and by the stages that use them."""

import json
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from headcast.core.camera import Intrinsics
from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, HeadParams
from headcast.io import anim as A
from headcast.io import recon as R
from headcast.io.gltf import GlbBuffer, read_accessor, read_glb, write_glb

S, E = 6, 4  # a small model's identity and expression counts
K = Intrinsics(fx=100, fy=100, cx=31.5, cy=23.5, width=64, height=48)


def fake_model(name: str = "ict", n_shape: int = S, n_expr: int = E):
    """What the readers check a folder against: a name, component counts, vertex count, triangles."""
    return SimpleNamespace(name=name, n_shape=n_shape, n_expr=n_expr, n_vertices=4, faces=np.array([[0, 1, 2], [0, 2, 3]]))


def params(**change) -> HeadParams:
    p = dict(beta=np.linspace(-1, 1, S), psi=np.full(E, 0.1), theta=np.zeros(N_POSE), scale=1.02,
             translation=np.array([0.01, -0.02, 0.45]), model="ict")
    p.update(change)
    return HeadParams(**p)


def recon_folder(d: Path, p: HeadParams | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    R.write_params(d, p or params(), K)
    K.to_json(d / R.INTRINSICS)
    iio.imwrite(d / R.COLOR, np.full((48, 64, 3), 128, np.uint8), extension=".png")
    return d


def animation(n: int = 5, kind: str = "eta") -> A.Animation:
    rng = np.random.default_rng(n)
    pl = np.c_[np.full(n, 1000.0), rng.normal(100, 5, (n, 2))] if kind == "eta" else \
        np.c_[np.full(n, 1.0), rng.normal(0, 0.01, (n, 3))]
    return A.Animation(np.arange(n) / 25.0, rng.normal(0, 0.1, (n, N_POSE)), rng.uniform(0, 1, (n, E)), pl,
                       np.ones(n, bool), 25.0, np.zeros(S), "ict", {"loss": rng.uniform(0, 0.05, n)})


def refused(call, path: Path, match: str | None = None) -> str:
    """``call()`` raises one HeadcastError line that names ``path``; returns the message."""
    with pytest.raises(HeadcastError) as e:
        call()
    msg = str(e.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    if match is not None:
        assert match in msg, msg
    return msg


def savez(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- reconstruction folder
def test_params_round_trip(tmp_path):
    p = params(theta=np.r_[0.1, 0.2, 0.0, np.zeros(N_POSE - 3)])
    R.write_params(tmp_path, p, K)
    q = R.read_params(tmp_path)
    for k in ("beta", "psi", "theta", "translation"):
        np.testing.assert_array_equal(getattr(q, k), getattr(p, k))
    assert q.scale == p.scale and q.model == "ict"
    js = json.loads((tmp_path / R.PARAMS_JSON).read_text())
    assert js["eta"] == pytest.approx(p.paper_eta(K).tolist()) and js["units"]["length"] == "m"
    R.check_model(tmp_path, q, fake_model())


def _bad_params(kind: str, path: Path) -> None:
    good = dict(beta=np.zeros(S), psi=np.zeros(E), theta=np.zeros(N_POSE), scale=np.float64(1.0),
                translation=np.zeros(3), model=np.str_("ict"))
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no beta":
        savez(path, **{k: v for k, v in good.items() if k != "beta"})
    elif kind == "nan identity":
        savez(path, **dict(good, beta=np.full(S, np.nan)))
    elif kind == "inf translation":
        savez(path, **dict(good, translation=np.array([0, 0, np.inf])))
    elif kind == "theta 14":
        savez(path, **dict(good, theta=np.zeros(N_POSE - 1)))
    elif kind == "zero scale":
        savez(path, **dict(good, scale=np.float64(0.0)))
    elif kind == "pickled":
        savez(path, **dict(good, beta=np.array([{"evil": 1}], dtype=object)))
    elif kind == "single array":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    else:
        raise AssertionError(kind)


BAD_PARAMS = ["corrupt", "empty", "no beta", "nan identity", "inf translation", "theta 14", "zero scale", "pickled",
              "single array"]


@pytest.mark.parametrize("kind", BAD_PARAMS)
def test_bad_params_are_refused_naming_the_file(tmp_path, kind):
    d = recon_folder(tmp_path / "r")
    _bad_params(kind, d / R.PARAMS)
    refused(lambda: R.read_params(d), d / R.PARAMS)


@pytest.mark.parametrize("kind", ["corrupt", "no beta", "nan identity", "theta 14"])
def test_every_stage_refuses_bad_params(tmp_path, kind):
    """texture, animate and export read the folder through the same reader."""
    from headcast.animate.pipeline import load_subject
    from headcast.export.gltf import export_glb
    from headcast.texture.pipeline import texture_reconstruction

    d = recon_folder(tmp_path / "r")
    _bad_params(kind, d / R.PARAMS)
    out = tmp_path / "head.glb"
    refused(lambda: texture_reconstruction(d, size=64), d / R.PARAMS)
    refused(lambda: load_subject(d), d / R.PARAMS)
    refused(lambda: export_glb(d, out=out, model=fake_model()), d / R.PARAMS)
    assert not out.exists() and not list(tmp_path.glob(".head.glb*"))


def test_params_must_fit_the_model(tmp_path):
    d = recon_folder(tmp_path)
    p = R.read_params(d)
    refused(lambda: R.check_model(d, p, fake_model(n_expr=E + 1)), d / R.PARAMS, "do not fit model")
    msg = refused(lambda: R.check_model(d, p, fake_model("flame2020")), d)
    assert "reconstructed with model 'ict', not 'flame2020'" in msg


def test_missing_folder_and_files(tmp_path):
    refused(lambda: R.check_folder(tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    msg = refused(lambda: R.check_folder(tmp_path, (R.PARAMS, R.COLOR, R.INTRINSICS)), tmp_path)
    assert "params.npz, color.png, intrinsics.json missing" in msg
    refused(lambda: R.read_params(tmp_path), tmp_path, "has no params.npz")


def test_photo_checks(tmp_path):
    d = recon_folder(tmp_path)
    ph = R.read_photo(d)
    assert ph.color.shape == (48, 64, 3) and ph.K == K and ph.depth is None
    iio.imwrite(d / R.DEPTH, np.full((48, 64), 450, np.uint16), extension=".png")
    np.testing.assert_allclose(R.read_photo(d).depth, 0.45)
    iio.imwrite(d / R.DEPTH, np.full((48, 64), 45, np.uint8), extension=".png")  # 8-bit: not millimetres
    refused(lambda: R.read_photo(d), d / R.DEPTH, "16-bit")
    (d / R.DEPTH).unlink()
    iio.imwrite(d / R.COLOR, np.zeros((40, 64, 3), np.uint8), extension=".png")
    refused(lambda: R.read_photo(d), d / R.COLOR, "is 64x40 but intrinsics.json is for 64x48")
    (d / R.COLOR).write_bytes(b"GIF89a not a png")
    refused(lambda: R.read_photo(d), d / R.COLOR, "not a PNG")


# ---------------------------------------------------------------- lighting
def test_lighting_round_trip(tmp_path):
    sh = np.arange(27.0).reshape(9, 3) / 27
    R.write_lighting(tmp_path, R.Lighting(sh, np.array([0.5, -0.5]), "am.npz", "set by the albedo model"))
    light = R.read_lighting(tmp_path)
    np.testing.assert_array_equal(light.sh, sh)
    np.testing.assert_array_equal(light.rho, [0.5, -0.5])
    assert light.albedo_model == "am.npz" and R.read_lighting(tmp_path / "nowhere") is None


@pytest.mark.parametrize("text", ["{not json", '"a string"', '{"sh": [1, 2, 3]}', '{"sh": [[1, 2, 3]]}',
                                  '{"sh": ' + json.dumps([[0.1, 0.2, float("nan")]] * 9) + "}",
                                  '{"sh": ' + json.dumps([[1, 1, 1]] * 9) + ', "rho": [1, "x"]}',
                                  '{"sh": ' + '[' * 5000 + ']' * 5000 + '}'])
def test_bad_lighting_is_refused(tmp_path, text):
    from headcast.stream.files import read_appearance

    (tmp_path / R.LIGHTING).write_text(text)
    refused(lambda: R.read_lighting(tmp_path), tmp_path / R.LIGHTING)
    refused(lambda: read_appearance(tmp_path), tmp_path / R.LIGHTING)  # `headcast encode --recon`


# ---------------------------------------------------------------- texture
def test_texture_round_trip_and_checks(tmp_path):
    m = fake_model()
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    uv = v[:, :2] * 0.5
    assert R.read_texture(tmp_path, m.faces) is None
    R.write_texture(tmp_path, np.full((8, 8, 3), 0.5), v, m.faces, uv, m.faces)
    tex = R.read_texture(tmp_path, m.faces)
    np.testing.assert_allclose(tex.uv, uv)
    assert tex.image().shape == (8, 8, 3) and tex.image()[0, 0, 0] == 128
    assert "map_Kd albedo.png" in (tmp_path / R.TEXTURED_MTL).read_text()
    refused(lambda: R.read_texture(tmp_path, m.faces[::-1]), tmp_path / R.TEXTURED_OBJ, "does not match")
    (tmp_path / R.ALBEDO).write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a PNG")
    refused(lambda: R.read_texture(tmp_path, m.faces), tmp_path / R.ALBEDO, "not a PNG")
    (tmp_path / R.ALBEDO).unlink()
    refused(lambda: R.read_texture(tmp_path, m.faces), tmp_path, "without albedo.png")


def test_export_refuses_an_albedo_that_is_not_a_png(tmp_path):
    from headcast.export.gltf import export_glb

    d = recon_folder(tmp_path / "r")
    m = fake_model()
    R.write_texture(d, np.full((8, 8, 3), 0.5), np.zeros((4, 3)), m.faces, np.zeros((4, 2)), m.faces)
    (d / R.ALBEDO).write_bytes(b"not a png at all")
    refused(lambda: export_glb(d, out=tmp_path / "x.glb", model=m), d / R.ALBEDO, "not a PNG")
    assert not (tmp_path / "x.glb").exists()


# ---------------------------------------------------------------- animation folder
@pytest.mark.parametrize("kind", ["eta", "similarity"])
def test_animation_round_trip(tmp_path, kind):
    a = animation(6, kind)
    a.extras["iterations"] = np.arange(6)
    a.face_found[2] = False
    a.extras["loss"][2] = np.nan
    A.write_animation(tmp_path, a, ("loss", "iterations"), {"frames": 6})
    b = A.read_animation(tmp_path)
    assert b.placement_kind == kind and b.fps == 25.0 and b.model == "ict" and b.n_frames == 6
    for k in ("times", "theta", "psi", "placement", "face_found", "beta"):
        np.testing.assert_array_equal(getattr(b, k), getattr(a, k))
    np.testing.assert_array_equal(b.extras["iterations"], np.arange(6))
    rows = [json.loads(ln) for ln in (tmp_path / A.FRAMES).read_text().splitlines()]
    assert rows[2]["loss"] is None and rows[2]["face_found"] is False and rows[3]["iterations"] == 3
    assert (("eta" in rows[0]) == (kind == "eta")) and (("scale" in rows[0]) == (kind == "similarity"))
    assert json.loads((tmp_path / A.REPORT).read_text()) == {"frames": 6}


def test_one_placement_precedence(tmp_path):
    """scale + translation (metres) win over eta (pixels), as in the reconstruction's params.npz."""
    n = 3
    savez(tmp_path / A.PARAMS, theta=np.zeros((n, N_POSE)), psi=np.zeros((n, E)), fps=30.0,
          eta=np.tile([1000.0, 10, 20], (n, 1)), scale=np.full(n, 2.0), translation=np.tile([0.0, 0, 0.5], (n, 1)))
    a = A.read_animation(tmp_path)
    assert a.placement_kind == A.SIMILARITY
    np.testing.assert_array_equal(a.placement[0], [2.0, 0, 0, 0.5])
    np.testing.assert_allclose(a.times, np.arange(n) / 30)
    savez(tmp_path / A.PARAMS, theta=np.zeros((n, N_POSE)), psi=np.zeros((n, E)), fps=30.0,
          placement=np.tile([1.0, 0, 0, 0.4], (n, 1)), eta=np.tile([1000.0, 10, 20], (n, 1)))
    assert A.read_animation(tmp_path).placement_kind == A.SIMILARITY  # `decode` of older versions
    savez(tmp_path / A.PARAMS, theta=np.zeros((n, N_POSE)), psi=np.zeros((n, E)), fps=30.0)
    np.testing.assert_array_equal(A.read_animation(tmp_path).placement, np.tile([1.0, 0, 0, 0], (n, 1)))


def test_only_params_npz_is_read(tmp_path):
    """frames.jsonl and report.json are for people: a FIFO (which would block) or a folder in their place
    changes nothing, so no such file can be an input bomb."""
    import os

    from headcast.stream.files import animation_frames

    A.write_animation(tmp_path, animation(4), report={"frames": 4})
    for name in (A.FRAMES, A.REPORT):
        (tmp_path / name).unlink()
    os.mkfifo(tmp_path / A.FRAMES)
    (tmp_path / A.REPORT).mkdir()
    assert A.read_animation(tmp_path).n_frames == 4
    assert len(animation_frames(tmp_path)[0]) == 4


def test_fps_is_required_unless_given(tmp_path):
    savez(tmp_path / A.PARAMS, theta=np.zeros((4, N_POSE)), psi=np.zeros((4, E)), eta=np.tile([1000.0, 1, 2], (4, 1)),
          time=np.arange(4) / 10)
    refused(lambda: A.read_animation(tmp_path), tmp_path / A.PARAMS, "has no 'fps'")
    a = A.read_animation(tmp_path, fps=10.0)
    assert a.fps == 10.0
    np.testing.assert_allclose(a.times, np.arange(4) / 10)


def test_frames_without_finite_parameters_hold_the_last_good_one(tmp_path):
    a = animation(5)
    a.theta[0] = np.nan  # before the first good frame: takes the first good one
    a.psi[3] = np.inf
    A.write_animation(tmp_path, a)
    b = A.read_animation(tmp_path)
    assert np.isfinite(b.theta).all() and np.isfinite(b.psi).all()
    np.testing.assert_array_equal(b.theta[0], a.theta[1])
    np.testing.assert_array_equal(b.psi[3], a.psi[2])
    assert b.face_found.tolist() == [False, True, True, False, True]


def _bad_animation(kind: str, path: Path) -> None:
    n = 4
    good = dict(time=np.arange(n) / 25, theta=np.zeros((n, N_POSE)), psi=np.zeros((n, E)),
                eta=np.tile([1000.0, 1, 2], (n, 1)), beta=np.zeros(S), model=np.str_("ict"), fps=25.0)
    bad = {
        "zero frames": dict(good, time=np.zeros(0), theta=np.zeros((0, N_POSE)), psi=np.zeros((0, E)),
                            eta=np.zeros((0, 3))),
        "theta 14": dict(good, theta=np.zeros((n, N_POSE - 1))),
        "psi frames": dict(good, psi=np.zeros((n - 1, E))),
        "all nan": dict(good, theta=np.full((n, N_POSE), np.nan)),
        "time backwards": dict(good, time=np.array([0.0, 0.1, 0.05, 0.2])),
        "eta (N, 4)": dict(good, eta=np.zeros((n, 4))),
        "nan beta": dict(good, beta=np.full(S, np.nan)),
        "fps zero": dict(good, fps=0.0),
        "no psi": {k: v for k, v in good.items() if k != "psi"},
    }
    if kind == "corrupt":
        path.write_bytes(b"\x00" * 100)
    else:
        savez(path, **bad[kind])


BAD_ANIMATIONS = ["corrupt", "zero frames", "theta 14", "psi frames", "all nan", "time backwards", "eta (N, 4)",
                  "nan beta", "fps zero", "no psi"]


@pytest.mark.parametrize("kind", BAD_ANIMATIONS)
def test_bad_animations_are_refused_by_export_and_encode(tmp_path, kind):
    from headcast.export.gltf import export_glb
    from headcast.stream.files import animation_frames

    d = tmp_path / "anim"
    d.mkdir()
    _bad_animation(kind, d / A.PARAMS)
    refused(lambda: A.read_animation(d), d / A.PARAMS)
    refused(lambda: animation_frames(d), d / A.PARAMS)  # `headcast encode`
    r = recon_folder(tmp_path / "r")
    refused(lambda: export_glb(r, d, out=tmp_path / "x.glb", model=fake_model()), d / A.PARAMS)
    assert not (tmp_path / "x.glb").exists()


def test_expression_count_and_glb_frame_count(tmp_path):
    from headcast.export.motion import motion_from

    A.write_animation(tmp_path, animation(5))
    refused(lambda: A.read_animation(tmp_path, n_expr=E + 2), tmp_path / A.PARAMS, f"psi has {E} expression values")
    A.write_animation(tmp_path, animation(1))
    refused(lambda: motion_from(A.read_animation(tmp_path)), tmp_path / A.PARAMS, "at least 2 frames")


def test_encode_reads_the_animation_folder(tmp_path):
    from headcast.stream.files import animation_frames
    from headcast.stream.wire import ETA_PAPER, ETA_SIM

    a = animation(5, "similarity")
    a.theta[2] = np.nan
    A.write_animation(tmp_path, a)
    frames, meta = animation_frames(tmp_path)
    assert meta["eta_kind"] == ETA_SIM and meta["fps"] == 25.0 and meta["model"] == "ict"
    assert not frames[2].face and np.isfinite(frames[2].theta).all()  # held, never NaN on the wire
    A.write_animation(tmp_path, A.Animation(a.times, a.theta, a.psi, np.tile([900.0, 1, 2], (5, 1)), a.face_found,
                                            25.0, None, "ict"))
    refused(lambda: animation_frames(tmp_path), tmp_path / A.PARAMS, "no 'beta'")
    a.beta = np.zeros(S)
    A.write_animation(tmp_path, A.Animation(a.times, a.theta, a.psi, np.tile([900.0, 1, 2], (5, 1)), a.face_found,
                                            25.0, a.beta, "ict"))
    assert animation_frames(tmp_path)[1]["eta_kind"] == ETA_PAPER


# ---------------------------------------------------------------- GLB container
def test_glb_container_round_trip(tmp_path):
    b = GlbBuffer()
    pos = np.arange(12, dtype=np.float32).reshape(4, 3)
    i = b.accessor(pos, "VEC3", bounds=True)
    j = b.accessor(np.arange(3, dtype=np.uint16), "SCALAR")
    doc = {"asset": {"version": "2.0"}, "accessors": b.accessors, "bufferViews": b.views}
    data = write_glb(tmp_path / "x.glb", doc, b.blob())
    assert (tmp_path / "x.glb").read_bytes() == data and len(data) % 4 == 0
    got, binary = read_glb(tmp_path / "x.glb")
    assert got["buffers"] == [{"byteLength": len(b.blob())}] and got["accessors"][i]["max"] == [9.0, 10.0, 11.0]
    np.testing.assert_array_equal(read_accessor(got, binary, i), pos)
    np.testing.assert_array_equal(read_accessor(got, binary, j), [0, 1, 2])
    with pytest.raises(HeadcastError, match="not a glTF 2.0"):
        read_glb(data[:-4])
    refused(lambda: write_glb(tmp_path / "y.glb", {"bad": float("nan")}, b""), tmp_path / "y.glb", "non-finite")
    (tmp_path / "dir.glb").mkdir()
    refused(lambda: write_glb(tmp_path / "dir.glb", doc, b.blob()), tmp_path / "dir.glb", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.glb", "x.glb"]  # no staging left


# ---------------------------------------------------------------- animate: the config owns its threshold
def test_track_config_threshold_is_used(ict_model, headcast_home, tmp_path):
    """A caller's TrackConfig(threshold=0.02) reaches the tracker, the report and params.npz (it used to be
    overwritten by animate()'s own threshold argument)."""
    from conftest import shared_path
    from headcast.animate.fit import TrackConfig
    from headcast.animate.pipeline import _config, animate

    assert _config(TrackConfig(threshold=0.02), None, None).threshold == 0.02
    assert _config(TrackConfig(threshold=0.02), 0.03, None).threshold == 0.03  # an explicit value still wins
    assert _config(None, None, None) == TrackConfig()
    video = shared_path("samples", "video", "d0.mp4")
    d = tmp_path / "recon"
    d.mkdir()
    R.write_params(d, HeadParams(np.zeros(ict_model.n_shape), np.zeros(ict_model.n_expr), np.zeros(N_POSE), 1.0,
                                 np.array([0.0, 0.0, 0.5]), ict_model.name))
    rep = animate(d, video, tmp_path / "out", config=TrackConfig(threshold=0.02, identity_frames=4), max_frames=6,
                  write_video=False)
    assert rep["threshold"] == 0.02 and rep["config"]["threshold"] == 0.02
    a = A.read_animation(tmp_path / "out")
    assert float(a.extras["threshold"]) == 0.02 and a.n_frames == 6


MANIFEST_READS = """
import sys
from pathlib import Path

import numpy as np

from headcast.animate.subject import load_subject
from headcast.core.params import N_POSE, HeadParams
from headcast.export.gltf import export_glb
from headcast.io import recon
from headcast.io.outputs import MANIFEST, staged_dir
from headcast.model.registry import resolve_model

root = Path(sys.argv[1])
m = resolve_model("ict")
with staged_dir(root / "recon", recon.KIND) as t:
    recon.write_params(t, HeadParams(np.zeros(m.n_shape), np.zeros(m.n_expr), np.zeros(N_POSE), 1.0,
                                     np.array([0.0, 0.0, 0.5]), m.name))
opened = []
sys.addaudithook(lambda event, args: event == "open" and str(args[0]).endswith(MANIFEST) and opened.append(1))
load_subject(root / "recon", m, texture=False)
export_glb(root / "recon", None, root / "head.glb", model=m)
print(len(opened))
"""


def test_a_reconstruction_folders_manifest_is_read_once_per_stage(headcast_home, tmp_path):
    """animate's subject and export read the folder's manifest once each (recon.read_checked: the folder's
    check and its parameters share the read), counted by Python's audit hook on every open."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", MANIFEST_READS, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2"], run.stdout  # one for load_subject, one for export_glb
    assert (tmp_path / "head.glb").is_file()
