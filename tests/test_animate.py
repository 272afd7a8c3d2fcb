"""Animation: the closed-form landmark rig, tracking the built-in motion back, a real clip, held
frames without a face, bad input. Real MediaPipe, real video files."""

import json

import imageio.v2 as iio2
import numpy as np
import pytest
import torch

from conftest import shared_path
from headcast.animate.builtin import builtin_motion, builtin_motion_video
from headcast.animate.fit import FrameFitter, Observation, TrackConfig
from headcast.animate.pipeline import animate
from headcast.animate.track import select_calibration
from headcast.core.errors import HeadcastError
from headcast.core.params import N_POSE, HeadParams, pose_slice
from headcast.io.recon import read_params, write_params
from headcast.model.layer import HeadLayer
from headcast.model.rig import PointRig, pupil_vertices, rotvec_to_matrix, yaw_degrees

FPS = 15.0
BLANK = (95, 5)  # frames 95..99 of the built-in clip are black (no face)


@pytest.fixture(scope="module")
def subject_dir(ict_model, headcast_home, tmp_path_factory):
    """A reconstruction folder: a seeded identity of the default model (params.npz is all animate needs)."""
    d = tmp_path_factory.mktemp("recon")
    beta = np.clip(np.random.default_rng(5).normal(0, 1, ict_model.n_shape), -2, 2)
    write_params(d, HeadParams(beta, np.zeros(ict_model.n_expr), np.zeros(N_POSE), 1.0, np.array([0.0, 0.0, 0.5]), "ict"))
    return d


@pytest.fixture(scope="module")
def builtin_run(ict_model, subject_dir, tmp_path_factory):
    """The built-in motion (15 fps, 320 px, black frames inserted) rendered with the subject's shape and
    animated back."""
    d = tmp_path_factory.mktemp("builtin")
    beta = read_params(subject_dir).beta
    truth = builtin_motion_video(d / "motion.mp4", ict_model, beta, fps=FPS, size=320, insert_blank=BLANK)
    report = animate(subject_dir, d / "motion.mp4", d / "out", truth=truth, write_video=False)
    return d / "out", truth, report


def test_rig_points_and_jacobian_match_the_head_layer(ict_model):
    rng = np.random.default_rng(0)
    rig = PointRig(ict_model, rng.normal(size=ict_model.n_shape), id_cols=np.arange(5))
    z = np.r_[rng.normal(size=5) * 0.5, rng.uniform(0, 0.5, ict_model.n_expr)]
    beta, psi = rig.full(z)
    theta = np.zeros(N_POSE)
    for joint, rotvec in (("root", [0.1, 0.35, -0.05]), ("jaw", [0.2, 0, 0]), ("left_eye", [0.1, 0.2, 0]),
                          ("right_eye", [-0.1, 0.15, 0])):
        theta[pose_slice(joint)] = rotvec
    R0 = rotvec_to_matrix(theta[pose_slice("root")])
    Rg = np.stack([rotvec_to_matrix(theta[pose_slice(j)]) for j in ("jaw", "left_eye", "right_eye")])
    rows = rig.pts.rows_for(yaw_degrees(R0))
    x, d_root, d_g, d_z = rig.points(rows, R0, Rg, z)
    layer = HeadLayer(ict_model, dtype=torch.float64)
    t = lambda a: torch.as_tensor(a)[None]  # noqa: E731
    with torch.no_grad():
        ref = layer.landmarks(t(beta), t(psi), t(theta))[0].numpy()  # yaw 20 deg: the dynamic contour
        verts = layer.vertices(t(beta), t(psi), t(theta))[0].numpy()
    assert np.abs(x[:68] - ref).max() < 1e-9
    assert np.abs(x[68:] - verts[list(pupil_vertices(ict_model))]).max() < 1e-9
    eps = 1e-6
    for k in range(3):
        dk = np.zeros(3)
        dk[k] = eps
        num = (rig.points(rows, rotvec_to_matrix(dk) @ R0, Rg, z, False) - x) / eps
        assert np.abs(num - d_root[:, :, k]).max() < 1e-5
        Rg2 = Rg.copy()
        Rg2[0] = rotvec_to_matrix(dk) @ Rg[0]
        assert np.abs((rig.points(rows, R0, Rg2, z, False) - x) / eps - d_g[0][:, :, k]).max() < 1e-5
    for j in (0, 4, 20, 50):
        z2 = z.copy()
        z2[j] += eps
        assert np.abs((rig.points(rows, R0, Rg, z2, False) - x) / eps - d_z[:, :, j]).max() < 1e-6


