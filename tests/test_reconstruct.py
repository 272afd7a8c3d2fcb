"""Reconstruction: the structured Jacobian, the three blocks on synthetic and real frames, the CLI and bad input."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import shared_path
from headcast.bench.reconstruct import synthetic_errors
from headcast.cli import main
from headcast.core.camera import Intrinsics
from headcast.core.params import HeadParams
from headcast.fit.priors import residual_sigma
from headcast.fit.reconstruct import fit_observation, make_fitter
from headcast.io.recon import read_params, write_params
from headcast.preprocess.preprocess import preprocess
from headcast.preprocess.rgbd import RGBDFrame
from headcast.render.images import save_depth_mm, save_png
from headcast.synth import default_intrinsics, random_subject, render_rgbd


@pytest.fixture(scope="module")
def fitter(ict_model):
    return make_fitter(ict_model)


@pytest.fixture(scope="module")
def synthetic(ict_model):
    """One synthetic subject without depth noise, preprocessed with the real detector."""
    subject = random_subject(ict_model, seed=1001)
    frame = render_rgbd(ict_model, subject, default_intrinsics(640, 480), profile="none", seed=1001)
    obs = preprocess(RGBDFrame(frame.color, frame.depth, frame.K), "mediapipe")
    return frame, obs


def _head_layer_camera(layer, fitter, ids):
    """x (P,) -> camera-frame vertices ``ids`` of the torch HeadLayer, the fit's packing undone by hand."""
    sl = fitter.pk.sl
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # core.camera.FLIP

    def f(x):
        zero = torch.zeros(3, dtype=x.dtype)
        theta = torch.cat([x[sl["root"]], zero, x[sl["jaw"]], zero, zero])[None]
        v = layer.vertices(x[sl["beta"]][None], x[sl["psi"]][None], theta, ids)[0]
        return torch.exp(x[sl["log_s"]]) * v * flip + x[sl["t"]]

    return f


@pytest.mark.parametrize("which", ["ict", "flame"])
def test_closed_form_vertices_and_jacobian_equal_the_head_layer(which, request):
    """The fit's NumPy closed form (model.rig.VertexSkin through fit.head.PackedHead) against torch's
    HeadLayer and its forward-mode derivative, on ICT and on FLAME (pose correctives on the jaw)."""
    from headcast.model.layer import HeadLayer

    model = request.getfixturevalue(f"{which}_model")
    fitter = make_fitter(model)
    rng = np.random.default_rng(0)
    x = np.zeros(fitter.pk.size)
    sl = fitter.pk.sl
    x[sl["beta"]] = rng.normal(size=model.n_shape)
    x[sl["psi"]] = rng.random(model.n_expr) * 0.3
    x[sl["root"]] = [0.1, 0.3, 0.05]
    x[sl["jaw"]] = [0.2, 0.01, 0.02]
    x[sl["log_s"]] = 0.03
    x[sl["t"]] = [0.01, 0.02, 0.5]
    ids = np.sort(rng.choice(model.n_vertices, 300, replace=False))
    V, J = fitter.vertices_jacobian(x, ids)
    f = _head_layer_camera(HeadLayer(model, dtype=torch.float64), fitter, torch.as_tensor(ids))
    xt = torch.as_tensor(x)
    with torch.no_grad():
        ref_v = f(xt).numpy()
    ref_j = torch.func.jacfwd(f)(xt).numpy()
    # the layer's Rodrigues adds 1e-8 under its square root: about 1e-8 rad at these angles
    tol = 3e-8 * (1 + np.abs(ref_v).max())
    assert np.abs(V - ref_v).max() < tol
    assert np.abs(fitter.vertices_cam(x, ids) - V).max() < 1e-12
    assert np.abs(J - ref_j).max() < 1e-6 * max(1.0, np.abs(ref_j).max())
    layer = HeadLayer(model, dtype=torch.float64)
    p = fitter.pk.unpack(x, model.name)
    assert np.abs(fitter.vertices_of(p) - p.vertices(layer)).max() < tol
    t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
    with torch.no_grad():  # yaw 17 degrees: the dynamic contour picks its row as the layer does
        lmk = layer.landmarks(t(p.beta), t(p.psi), t(p.theta))[0].numpy()
    from headcast.core.camera import to_camera

    assert np.abs(fitter.landmarks_cam(x) - to_camera(lmk, p.scale, p.translation)).max() < tol
    # points on triangles, and their Jacobian along a direction each (the point term's rows)
    tri = rng.choice(len(model.faces), 200)
    bary = rng.dirichlet(np.ones(3), 200)
    where = fitter.surface_map(model.faces[tri], bary)
    Q, JQ = fitter.surface_points(x, where, True)
    e = rng.normal(size=(200, 3))
    Q2, Je = fitter.surface_points_along(x, where, e, True)
    assert np.abs(Q - np.einsum("nk,nkc->nc", bary, fitter.vertices_cam(x)[model.faces[tri]])).max() < 1e-12
    assert np.abs(Q2 - Q).max() < 1e-15
    assert np.abs(Je - np.einsum("nc,ncp->np", e, JQ)).max() < 1e-12 * max(1.0, np.abs(Je).max())


