"""The synthetic RGB-D renderer: SH light, subjects, ray-cast frames, sensor profiles, files on disk."""

import json

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy import ndimage

from conftest import shared_path
from headcast.core.camera import Intrinsics, backproject
from headcast.core.errors import HeadcastError
from headcast.core.sh import SH_CONST, sh_ambient, sh_basis, sh_directional, sh_shading
from headcast.io.mesh import read_obj
from headcast.model.layer import HeadLayer
from headcast.model.lbs import head_yaw_degrees
from headcast.synth import (
    GT_KEYS,
    PROFILES,
    SynthSubject,
    default_intrinsics,
    random_subject,
    read_sample,
    render_rgbd,
    subject_geometry,
    synth,
)
from headcast.synth.sensor import depth_jumps

K_SMALL = Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)


@pytest.fixture(scope="module")
def model():
    shared_path("models", "flame-assets", "head_template.obj")
    from tiny_model import flame_template_model

    return flame_template_model()


@pytest.fixture(scope="module")
def subject(model):
    return random_subject(model, seed=3)


@pytest.fixture(scope="module")
def frames(model, subject):
    return {p: render_rgbd(model, subject, K_SMALL, profile=p, seed=7) for p in ("none", "truedepth", "zed2")}


@pytest.fixture(scope="module")
def written(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    paths = synth(model, out, n=2, seed=11, profile="truedepth", width=320, height=240)
    return out, paths


def _sphere(n=20000):
    i = np.arange(n) + 0.5
    phi, th = np.arccos(1 - 2 * i / n), np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], 1)


# --- SH lighting ----------------------------------------------------------------------------------

def test_sh_constants_are_orthonormal_sh_times_lambert_factors():
    n = _sphere()
    A = np.array([np.pi] + [2 * np.pi / 3] * 3 + [np.pi / 4] * 5)
    Y = sh_basis(n) / A
    Y[:, 0] = SH_CONST[0]  # the constant term carries no factor pi (DECA's convention)
    gram = Y.T @ Y * (4 * np.pi / len(n))
    np.testing.assert_allclose(gram, np.eye(9), atol=2e-3)


def test_directional_light_is_the_sh_projection_of_clamped_cosine_irradiance():
    n = _sphere()
    d = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    rgb, amb = np.array([0.7, 0.5, 0.2]), np.array([0.4, 0.45, 0.5])
    sh = sh_directional(d, rgb) + sh_ambient(amb)
    target = amb + rgb * np.maximum(0, n @ d)[:, None]
    best, *_ = np.linalg.lstsq(sh_basis(n), target, rcond=None)  # the L2-optimal 9-term fit
    np.testing.assert_allclose(sh, best, atol=2e-3)
    np.testing.assert_allclose(sh_shading(n, sh), sh_basis(n) @ sh, atol=1e-12)
    assert np.abs(sh_shading(n, sh) - target).mean() < 0.03  # order 2 captures ~all of Lambert


# --- subjects -------------------------------------------------------------------------------------

def test_random_subject_ranges_and_yaw(model):
    for seed in range(6):
        s = random_subject(model, seed, yaw_range_deg=30)
        assert np.abs(s.beta).max() <= 2 and abs(s.info["yaw_deg"]) <= 30
        yaw = head_yaw_degrees(torch.tensor(s.theta)[None]).item()
        assert yaw == pytest.approx(s.info["yaw_deg"], abs=1e-6)
        lmk = subject_geometry(model, s)["landmarks"]
        assert 0.35 <= lmk[17:].mean(0)[2] <= 0.6
        assert s.albedo.shape == (model.n_vertices, 3) and 0 <= s.albedo.min() and s.albedo.max() <= 1


def test_overrides_leave_other_draws_unchanged(model):
    a = random_subject(model, 5)
    b = random_subject(model, 5, yaw_deg=12.0, distance=0.5, expression={0: 0.3})
    np.testing.assert_array_equal(a.beta, b.beta)
    np.testing.assert_array_equal(a.albedo, b.albedo)
    np.testing.assert_array_equal(a.lighting, b.lighting)
    assert b.info["yaw_deg"] == 12.0 and b.psi[0] == 0.3 and np.count_nonzero(b.psi) == 1
    assert subject_geometry(model, b)["landmarks"][17:].mean(0)[2] == pytest.approx(0.5)