def test_the_joints_basis_is_made_once_per_model_and_follows_its_arrays(ict_model):
    """Every rig of a model shares one joint basis; a model whose blendshapes were replaced gets a new one."""
    import copy

    from headcast.model.rig import joint_basis

    jb = joint_basis(ict_model)
    assert joint_basis(ict_model) is jb
    other = copy.copy(ict_model)
    assert joint_basis(other) is not jb and np.array_equal(joint_basis(other).JZ_shape, jb.JZ_shape)
    other.shapedirs = ict_model.shapedirs * 2  # exact in floating point: the basis doubles exactly
    assert np.array_equal(joint_basis(other).JZ_shape, 2 * jb.JZ_shape)
    assert np.array_equal(PointRig(other, None, np.arange(3)).JZ[..., :3], 2 * jb.JZ_shape[..., :3])


def test_frame_fit_recovers_a_projected_pose_and_expression(ict_model):
    """Noise-free landmarks of a posed, expressive head (orthographic projection): the fit finds them."""
    names = ict_model.meta["expression_names"]
    rig = PointRig(ict_model, None, (), [i for i, n in enumerate(names) if n != "jawOpen"], dynamic=False)
    ff = FrameFitter(rig, TrackConfig(), (0, 1))
    psi = np.zeros(ict_model.n_expr)
    psi[[names.index("eyeBlink_L"), names.index("mouthSmile_R")]] = [0.8, 0.6]
    R0, jaw = rotvec_to_matrix([0.1, -0.25, 0.05]), 0.2
    Rg = np.stack([rotvec_to_matrix([jaw, 0, 0]), np.eye(3), np.eye(3)])
    z = rig.coefficients(None, psi)
    x = rig.points(rig.pts.rows_for(0.0), R0, Rg, z, jacobian=False)
    uv = 2000.0 * x[:, :2] * [1, -1] + [256.0, 256.0]
    obs = Observation(uv[:68], uv[68:])
    res = ff.fit(obs, ff.initial_state(obs), None, max_iters=40, min_iters=40, threshold=0)
    assert res.loss < 0.01  # the priors keep a small residual
    assert abs(res.state.jaw - jaw) < 0.03
    got = rig.full(res.state.z)[1]
    blink, smile = names.index("eyeBlink_L"), names.index("mouthSmile_R")
    # the expression prior shrinks them (by about a quarter here) but nothing else takes their place
    assert 0.55 < got[blink] <= 0.85 and 0.35 < got[smile] <= 0.65
    assert np.delete(got, [blink, smile]).max() < 0.15
    assert np.degrees(np.arccos((np.trace(res.state.R0 @ R0.T) - 1) / 2)) < 2.0


