"""Sweeps: registration on a synthetic sweep, the detail layer, texture blending, and bad sequences."""

import copy
import json
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import shared_path
from headcast.cli import main
from headcast.core.camera import project
from headcast.core.geometry import vertex_normals
from headcast.core.params import HeadParams
from headcast.fit.detail import LandmarkView, landmark_warp, normal_offsets
from headcast.fit.frames import load_frames, spread_frames, sweep_inputs
from headcast.fit.sweep import SweepConfig, is_sweep, register_sweep
from headcast.io.recon import read_offsets, with_offsets, write_params
from headcast.model.layer import HeadLayer
from headcast.synth import read_sample, render_rgbd
from headcast.synth.io import default_intrinsics
from headcast.synth.subject import random_subject
from headcast.synth.sweep import bump_offsets, synth_sweep, true_poses
from headcast.texture.core import region_faces, texture_space
from headcast.texture.multiview import SEEN, Seen, blend_frames, observe_frames, replace_weight, shading_trust, sweep_fill
from headcast.texture.observe import head_texels, interpolate

VIEWS, YAW = 5, 40.0


@pytest.fixture(scope="module")
def synthetic_sweep(ict_model, tmp_path_factory):
    """Five views of one subject turning its head over +-40 degrees (TrueDepth noise, 320x240)."""
    d = tmp_path_factory.mktemp("sweep") / "frames"
    synth_sweep(ict_model, d, n=VIEWS, seed=7, yaw_range_deg=YAW, width=320, height=240)
    return d


def test_synthetic_sweep_poses_recovered(ict_model, synthetic_sweep):
    frames = load_frames(sweep_inputs([synthetic_sweep]))
    sw = register_sweep(frames, SweepConfig(max_frames=VIEWS))
    assert all(p is not None for p in sw.poses) and sw.first == 0
    truths = [read_sample(synthetic_sweep, f"frame-{k:03d}")["gt"]["vertices"] for k in range(VIEWS)]
    nose = ict_model.landmark_vertices(truths[0])[30]
    rigid = np.flatnonzero(np.linalg.norm(truths[0] - nose, axis=1) < 0.09)
    gt = true_poses(truths, rigid)
    centre = truths[0][rigid].mean(0)
    turned = Rotation.from_matrix(gt[-1][:3, :3]).magnitude()
    assert np.degrees(turned) > 60  # the views really span the sweep
    for A, T in zip(sw.poses, gt):
        E = np.linalg.inv(A)  # head (output frame) -> this view's camera
        assert np.degrees(Rotation.from_matrix(E[:3, :3].T @ T[:3, :3]).magnitude()) < 1.0
        assert np.linalg.norm(E[:3, :3] @ centre + E[:3, 3] - (T[:3, :3] @ centre + T[:3, 3])) < 0.002
    # the head points reach the chin in every view (the jaw and mouth of the fit depend on it): down to
    # SweepConfig.above_chin (1 cm) above its tip; a cut at a fixed depth under the head's centre left 15 mm
    for r, truth in zip(sw.registered, truths):
        chin = ict_model.landmark_vertices(truth)[8]
        assert np.linalg.norm(r.cloud - chin, axis=1).min() < 0.012


def test_spread_frames_keeps_reference_and_spreads():
    angles = np.linspace(-1, 1, 21)
    pick = spread_frames(list(range(21)), angles, 5, keep=7)
    assert len(pick) == 5 and 7 in pick and 0 in pick and 20 in pick


def test_detail_recovers_bump_and_stays_zero_without_data(ict_model):
    layer = HeadLayer(ict_model)
    p = HeadParams.neutral(layer, ict_model.name)
    p.translation = np.array([0.0, 0.0, 0.5])
    verts = p.vertices(layer)
    bump = bump_offsets(ict_model, 2.0)  # rest space; the placement flips y and z only
    truth = p.vertices(HeadLayer(with_offsets(ict_model, bump)))
    n = vertex_normals(truth, ict_model.faces)
    seen = np.zeros(len(truth), bool)
    seen[ict_model.masks["face"]] = True
    seen &= n[:, 2] < -0.3  # the face's skin turned to the camera (not the mouth's or eyes' inner parts)
    rng = np.random.default_rng(0)
    pts = truth[seen] + 0.0003 * rng.standard_normal((int(seen.sum()), 3))  # 0.3 mm noise
    d, support = normal_offsets(verts, ict_model.faces, pts)
    peak = int(np.argmax(np.linalg.norm(bump, axis=1)))
    assert support[peak] and abs(d[peak] - np.linalg.norm(bump[peak])) < 0.00025
    flat = seen & (np.linalg.norm(bump, axis=1) < 1e-5)
    assert np.median(np.abs(d[flat])) < 0.0002  # no invented detail where the truth has none
    back = verts[:, 2] > verts[:, 2].min() + 0.19  # the back of the head, 19 cm behind the nose: no data
    assert back.sum() > 300 and not support[back].any() and np.all(d[back] == 0.0)