def test_full_method_recovers_synthetic_face_and_beats_baselines(fitter, ict_model, synthetic):
    frame, obs = synthetic
    errs = {}
    for method in ("full", "landmarks-3d", "rgb-2d"):
        rec = fit_observation(obs, fitter, method)
        errs[method] = synthetic_errors(ict_model, rec.vertices, frame.vertices)
        if method == "full":
            blocks = [b["name"] for b in rec.report["blocks"]]
            assert blocks == ["block1", "block2", "block2_grown", "block3"]
            by = {b["name"]: b for b in rec.report["blocks"]}
            # block 3 (shape alone) cannot raise L3D on the point set it shares with the grown block 2
            assert by["block3"]["l3d_mm2"] <= by["block2_grown"]["l3d_mm2"] + 1e-9
            assert set(rec.report["paper_losses"]) >= {"loss1_landmarks_l2_mm", "loss2_l3d_mm2", "loss3_l3d_mm2"}
            assert rec.report["point_to_mesh_mm"]["median"] < 0.5
    surf = {m: e["surface"]["median"] for m, e in errs.items()}
    vert = {m: e["vertex"]["median"] for m, e in errs.items()}
    # the noiseless target (median face vertex error <= 0.5 mm) on this one subject
    assert surf["full"] < 0.2, surf
    assert vert["full"] < 0.5, vert
    assert surf["full"] < surf["landmarks-3d"] < surf["rgb-2d"], surf
    assert vert["full"] < vert["landmarks-3d"] < vert["rgb-2d"], vert


def test_prior_noise_estimate_separates_white_and_correlated_noise(fitter, synthetic):
    """The priors' sigma: near the truth for white noise along the rays (correlation ~1), larger
    than the per-point spread for smooth (correlated) noise of the same size, and reported."""
    from headcast.synth.appearance import smooth_field

    frame, obs = synthetic
    rec = fit_observation(obs, fitter, "full")
    pri = rec.report["priors"]
    assert pri["source"] == "measured" and pri["sigma_mm"] >= fitter.cfg.sigma_floor_mm
    assert pri["w_psi"] == pytest.approx(fitter.cfg.psi_prior_ratio * pri["w_beta"])
    x = fitter.pk.pack(rec.params)
    pts = obs.points[:8000]
    rays = pts / np.linalg.norm(pts, axis=1, keepdims=True)  # depth noise acts along the camera rays
    rng = np.random.default_rng(0)
    white, c_white = residual_sigma(fitter, x, pts + rays * rng.normal(0, 0.001, (len(pts), 1)))
    bumps = 0.001 * smooth_field(pts, rng, (0.01, 0.03), 8)[:, None]
    smooth, c_smooth = residual_sigma(fitter, x, pts + rays * bumps)
    assert c_white < 2 and 0.6e-3 < white < 1.2e-3, (white, c_white)  # the normal part of 1 mm on rays
    assert c_smooth > 4 and smooth > 1.8e-3, (smooth, c_smooth)


class _Messages(logging.Handler):
    """Appends each log message to ``events``."""

    def __init__(self, events: list):
        super().__init__()
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record.getMessage())


@pytest.mark.parametrize("method", ["full", "rgb-2d"])
def test_reported_iterations_are_the_steps_run(method, fitter, synthetic, monkeypatch, caplog):
    """fit_report.json's ``iterations`` are the Levenberg-Marquardt steps each block ran, counted here by
    wrapping the solver's step (blocks told apart by their log headings), not the configured caps; on this
    clean subject a block converges before its cap."""
    from headcast.fit import runner

    events: list = []
    step = runner.lm_step_jac

    def counted(*args, **kwargs):
        events.append(None)
        return step(*args, **kwargs)

    monkeypatch.setattr(runner, "lm_step_jac", counted)
    caplog.set_level(logging.INFO, logger="headcast.fit")
    handler = _Messages(events)
    logging.getLogger("headcast.fit").addHandler(handler)
    try:
        rec = fit_observation(synthetic[1], fitter, method)
    finally:
        logging.getLogger("headcast.fit").removeHandler(handler)
    counts: list[int] = []
    for e in events:
        if e is None:
            counts[-1] += 1
        elif not e.startswith(" "):  # a block's heading (its per-step lines are indented)
            counts.append(0)
    c = fitter.cfg
    caps = {"block1": c.iters_block1, "block2": c.iters_block2, "block2_grown": c.iters_grow, "block3": c.iters_block3,
            "rgb2d": c.iters_2d_pose + c.iters_2d}
    blocks = rec.report["blocks"]
    assert [b["iterations"] for b in blocks] == counts, (blocks, counts)
    assert all(1 <= b["iterations"] <= caps[b["name"]] for b in blocks)
    assert any(b["iterations"] < caps[b["name"]] for b in blocks), blocks