def test_identity_products_match_finite_differences(ict_model):
    """The identity's products with the shared unknowns (beta, landmark offsets), built from their Jacobian's
    structure, equal those of a Jacobian taken by finite differences of the residuals (pinhole projection)."""
    from dataclasses import replace

    from headcast.animate.identity import _Problem

    cfg = replace(TrackConfig().for_video(512, 512), w_psi=TrackConfig().w_psi_identity)
    n_id = min(cfg.identity_components, ict_model.n_shape)
    rig = PointRig(ict_model, None, np.arange(n_id), None, dynamic=False)
    pb = _Problem(rig, cfg, (0, 1), n_id)
    rng = np.random.default_rng(0)
    z = rig.coefficients(rng.normal(0, 0.5, ict_model.n_shape), np.abs(rng.normal(0, 0.1, ict_model.n_expr)))
    x = rig.points(rig.pts.rows_for(0.0), rotvec_to_matrix([0.1, -0.3, 0.05]), np.stack([np.eye(3)] * 3), z,
                   jacobian=False)
    uv = 2000.0 * x[:, :2] * [1, -1] + [256.0, 256.0] + rng.normal(0, 1.0, (len(x), 2))
    obs = Observation(uv[:68], uv[68:])
    st = pb.ff.fit(obs, pb.ff.initial_state(obs), None, max_iters=5, min_iters=5, threshold=0).state
    st.z[:n_id] = rng.normal(0, 0.3, n_id)
    off = rng.normal(0, 0.002, (68, 3))
    pb.set_shared([st], st.z[:n_id], off)
    r, Jf, Hfs, Hss, gs, _ = pb.frame_terms(st, obs)

    def residuals(zz, oo):
        rig.set_offsets(oo)
        s2 = st.copy()
        s2.z = zz
        return pb.ff_all._data(s2, obs, False).r

    r0, h = residuals(st.z, off), 1e-6
    cols = [residuals(st.z + h * np.eye(len(st.z))[j], off) for j in range(n_id)]
    cols += [residuals(st.z, off + h * np.eye(204)[j].reshape(68, 3)) for j in range(204)]
    Js = (np.array(cols) - r0).T / h  # (2K, n_id + 204)
    m = len(r0)
    for got, want in ((Hfs, Jf[:m].T @ Js), (Hss, Js.T @ Js), (gs, Js.T @ r[:m])):
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_builtin_motion_comes_back(builtin_run):
    out, truth, report = builtin_run
    g = report["ground_truth"]
    assert g["mouth"]["correlation"] > 0.95 and g["mouth"]["recovered"] > 0.7  # the jaw opens and closes
    for eye in ("lid_left", "lid_right"):  # the blink closes both eyes most of the way
        assert g[eye]["correlation"] > 0.7 and g[eye]["recovered"] > 0.5
    assert g["yaw_rmse_deg"] < 5 and g["pitch_rmse_deg"] < 5
    assert g["still_vertex_speed_mm_per_frame"] < 0.1  # no jitter on the still face
    assert report["share_under_threshold"] > 0.95
    with np.load(out / "params.npz") as z:
        assert z["theta"].shape == (len(truth.times), N_POSE) and z["psi"].shape == (len(truth.times), 53)
        assert str(z["model"]) == "ict" and np.isfinite(z["loss"][z["face_found"]]).all()


def test_frames_without_a_face_hold_the_last_parameters(builtin_run):
    out, truth, _ = builtin_run
    a, n = BLANK
    rows = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(rows) == len(truth.times)
    assert set(rows[0]) == {"frame", "time", "theta", "psi", "eta", "loss", "iterations", "face_found"}
    for r in rows[a:a + n]:
        assert r["face_found"] is False and r["loss"] is None
        assert r["theta"] == rows[a - 1]["theta"] and r["psi"] == rows[a - 1]["psi"]
    assert rows[a - 1]["face_found"] and all(r["face_found"] for r in rows[a + n:])  # the stream goes on


def test_real_clip_fits_under_the_threshold(subject_dir, tmp_path):
    video = shared_path("samples", "video", "d0.mp4")
    rep = animate(subject_dir, video, tmp_path / "out", max_frames=50)
    assert rep["frames"] == 50 and rep["frames_with_face"] == 50
    assert rep["share_under_threshold"] >= 0.9
    assert rep["landmark_error_over_interocular"]["mean"] < 0.05
    with np.load(tmp_path / "out" / "params.npz") as z:
        psi = z["psi"]
        assert np.isfinite(psi).all() and psi.min() >= 0 and psi.max() <= 1  # ICT's expression range
        assert np.ptp(z["theta"][:, 6]) > 0.01  # he talks: the jaw moves
    frames = iio2.mimread(tmp_path / "out" / "animation.mp4", memtest=False)
    assert len(frames) == 50 and frames[0].shape[0] == 512 and frames[0].shape[1] == 1024
    assert (tmp_path / "out" / "preview.png").is_file()