def test_landmark_warp_slides_lips_and_lids_to_their_contours(ict_model):
    """Three views (yaw -20, 0, 20 degrees) see the lips and lids 1.5 mm lower on the surface than the model
    has them: the slide brings the model's landmarks onto the detections, along the surface, and nowhere else."""
    layer = HeadLayer(ict_model)
    p = HeadParams.neutral(layer, ict_model.name)
    p.translation = np.array([0.0, 0.0, 0.5])
    verts = p.vertices(layer)
    K = default_intrinsics()
    idx = np.arange(36, 68)

    def landmarks(v):
        return ict_model.landmark_vertices(v)[idx]

    lm = landmarks(verts)
    n = vertex_normals(verts, ict_model.faces)[ict_model.faces[ict_model.lmk_faces[idx]]].mean(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    down = np.array([0.0, 0.0015, 0.0])  # camera y points down the image
    truth = lm + down - (n @ down)[:, None] * n
    centre = np.array([0.0, 0.0, 0.5])
    views = []
    for yaw in (-20.0, 0.0, 20.0):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        T[:3, 3] = centre - T[:3, :3] @ centre
        det = np.full((68, 2), np.nan)
        det[idx] = project(truth @ T[:3, :3].T + T[:3, 3], K)
        views.append(LandmarkView(T, K, det))
    u, report = landmark_warp(ict_model, verts, views)

    def error_mm(v):  # mean image-plane distance of the model's landmarks from the detections
        return np.mean([np.linalg.norm(project(landmarks(v) @ w.to_camera[:3, :3].T + w.to_camera[:3, 3], K)
                                       - w.landmarks2d[idx], axis=1).mean() * 0.5 / K.fx * 1000 for w in views])

    assert error_mm(verts) > 1.0 and error_mm(verts + u) < 0.2 * error_mm(verts)
    assert report["landmark_rows"] == 3 * len(idx)
    normals = vertex_normals(verts, ict_model.faces)
    assert np.abs((u * normals).sum(1)).max() < 1e-9  # along the surface: the depth fit is left to the offsets
    far = np.linalg.norm(verts[:, None] - lm[None], axis=2).min(1) > 0.012
    assert far.sum() > 5000 and np.all(u[far] == 0.0)


def test_offsets_round_trip_through_params(ict_model, tmp_path):
    layer = HeadLayer(ict_model)
    p = HeadParams.neutral(layer, ict_model.name)
    off = bump_offsets(ict_model, 1.5)
    write_params(tmp_path, p, offsets=off)
    np.testing.assert_array_equal(read_offsets(tmp_path, ict_model.n_vertices), off)
    write_params(tmp_path, p)
    assert read_offsets(tmp_path, ict_model.n_vertices) is None


def test_texture_blending_recovers_albedo_and_exposure(ict_model, synthetic_sweep):
    """Two views of a subject under ambient light, one 30 % darker: the blend is the albedo in both."""
    K = read_sample(synthetic_sweep, "frame-000")["K"]
    subject = random_subject(ict_model, 7, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, distance=0.45)
    subject.lighting = np.zeros((9, 3))
    subject.lighting[0] = 1.0 / 0.886227  # SH_CONST[0]: shading 1 everywhere
    frames, base = [], None
    for k, yaw in enumerate((-25.0, 25.0)):
        s = random_subject(ict_model, 7, yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0, distance=0.45)
        s.lighting = subject.lighting
        f = render_rgbd(ict_model, s, K, profile="none", background=False, seed=k)
        if k == 1:
            f.color = np.clip(f.color * 0.7, 0, 255).astype(np.uint8)
        base = f.vertices if base is None else base
        frames.append((k, f.color, f.depth, f.vertices))
    rigid = np.flatnonzero(np.linalg.norm(base - ict_model.landmark_vertices(base)[30], axis=1) < 0.09)
    poses = true_poses([frames[0][3], frames[1][3]], rigid)
    space = texture_space(ict_model, 256)
    _, tri, bary = space.texmap.texels()
    b = blend_frames(ict_model.faces, base, [(k, c, d, T) for (k, c, d, _), T in zip(frames, poses)], K,
                     subject.lighting, tri, bary)
    truth = interpolate(ict_model.faces, tri, bary, subject.albedo)
    ok = b.weight > 0.5
    assert ok.mean() > 0.1
    assert np.median(np.abs(b.albedo[ok] - truth[ok])) < 0.03
    np.testing.assert_allclose(b.gains[1], 1 / 0.7, rtol=0.1)
    # the light fitted over both frames: ambient as rendered (its first-order terms near 0), the albedo in
    # proportion to the truth (one scale, the light's normalisation)
    f = blend_frames(ict_model.faces, base, [(k, c, d, T) for (k, c, d, _), T in zip(frames, poses)], K,
                     np.eye(9, 3), tri, bary, fit=True)
    assert np.abs(f.light[1:4]).max() < 0.03 * f.light[0].min()
    ratio = f.albedo[ok] / np.maximum(truth[ok], 1e-3)
    assert np.median(np.abs(ratio / np.median(ratio) - 1)) < 0.05


def test_shading_trust_keeps_dim_smooth_skin_and_drops_a_bright_fold(ict_model):
    """Where the light leaves a large smooth part dim, colour / shading is trusted when it agrees with its
    surroundings; a narrow band whose albedo is too bright there (a fold's misfit normal) is not."""
    _, tri, bary = texture_space(ict_model, 128).texmap.texels()
    v = ict_model.v_template
    X = interpolate(ict_model.faces, tri, bary, v)
    dim = X[:, 0] > 0.02  # one side of the head: a quarter of the median shading (below SHADING_RAMP)
    shading = np.where(dim[:, None], 0.25, 1.0) * np.ones((len(tri), 3))
    albedo = np.full((len(tri), 3), 0.4)
    band = dim & (np.abs(X[:, 1] - np.median(X[dim, 1])) < 0.003)
    albedo[band] = 0.8
    trust = shading_trust(ict_model.faces, len(v), tri, bary, albedo, shading, np.ones(len(tri)))
    assert band.sum() > 50 and (dim & ~band).sum() > 1000
    assert np.median(trust[~dim]) == 1.0
    assert np.mean(trust[dim & ~band] > 0.99) > 0.95
    assert np.mean(trust[band] < 0.01) > 0.9


def test_head_texels_leave_out_what_no_camera_sees(ict_model):
    """The head's texels (the denominator of ``head_texels_seen_sweep``) leave out the eye sockets: 80
    cameras all around the mean head see none of those texels, and most of the rest."""
    from headcast.bench.sweep_views import look_at

    K = default_intrinsics(320, 240)
    _, tri, bary = texture_space(ict_model, 128).texmap.texels()
    v = ict_model.v_template
    Xn = interpolate(ict_model.faces, tri, bary, np.hstack([v, vertex_normals(v, ict_model.faces)]))
    n = Xn[:, 3:] / np.linalg.norm(Xn[:, 3:], axis=1, keepdims=True)
    k = np.arange(80) + 0.5
    z = 1 - 2 * k / 80
    dirs = np.stack([np.sqrt(1 - z ** 2) * np.cos(np.pi * (1 + 5 ** 0.5) * k), z,
                     np.sqrt(1 - z ** 2) * np.sin(np.pi * (1 + 5 ** 0.5) * k)], 1)
    blank = np.zeros((K.height, K.width, 3), np.uint8)
    best = np.zeros(len(tri))
    cams = [(j, blank, None, look_at(v.mean(0), d, 0.5)) for j, d in enumerate(dirs)]
    for s in observe_frames(ict_model.faces, v, cams, K, Xn[:, :3], n, tri):
        np.maximum.at(best, s.texels, s.conf)
    part = head_texels(ict_model.faces, len(v), tri)
    head = head_texels(ict_model.faces, len(v), tri, ict_model.masks["eyes"])
    sockets = part & ~head
    assert sockets.sum() > 0.01 * part.sum()
    assert (best[sockets] > 0).mean() < 0.02
    assert (best[head] > SEEN).mean() > 0.95


def test_sweep_fill_completes_from_the_blend(ict_model):
    """Where the sweep's blend is not trusted, its own completion fills in: a smooth albedo hidden in a 1 cm
    hole comes back from the hole's border, far from the first frame's (here absent) colours."""
    _, tri, bary = texture_space(ict_model, 256).texmap.texels()
    v = ict_model.v_template
    X = interpolate(ict_model.faces, tri, bary, v)
    truth = np.clip(0.4 + 2.0 * (X - X.mean(0)) * np.array([1.0, 0.5, -0.5]), 0.05, 0.95)
    nose = ict_model.landmark_vertices()[30]
    cheek = X[np.argmin(np.linalg.norm(X - (nose + np.array([0.04, 0.0, -0.02])), axis=1))]  # on the surface
    hole = np.linalg.norm(X - cheek, axis=1) < 0.01
    weight = np.where(hole, 0.0, 1.0)
    got = sweep_fill(ict_model, v, tri, bary, np.where(hole[:, None], 0.0, truth), weight)
    assert hole.sum() > 20
    assert np.median(np.abs(got[hole] - truth[hole])) < 0.03
    assert np.median(np.abs(got[~hole] - truth[~hole])) < 0.01


def test_grazing_views_do_not_replace_the_fill():
    """However many frames see a texel at a grazing angle (confidence below SEEN), the fill stays; one
    confident view replaces it."""
    seen = [Seen(f, np.array([0, 1]), np.full((2, 3), 0.5, np.float32), np.array([0.45, 0.8 if f == 0 else 0.0],
                                                                                   np.float32), np.ones(2, np.float32))
            for f in range(6)]
    np.testing.assert_allclose(replace_weight(seen, 3), [0.0, 1.0, 0.0])


def test_sweep_inputs_and_single_frame_path(tmp_path):
    folder = shared_path("samples", "rgbd", "truedepth-mannequin")
    prefix = folder / "frame-050"
    assert not is_sweep([str(prefix)])
    assert not is_sweep([str(folder / "frame-050_color.png"), str(folder / "frame-050_depth_mm.png")])
    assert is_sweep([str(folder)]) and is_sweep([str(prefix), str(folder / "frame-052")])
    assert sweep_inputs([folder])[:2] == [folder / "frame-000", folder / "frame-002"]


def _copy(folder, names, dest):
    dest.mkdir()
    for n in names:
        for suffix in ("_color.png", "_depth_mm.png", "_intrinsics.json"):
            shutil.copy(folder / f"{n}{suffix}", dest / f"{n}{suffix}")
    return dest


def test_two_frame_sweep_prints_no_numpy_warning(tmp_path):
    """A landmark no used frame lifted is left out quietly (numpy's All-NaN warning reached the user's stderr)."""
    import subprocess
    import sys

    d = _copy(shared_path("samples", "rgbd", "truedepth-mannequin"), ["frame-050", "frame-052"], tmp_path / "in")
    run = subprocess.run([sys.executable, "-m", "headcast.cli", "-q", "reconstruct", str(d), "--out",
                          str(tmp_path / "head"), "--detail", "none"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def _refused(capsys, args, out):
    assert main(["reconstruct", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("headcast: error:"), err
    assert not out.exists()
    return err[0]


def test_bad_sequences_refused(tmp_path, capsys):
    folder = shared_path("samples", "rgbd", "truedepth-mannequin")
    d = _copy(folder, ["frame-048", "frame-050"], tmp_path / "intr")
    js = json.loads((d / "frame-050_intrinsics.json").read_text())
    js["fx"] *= 1.2
    (d / "frame-050_intrinsics.json").write_text(json.dumps(js))
    assert "other intrinsics" in _refused(capsys, [str(d)], tmp_path / "o1")

    d = _copy(folder, ["frame-048", "frame-050"], tmp_path / "size")
    for suffix in ("_color.png", "_depth_mm.png"):
        import imageio.v3 as iio

        im = iio.imread(d / f"frame-050{suffix}")
        iio.imwrite(d / f"frame-050{suffix}", im[::2, ::2])
    js = json.loads((d / "frame-050_intrinsics.json").read_text())
    js.update(fx=js["fx"] / 2, fy=js["fy"] / 2, cx=js["cx"] / 2, cy=js["cy"] / 2, width=160, height=120)
    (d / "frame-050_intrinsics.json").write_text(json.dumps(js))
    assert "share one size" in _refused(capsys, [str(d)], tmp_path / "o2")

    d = _copy(folder, ["frame-048", "frame-050"], tmp_path / "broken")
    (d / "frame-048_color.png").write_bytes(b"not a png")
    assert "frame-048_color.png" in _refused(capsys, [str(d / "frame-048"), str(d / "frame-050")], tmp_path / "o3")

    d = _copy(folder, ["frame-048", "frame-050"], tmp_path / "noface")
    for n in ("frame-048", "frame-050"):
        import imageio.v3 as iio

        im = iio.imread(d / f"{n}_color.png")
        iio.imwrite(d / f"{n}_color.png", np.full_like(im, 128))
    assert "no face" in _refused(capsys, [str(d)], tmp_path / "o4")


def test_init_carries_detail_offsets_compactly(ict_model):
    from headcast.stream.introduction import init_body, parse_init_body
    from headcast.stream.renderer import init_head
    from headcast.stream.wire import PAPER, InitInfo, ProtocolError

    V = ict_model.n_vertices
    off = bump_offsets(ict_model, 2.0)
    off[np.linalg.norm(off, axis=1) < 1e-5] = 0  # no offset where there is no data
    info = InitInfo(ict_model.name, 4, ict_model.n_expr, np.zeros(4), profile=PAPER, n_pose=6)
    plain = len(init_body(info))
    info.offsets = off
    body = init_body(info)
    got, _, _ = parse_init_body(body + bytes(64))
    assert np.abs(got.offsets - off).max() <= 0.5e-4 + 1e-7  # half the 0.1 mm step
    assert not got.offsets[~off.any(1)].any()
    assert len(body) - plain < 3 * (off.any(1).sum() + V / 8)  # under 3 bytes per offset vertex
    model, _ = init_head(got, ict_model)
    np.testing.assert_allclose(model.v_template, ict_model.v_template + got.offsets, atol=1e-6)
    _assert_live_glb_carries(got, ict_model)
    for bad in (body[:-3], body[:plain] + b"\x50" + body[plain + 1:]):
        with pytest.raises(ProtocolError):
            parse_init_body(bad + bytes(64))


def _assert_live_glb_carries(info, model):
    """The live page's head (the GLB the receiver builds from the INIT) has the offsets in its rest mesh."""
    from headcast.io.gltf import read_accessor, read_glb
    from headcast.view.live import head_glb_bytes

    def positions(inf):
        doc, binary = read_glb(head_glb_bytes(inf, model))
        return read_accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"])

    plain = copy.copy(info)
    plain.offsets = None
    with_detail, without = positions(info), positions(plain)
    moved = np.linalg.norm(with_detail - without, axis=1)
    size = np.linalg.norm(info.offsets, axis=1)  # the GLB splits vertices at UV seams: compare the spread
    assert abs(moved.max() - size.max()) < 1e-4 and (moved > 1e-3).sum() >= (size > 1e-3).sum()
    assert np.median(moved) < 1e-6


def test_face_axes_without_depth_fall_back(ict_model):
    """A reference frame whose chin has no depth gives no face axes (the sweep then prefers another frame,
    or the camera's axes): never NaN, which would leave every frame without head points."""
    from types import SimpleNamespace

    from headcast.fit.sweep import _axes

    lm = ict_model.landmark_vertices().astype(np.float64) * np.array([1.0, -1.0, -1.0]) + [0, 0, 0.5]
    up, normal = _axes(SimpleNamespace(landmarks3d=lm))
    assert np.isfinite(up).all() and normal[2] < 0
    lm[8] = np.nan  # the chin
    assert _axes(SimpleNamespace(landmarks3d=lm)) is None


def test_texture_reads_every_registered_frame_or_the_used_ones(tmp_path):
    from headcast.core.camera import Intrinsics
    from headcast.io import recon
    from headcast.render import images
    from headcast.texture.multiview import read_frames

    K = Intrinsics(10.0, 10.0, 4.0, 3.0, 8, 6)
    (tmp_path / recon.FRAMES).mkdir()
    entries = []
    for i, (used, registered) in enumerate([(True, True), (False, True), (False, False)]):
        entries.append({"index": i, "name": f"f{i}", "registered": registered, "used": used,
                        "head_to_camera": np.eye(4).tolist() if registered else None})
        if registered:
            images.save_png(tmp_path / recon.FRAMES / f"{i:03d}_color.png", np.zeros((6, 8, 3), np.uint8))
            images.save_depth_mm(tmp_path / recon.FRAMES / f"{i:03d}_depth_mm.png", np.full((6, 8), 0.5))
    recon.write_poses(tmp_path, entries, "f0")
    assert [f[0] for f in read_frames(tmp_path, K)] == [0, 1]
    assert [f[0] for f in read_frames(tmp_path, K, used_only=True)] == [0]


def test_single_frame_detail_layer_is_opt_in_and_finds_the_bump(ict_model, tmp_path):
    """One frame: no offsets by default (the paper's fit as it is); ``--detail normal`` fits them to the
    frame's head points: the mesh moves towards the 2 mm bump beyond the model (ground truth), not away from
    it on the flat face, and the back of the head (no data) keeps no offset."""
    from headcast.io.mesh import read_obj_vertices

    synth_sweep(ict_model, tmp_path / "in", n=1, seed=5, bump_mm=2.0)
    frame = str(tmp_path / "in" / "frame-000")
    assert main(["reconstruct", frame, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert read_offsets(tmp_path / "plain", ict_model.n_vertices) is None
    assert main(["reconstruct", frame, "--out", str(tmp_path / "detail"), "--detail", "normal", "--quiet"]) == 0
    off = read_offsets(tmp_path / "detail", ict_model.n_vertices)
    truth = np.load(tmp_path / "in" / "frame-000_gt.npz")["vertices"]
    plain, detail = (read_obj_vertices(tmp_path / d / "mesh.obj") for d in ("plain", "detail"))
    err = lambda v, k: float(np.linalg.norm(v[k] - truth[k], axis=1).mean())  # noqa: E731
    bump = np.linalg.norm(bump_offsets(ict_model, 2.0), axis=1)
    peak = bump > 1e-3
    flat = (bump < 1e-6) & np.isin(np.arange(len(bump)), ict_model.masks["face"])
    assert peak.sum() > 10 and err(detail, peak) < err(plain, peak) - 5e-5
    assert err(detail, flat) < err(plain, flat) + 2e-5
    rest = np.asarray(ict_model.v_template)
    back = rest[:, 2] < rest[:, 2].min() + 0.03  # the back of the head in rest space, never seen from the front
    assert back.sum() > 100 and np.all(off[back] == 0.0)


def test_observation_errors_measure_colours_against_the_head_on_ones(ict_model, synthetic_sweep, tmp_path):
    """Five exactly registered views of a subject under ambient light, one 30 % darker, written as a sweep
    folder: each frame's colour of a texel meets its head-on colour in the other frames (after the gains: the
    darker frame's fifth of the observations would be 0.36 off without them)."""
    from headcast.bench.sweep_views import observation_errors
    from headcast.io import recon
    from headcast.io.mesh import write_obj
    from headcast.render import images

    K = read_sample(synthetic_sweep, "frame-000")["K"]
    light = np.zeros((9, 3))
    light[0] = 1.0 / 0.886227  # SH_CONST[0]: shading 1 everywhere
    (tmp_path / recon.FRAMES).mkdir()
    views = []
    for k, yaw in enumerate((0.0, -20.0, -10.0, 10.0, 20.0)):
        s = random_subject(ict_model, 7, yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0, distance=0.45)
        s.lighting = light
        f = render_rgbd(ict_model, s, K, profile="none", background=False, seed=k)
        color = np.clip(f.color * (0.7 if k == 2 else 1.0), 0, 255).astype(np.uint8)
        images.save_png(tmp_path / recon.FRAMES / f"{k:03d}_color.png", color)
        images.save_depth_mm(tmp_path / recon.FRAMES / f"{k:03d}_depth_mm.png", f.depth)
        views.append(f.vertices)
    rigid = np.flatnonzero(np.linalg.norm(views[0] - ict_model.landmark_vertices(views[0])[30], axis=1) < 0.09)
    recon.write_poses(tmp_path, [{"index": k, "name": f"f{k}", "registered": True, "used": True,
                                  "head_to_camera": T.tolist()} for k, T in enumerate(true_poses(views, rigid))], "f0")
    write_obj(tmp_path / recon.MESH_OBJ, views[0], ict_model.faces)
    K.to_json(tmp_path / recon.INTRINSICS)
    recon.write_lighting(tmp_path, recon.Lighting(light))
    out = observation_errors(ict_model, tmp_path, size=128)
    head_on = out["angle"][-1]
    assert out["frames"] == 5 and head_on["observations"] > 500
    assert head_on["median"] < 0.03 and head_on["p90"] < 0.06
    assert out["depth"][2]["observations"] > 0.8 * sum(r["observations"] for r in out["depth"])  # within 3 mm


def test_views_picture_lights_other_cameras_with_the_rooms_light(ict_model, tmp_path):
    """The sweep's pictures show the head from its frames' cameras in the still room it was captured in: a
    surface point keeps its colour from every camera (one Lambertian albedo, one light fixed to the room).
    Lighting the moved head with the output frame's light as it is carries the light round with the camera
    (the front frame's pale line under the lower lip)."""
    from headcast.bench.sweep_views import look_at, render_view
    from headcast.core.sh import sh_ambient, sh_directional
    from headcast.io import recon
    from headcast.render.raycast import raycast

    K = default_intrinsics(320, 240)
    space = texture_space(ict_model, 128)
    m = ict_model.v_template
    T0 = look_at(m.mean(0), np.array([0.0, 0.0, 1.0]), 0.5)  # the output frame's camera, in front of the face
    v = m @ T0[:3, :3].T + T0[:3, 3]
    a = space.atlas
    recon.write_texture(tmp_path, np.full((128, 128, 3), 0.5), v, ict_model.faces, a.uv, a.uv_faces)
    light = sh_directional(np.array([-0.7, 0.5, 0.5]), np.ones(3)) + sh_ambient(np.full(3, 0.3))
    recon.write_lighting(tmp_path, recon.Lighting(light))
    d = Rotation.from_euler("y", 40, degrees=True).apply([0.0, 0.0, 1.0])
    T1 = look_at(m.mean(0), d, 0.5) @ np.linalg.inv(T0)  # head-to-camera of a camera 40 degrees round
    colours, seen = [], np.ones(len(v), bool)
    for T in (np.eye(4), T1):
        img = render_view(ict_model, tmp_path, v, K, T).astype(np.float64)
        vc = v @ T[:3, :3].T + T[:3, 3]
        hits = raycast([(vc, ict_model.faces)], K)
        uv = np.rint(project(vc, K)).astype(int)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < K.width) & (uv[:, 1] >= 0) & (uv[:, 1] < K.height)
        uv = np.where(inside[:, None], uv, 0)
        facing = -np.einsum("nc,nc->n", vertex_normals(vc, ict_model.faces), vc / np.linalg.norm(vc, axis=1)[:, None])
        seen &= inside & (np.abs(hits.depth[uv[:, 1], uv[:, 0]] - vc[:, 2]) < 5e-4) & (facing > 0.5)
        colours.append(img[uv[:, 1], uv[:, 0]])
    lum = [c[seen].mean(1) for c in colours]
    assert seen.sum() > 1000
    assert np.median(np.abs(np.log(np.maximum(lum[1], 1) / np.maximum(lum[0], 1)))) < 0.03


def test_sweep_fill_carries_the_seen_hair_round_the_unseen_back(ict_model):
    """Hair seen on the front half of the scalp fills the unseen back half in its own colour, not in the
    face's skin tone (which drew a bald back ringed by a dark smudge); the unseen neck stays skin."""
    _, tri, bary = texture_space(ict_model, 256).texmap.texels()
    v, f = ict_model.v_template, ict_model.faces
    on = np.zeros(len(v))
    on[ict_model.masks["scalp"]] = 1.0
    X = interpolate(f, tri, bary, np.hstack([v, on[:, None]]))
    scalp = X[:, 3] > 0.99
    skin, hair = np.array([0.62, 0.45, 0.36]), np.array([0.24, 0.16, 0.09])
    truth = np.where(X[:, 3:] > 0.5, hair, skin)
    back = X[:, 2] < np.median(X[scalp, 2])  # model frame: z out of the face
    got = sweep_fill(ict_model, v, tri, bary, np.where(back[:, None], 0.0, truth), np.where(back, 0.0, 1.0))
    neck = region_faces(ict_model, "neck")[tri] & back
    assert (scalp & back).sum() > 500 and neck.sum() > 500
    assert np.median(np.abs(got[scalp & back] - hair)) < 0.03
    assert np.median(np.abs(got[neck] - skin)) < 0.05