def test_params_round_trip_and_paper_eta(tmp_path, fitter):
    p = HeadParams(np.arange(100) * 0.01, np.zeros(53), np.r_[0.1, 0.2, 0.0, np.zeros(12)], 1.02,
                   np.array([0.01, -0.02, 0.4]), "ict")
    K = Intrinsics(500, 500, 320, 240, 640, 480)
    write_params(tmp_path, p, K)
    q = read_params(tmp_path)
    np.testing.assert_allclose(q.beta, p.beta)
    assert q.model == "ict" and q.scale == pytest.approx(1.02)
    eta = json.loads((tmp_path / "params.json").read_text())["eta"]
    # weak perspective at the head's depth: a point at the translation projects to (tx, ty)
    assert eta[0] == pytest.approx(500 * 1.02 / 0.4)
    assert eta[1] == pytest.approx(500 * 0.01 / 0.4 + 320)


def test_cli_reconstructs_real_truedepth_frame(tmp_path, headcast_home):
    prefix = shared_path("samples", "rgbd", "truedepth-mannequin") / "frame-050"
    out = tmp_path / "r050"
    run = subprocess.run([sys.executable, "-m", "headcast.cli", "reconstruct", str(prefix), "--out", str(out),
                          "--quiet"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "turned the capture 90 degrees" in run.stderr
    for name in ("params.npz", "params.json", "mesh.obj", "mesh.ply", "fit_report.json", "landmarks.png",
                 "overlay.png", "depth_residual.png", "color.png", "intrinsics.json"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "fit_report.json").read_text())
    assert rep["point_to_mesh_mm"]["median"] < 1.5
    assert rep["points"]["landmarks_lifted"] >= 60
    assert rep["input"]["rotation_deg_cw"] == 90
    assert set(rep["paper_losses"]) >= {"loss1_landmarks_l2_mm", "loss2_l3d_mm2", "loss3_l3d_mm2"}
    obj_v = sum(1 for ln in (out / "mesh.obj").read_text().splitlines() if ln.startswith("v "))
    assert obj_v == 15156


def _write_frame(folder, color, depth_m, K: Intrinsics, name="x"):
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / f"{name}_color.png", color)
    save_depth_mm(folder / f"{name}_depth_mm.png", depth_m)
    K.to_json(folder / f"{name}_intrinsics.json")
    return folder / name


@pytest.mark.parametrize("case", ["no-face", "size-mismatch", "absurd-intrinsics", "depth-units", "no-depth"])
def test_bad_input_gives_one_line_and_no_output(case, tmp_path, capsys, headcast_home, synthetic):
    frame, _ = synthetic
    K = frame.K
    color, depth = frame.color, frame.depth
    if case == "no-face":
        color = np.tile(np.linspace(0, 255, K.width, dtype=np.uint8)[None, :, None], (K.height, 1, 3))
    elif case == "size-mismatch":
        depth = depth[:, : K.width - 10]
    elif case == "absurd-intrinsics":
        K = Intrinsics(0.5, 0.5, K.cx, K.cy, K.width, K.height)
    elif case == "depth-units":
        depth = depth * 1000  # metres written as if millimetres were metres
    elif case == "no-depth":
        depth = np.zeros_like(depth)
    if case == "absurd-intrinsics":
        prefix = _write_frame(tmp_path / "in", color, depth, frame.K)
        (tmp_path / "in" / "x_intrinsics.json").write_text(json.dumps(
            {"fx": 0.5, "fy": 0.5, "cx": K.cx, "cy": K.cy, "width": K.width, "height": K.height}))
    else:
        prefix = _write_frame(tmp_path / "in", color, depth, K)
    out = tmp_path / "out"
    code = main(["reconstruct", str(prefix), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    last = err[-1]
    assert last.startswith("headcast: error: ") and "Traceback" not in "\n".join(err)
    expect = {"no-face": "no face found", "size-mismatch": "aligned", "absurd-intrinsics": "absurd",
              "depth-units": "depth", "no-depth": "depth"}[case]
    assert expect in last.lower(), last
    assert not out.exists()