def test_calibration_frames_span_the_head_poses(ict_model):
    truth = builtin_motion(ict_model, fps=FPS)
    yaw = np.degrees(truth.theta[:, 1])
    # synthetic observations whose nose moves with the yaw: the selection must include both turns
    obs = []
    for y in yaw:
        p = np.zeros((68, 2))
        p[36:42] = [100, 100]
        p[42:48] = [160, 100]
        p[30] = [130 + y, 130]
        p[62], p[66] = [130, 160], [130, 161]
        p[0], p[16] = [80, 90], [180, 200]
        obs.append(Observation(p))
    sel = select_calibration(obs, 5, len(obs))
    assert len(sel) == 5 and yaw[sel].min() < -15 and yaw[sel].max() > 15


def test_bad_inputs_give_one_line_errors(subject_dir, tmp_path, ict_model):
    out = tmp_path / "out"
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("not a video\n")
    with pytest.raises(HeadcastError, match="cannot read video"):
        animate(subject_dir, not_video, out)
    with pytest.raises(HeadcastError, match="does not exist"):
        animate(subject_dir, tmp_path / "missing.mp4", out)
    black = tmp_path / "black.mp4"
    iio2.mimwrite(black, [np.zeros((64, 64, 3), np.uint8)] * 5, fps=10, macro_block_size=16,
                  ffmpeg_log_level="error")
    with pytest.raises(HeadcastError, match="no face found in any of the 5 frames"):
        animate(subject_dir, black, out)
    from headcast.model.head_model import save_model
    from tiny_model import flame_template_model

    shared_path("models", "flame-assets", "head_template.obj")
    other_model = save_model(flame_template_model(), tmp_path / "other.npz")
    with pytest.raises(HeadcastError, match="reconstructed with model 'ict', not 'flame-template-test'"):
        animate(subject_dir, black, out, model_spec=str(other_model))
    with pytest.raises(HeadcastError, match="reconstruction folder"):
        animate(tmp_path / "nowhere", black, out)
    assert not out.exists()  # nothing half-written


def test_gl_mesh_renderer_matches_the_ray_caster(ict_model):
    from headcast.core.camera import Intrinsics
    from headcast.render.gl import MeshRenderer
    from headcast.render.images import render_shaded

    K = Intrinsics(200.0, 200.0, 63.5, 63.5, 128, 128)
    v = HeadParams(np.zeros(ict_model.n_shape), np.zeros(ict_model.n_expr), np.zeros(N_POSE), 1.0,
                   np.array([0.0, 0.02, 0.5])).vertices(HeadLayer(ict_model))
    r = MeshRenderer(ict_model.faces, ict_model.n_vertices)
    img, mask = r.render(v, K)
    r.release()
    hits, _ = render_shaded(v, ict_model.faces, K)
    assert (mask != hits.hit).mean() < 0.005 and mask.mean() > 0.2
    assert img[mask].mean() > 60 and img[~mask].max() == 0
    red = np.zeros((ict_model.n_vertices, 3))
    red[:, 0] = 1.0  # per-vertex colours
    r = MeshRenderer(ict_model.faces, ict_model.n_vertices, colors=red)
    img, mask2 = r.render(v, K)
    r.release()
    assert (mask2 == mask).all() and img[mask][:, 1:].max() == 0 and img[mask][:, 0].mean() > 60


def test_a_given_video_header_is_not_read_again(subject_dir, tmp_path, monkeypatch):
    """The demo checks a --video's header first and hands it to animate (``info``), which then does not read
    it again: the real video_info, counted, runs once for the whole stage."""
    import headcast.animate.pipeline as pipeline
    from headcast.animate.video import video_info

    video = shared_path("samples", "video", "d0.mp4")
    calls = []
    monkeypatch.setattr(pipeline, "video_info", lambda p: calls.append(p) or video_info(p))
    info = video_info(video)
    rep = animate(subject_dir, video, tmp_path / "out", max_frames=2, write_video=False, info=info)
    assert rep["frames"] == 2 and calls == []