def test_bad_subject_input(model):
    with pytest.raises(HeadcastError, match="unknown expression"):
        random_subject(model, 0, expression={"jawOpen": 0.5})  # the test model names no expressions
    with pytest.raises(HeadcastError, match="beta has"):
        random_subject(model, 0, beta=np.zeros(model.n_shape + 1))
    with pytest.raises(HeadcastError, match="profile"):
        render_rgbd(model, random_subject(model, 0), K_SMALL, profile="kinect")


def test_gt_vertices_match_the_float32_layer(model, subject):
    v = subject_geometry(model, subject)["vertices"]
    layer = HeadLayer(model)
    f = lambda a: torch.tensor(a, dtype=torch.float32)[None]  # noqa: E731
    out = layer(f(subject.beta), f(subject.psi), f(subject.theta)).vertices[0].numpy().astype(np.float64)
    np.testing.assert_allclose(v, subject.s * out * np.array([1, -1, -1]) + subject.t, atol=2e-6)


# --- rendering and sensor profiles ----------------------------------------------------------------

def test_clean_depth_lies_on_the_mesh(frames, model):
    f = frames["none"]
    ok = f.triangle_ids >= 0
    v, u = np.nonzero(ok)
    X = backproject(np.stack([u, v], -1).astype(float), f.depth_clean[ok].astype(np.float64), f.K)
    tri = f.vertices[model.faces[f.triangle_ids[ok]]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    dist = np.abs(np.einsum("nc,nc->n", X - tri[:, 0], n))
    assert dist.max() < 1e-6  # float32 storage of a float64 intersection
    np.testing.assert_array_equal(f.depth, f.depth_clean)  # profile none: exact, no holes


def test_scene_has_wall_torso_and_head(frames):
    f = frames["none"]
    labels, counts = np.unique(f.labels, return_counts=True)
    assert {0, 1, 2} <= set(labels) <= {0, 1, 2, 3}  # head, torso, wall fill the view (3: inside parted lips)
    assert (f.depth_clean > 0).all()
    wall = f.depth_clean[f.labels == 2]
    assert wall.min() > f.depth_clean[f.labels == 0].max()  # the wall is behind the head
    assert f.color[f.labels == 0].mean() > 30  # lit, not black


def test_no_background(model, subject):
    f = render_rgbd(model, subject, K_SMALL, profile="none", background=False)
    assert {-1, 0} <= set(np.unique(f.labels)) <= {-1, 0, 3}
    empty = f.labels == -1
    assert (f.depth[empty] == 0).all()
    away = ~ndimage.binary_dilation(~empty)  # anti-aliasing mixes the head into its edge pixels
    assert (f.color[away] == 0).all() and f.color[empty & ~away].any()


def test_face_mask_covers_the_face(frames):
    f = frames["none"]
    assert (f.face_mask <= (f.labels == 0)).all()
    inner = np.round(f.landmarks_2d[17:]).astype(int)  # brows, eyes, nose, mouth
    near_face = ndimage.binary_dilation(f.face_mask, iterations=2)  # eyelid and lip points may see eyeball or mouth
    assert near_face[inner[:, 1], inner[:, 0]].all()
    assert f.face_mask[inner[:, 1], inner[:, 0]].mean() > 0.9
    assert f.face_mask.sum() > 0.3 * (f.labels == 0).sum()


def test_sensor_noise_matches_its_profile(frames):
    """Residuals to the clean depth: about sigma(z) = k z^2 plus 1 mm rounding, a few sigma at most."""
    for name in ("truedepth", "zed2"):
        f, prof = frames[name], PROFILES[name]
        ok = (f.depth > 0) & (f.labels == 0)
        z = f.depth_clean[ok].astype(np.float64)
        r = f.depth[ok] - z
        expected = np.sqrt(prof.sigma(z, f.K.fx) ** 2 + 0.001 ** 2 / 12)
        assert np.std(r / expected) == pytest.approx(1.0, abs=0.15)
        assert np.abs(r).max() < 6 * prof.sigma(z.max(), f.K.fx) + 0.0005
        assert np.allclose(f.depth[f.depth > 0] * 1000, np.round(f.depth[f.depth > 0] * 1000), atol=1e-3)


def test_noise_grows_with_distance_squared(model):
    sig = []
    for z in (0.35, 0.7):
        s = random_subject(model, 1, distance=z)
        f = render_rgbd(model, s, K_SMALL, profile="truedepth", seed=2, aa=1)
        ok = (f.depth > 0) & (f.labels == 0)
        r = (f.depth - f.depth_clean)[ok].astype(np.float64)
        sig.append(np.sqrt(max(r.var() - 0.001 ** 2 / 12, 0)))  # remove the rounding
    assert sig[1] / sig[0] == pytest.approx(4.0, rel=0.25)
    assert sig[0] == pytest.approx(PROFILES["truedepth"].sigma(0.35, K_SMALL.fx), rel=0.3)


def test_holes_at_silhouettes_and_shadow_side(frames):
    for name in ("truedepth", "zed2"):
        f = frames[name]
        holes = f.depth == 0
        jumps = depth_jumps(f.depth_clean, 0.01, 0.02)
        assert holes[jumps].mean() > 0.9  # depth discontinuities lose their depth
        far = ndimage.distance_transform_edt(~jumps) > 8
        flat = far & (f.labels == 0) & f.face_mask
        assert holes[flat].mean() < 0.1  # the face itself keeps most of its depth
        # the projector / right camera sits at +x: the occlusion band lies left of the head
        rows = np.flatnonzero((f.labels == 0).any(1))
        left = right = 0
        for y in rows[len(rows) // 3: 2 * len(rows) // 3]:
            xs = np.flatnonzero(f.labels[y] == 0)
            left += holes[y, max(xs[0] - 25, 0): xs[0]].sum()
            right += holes[y, xs[-1] + 1: xs[-1] + 26].sum()
        assert left > 1.5 * right


def test_same_seed_same_frame_other_seed_other_noise(model, subject, frames):
    again = render_rgbd(model, subject, K_SMALL, profile="truedepth", seed=7)
    np.testing.assert_array_equal(again.color, frames["truedepth"].color)
    np.testing.assert_array_equal(again.depth, frames["truedepth"].depth)
    other = render_rgbd(model, subject, K_SMALL, profile="truedepth", seed=8)
    assert not np.array_equal(other.depth, frames["truedepth"].depth)
    np.testing.assert_array_equal(other.depth_clean, frames["truedepth"].depth_clean)


# --- files ----------------------------------------------------------------------------------------

def test_files_read_back(written, model):
    out, paths = written
    assert [p.name for p in paths] == ["frame-000_color.png", "frame-001_color.png"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    s = read_sample(out, "frame-001")
    assert Intrinsics.from_json(out / "frame-001_intrinsics.json") == default_intrinsics(320, 240)
    assert s["K"] == default_intrinsics(320, 240)
    gt = s["gt"]
    assert s["color"].shape == (240, 320, 3) and s["depth"].shape == (240, 320)
    assert str(gt["model"]) == model.name and gt["vertices"].shape == (model.n_vertices, 3)
    assert set(gt) == set(GT_KEYS)  # the documented keys are exactly the written ones
    # the PNG is the in-memory depth rounded to millimetres
    np.testing.assert_allclose(s["depth"], np.round(gt["depth"] * 1000) / 1000, atol=1e-6)
    # and matches the clean depth within the truedepth noise and the rounding
    ok = s["depth"] > 0
    z = gt["depth_clean"][ok].astype(np.float64)
    assert (np.abs(s["depth"][ok] - z) < 6 * PROFILES["truedepth"].sigma(z, 300.0) + 0.0006).all()
    params = json.loads((out / "frame-001_gt.json").read_text())
    assert params["subject_seed"] == 12 and np.allclose(params["theta"], gt["theta"])


def test_gt_parameters_reproduce_the_gt_mesh(written, model):
    out, _ = written
    gt = read_sample(out, "frame-000")["gt"]
    s = SynthSubject(beta=gt["beta"], psi=gt["psi"], theta=gt["theta"], s=float(gt["s"]), t=gt["t"],
                     albedo=gt["albedo"], lighting=gt["sh_lighting"], seed=int(gt["subject_seed"]))
    np.testing.assert_allclose(subject_geometry(model, s)["vertices"], gt["vertices"], atol=1e-9)
    mesh = read_obj(out / "frame-000_gt_mesh.obj")
    np.testing.assert_allclose(mesh.vertices, gt["vertices"], atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, model.faces)


def test_gt_mesh_projects_onto_the_face_pixels(written):
    out, _ = written
    smp = read_sample(out, "frame-000")
    gt, K = smp["gt"], smp["K"]
    mesh = read_obj(out / "frame-000_gt_mesh.obj")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    v, u = np.nonzero(gt["face_mask"])
    X = backproject(np.stack([u, v], -1).astype(float), gt["depth_clean"][v, u].astype(np.float64), K)
    d = scene.compute_distance(o3d.core.Tensor(X.astype(np.float32))).numpy()
    assert d.max() < 2e-5  # every face pixel back-projects onto the GT mesh (OBJ keeps 1 um)
    # and the mesh's landmarks project where the GT says
    uv = gt["landmarks_3d"][:, :2] / gt["landmarks_3d"][:, 2:] * [K.fx, K.fy] + [K.cx, K.cy]
    np.testing.assert_allclose(uv, gt["landmarks_2d"], atol=1e-9)


def test_synth_is_byte_reproducible(written, model, tmp_path):
    out, _ = written
    again = tmp_path / "again"
    synth(model, again, n=2, seed=11, profile="truedepth", width=320, height=240)
    for f in sorted(out.iterdir()):
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name
    # frame i of a run equals frame 0 of a run seeded seed + i
    one = tmp_path / "one"
    synth(model, one, n=1, seed=12, profile="truedepth", width=320, height=240)
    assert (one / "frame-000_depth_mm.png").read_bytes() == (out / "frame-001_depth_mm.png").read_bytes()


def test_read_sample_reads_the_real_captures():
    folder = shared_path("samples", "rgbd", "truedepth-mannequin")
    s = read_sample(folder, "frame-050")
    assert s["color"].shape == (240, 320, 3) and "gt" not in s
    assert s["K"].width == 320 and 0.2 < np.median(s["depth"][s["depth"] > 0]) < 5


def test_synth_bad_output(model, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HeadcastError, match="not a folder"):
        synth(model, f, n=1, width=64, height=48)


# --- the default model: a face a detector recognises ----------------------------------------------

@pytest.mark.slow
def test_ict_render_is_a_face_mediapipe_finds(ict_model):
    import mediapipe as mp

    pairs = np.array([[33, 36], [263, 45], [4, 30], [61, 48], [291, 54]])  # MediaPipe -> iBUG-68
    K = default_intrinsics(640, 480)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        for seed in (0, 1):
            s = random_subject(ict_model, seed)
            f = render_rgbd(ict_model, s, K, profile="truedepth", seed=seed)
            res = fm.process(f.color)
            assert res.multi_face_landmarks, f"no face found in the render of seed {seed}"
            pts = np.array([(p.x * K.width, p.y * K.height) for p in res.multi_face_landmarks[0].landmark])
            iod = np.linalg.norm(f.landmarks_2d[36] - f.landmarks_2d[45])
            err = np.linalg.norm(pts[pairs[:, 0]] - f.landmarks_2d[pairs[:, 1]], axis=1)
            assert err.max() < 0.08 * iod, err / iod
            assert f.face_mask[np.round(pts[4, 1]).astype(int), np.round(pts[4, 0]).astype(int)]


def test_cli_helpers(written, model, tmp_path):
    from headcast.synth import load_beta, parse_expressions

    out, _ = written
    gt = read_sample(out, "frame-000")["gt"]
    np.testing.assert_array_equal(load_beta(out / "frame-000_gt.npz"), gt["beta"])
    (tmp_path / "b.txt").write_text("0.5 -1\n2")
    np.testing.assert_array_equal(load_beta(tmp_path / "b.txt"), [0.5, -1, 2])
    (tmp_path / "bad.txt").write_text("0.5 x")
    with pytest.raises(HeadcastError, match="not a list of numbers"):
        load_beta(tmp_path / "bad.txt")
    assert parse_expressions(["jawOpen=0.4", "3=0.2"]) == {"jawOpen": 0.4, "3": 0.2}
    with pytest.raises(HeadcastError, match="NAME=WEIGHT"):
        parse_expressions(["jawOpen"])
    s = random_subject(model, 0, beta=load_beta(tmp_path / "b.txt"), expression=parse_expressions(["3=0.2"]))
    assert s.beta[:3].tolist() == [0.5, -1, 2] and s.psi[3] == 0.2
