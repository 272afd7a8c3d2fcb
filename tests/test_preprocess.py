"""Preprocessing on real captures: RGB-D loading, rotation, landmarks (MediaPipe and dlib), lifting, face cloud."""

from __future__ import annotations

import json
import logging

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from conftest import shared_path
from headcast.core.camera import Intrinsics, backproject, depth_to_points
from headcast.core.errors import HeadcastError
from headcast.io.mesh import write_ply
from headcast.preprocess import (
    RGBDFrame,
    camera_rotation,
    detect_faces,
    detect_landmarks,
    find_upright_rotation,
    lift_landmarks,
    load_rgbd,
    mediapipe_to_ibug68,
    observation_overlay,
    preprocess,
    rotate_frame,
)
from headcast.preprocess.cloud import HULL_MARGIN
from headcast.preprocess.ibug68 import MEDIAPIPE_TO_IBUG68, inter_ocular, mediapipe_to_ibug68_matrix
from headcast.preprocess.rotate import rotate_image
from headcast.render.images import save_png

FRAMES = ("030", "050", "065")


def mannequin(n: str = "050") -> str:
    return str(shared_path("samples", "rgbd", "truedepth-mannequin") / f"frame-{n}")


def photo(name: str) -> np.ndarray:
    return iio.imread(shared_path("samples", "photos", f"{name}.jpg"))


@pytest.fixture(scope="module")
def frames() -> dict[str, RGBDFrame]:
    return {n: load_rgbd(mannequin(n)) for n in FRAMES}


@pytest.fixture(scope="module")
def observations(frames) -> dict[tuple[str, str], object]:
    out = {}
    for n, fr in frames.items():
        out[n, "mediapipe"] = preprocess(fr, "mediapipe")
        out[n, "dlib"] = preprocess(fr, "dlib")
    return out


@pytest.fixture(scope="module")
def raw050():
    """The unrotated 050 frame as stored: color, uint16 depth, intrinsics."""
    base = mannequin("050")
    return (iio.imread(base + "_color.png"), iio.imread(base + "_depth_mm.png"),
            Intrinsics.from_json(base + "_intrinsics.json"))


def write_frame(tmp_path, color, depth, K: Intrinsics | dict | None, depth_name="frame_depth_mm.png"):
    iio.imwrite(tmp_path / "frame_color.png", color)
    dpath = tmp_path / depth_name
    if dpath.suffix == ".npy":
        np.save(dpath, depth)
    else:
        iio.imwrite(dpath, depth)
    if isinstance(K, Intrinsics):
        K.to_json(tmp_path / "frame_intrinsics.json")
    elif isinstance(K, dict):
        (tmp_path / "frame_intrinsics.json").write_text(json.dumps(K))
    return tmp_path / "frame"


# --- loading and rotation ------------------------------------------------------------------------

def test_mannequin_turned_upright(frames):
    for n, fr in frames.items():
        assert fr.rotation == 90, n  # README: rotate 90 degrees clockwise
        assert fr.color.shape == (320, 240, 3) and fr.depth.shape == (320, 240) and fr.depth.dtype == np.float32
        assert (fr.K.width, fr.K.height) == (240, 320)
        assert fr.color_path.name == f"frame-{n}_color.png" and fr.depth_path.name == f"frame-{n}_depth_mm.png"
        assert find_upright_rotation(iio.imread(mannequin(n) + "_color.png"), "dlib")[0] == 90  # HOG, no upsampling


def test_rotation_keeps_the_3d_points(raw050):
    """Intrinsics.rotated against a real back-projection: the points only change axes."""
    color, depth_mm, K = raw050
    depth = depth_mm.astype(np.float32) / 1000
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    pts = backproject(np.stack([u, v], -1).astype(float), depth.astype(float), K)      # (H, W, 3)
    ids = np.arange(H * W).reshape(H, W)
    frame = RGBDFrame(color, depth, K)
    for d in (90, 180, 270):
        fr = rotate_frame(frame, d)
        h, w = fr.depth.shape
        v2, u2 = np.mgrid[0:h, 0:w]
        pts2 = backproject(np.stack([u2, v2], -1).astype(float), fr.depth.astype(float), fr.K)
        src = rotate_image(ids, d).ravel()
        expected = pts.reshape(-1, 3)[src] @ camera_rotation(d).T
        np.testing.assert_allclose(pts2.reshape(-1, 3), expected, atol=1e-12)
        assert fr.rotation == d and np.array_equal(fr.color, rotate_image(color, d))
    # four quarter turns give the original frame back
    back = rotate_frame(rotate_frame(rotate_frame(rotate_frame(frame, 90), 90), 90), 90)
    assert back.K == K and np.array_equal(back.depth, depth) and back.rotation == 0


def test_prefix_and_color_file_find_the_same_frame(frames):
    fr = load_rgbd(mannequin("050") + "_color.png", rotate=90)
    assert np.array_equal(fr.depth, frames["050"].depth) and fr.K == frames["050"].K


def test_intrinsics_of_a_larger_image_are_scaled(tmp_path, raw050, caplog):
    color, depth_mm, K = raw050
    big = Intrinsics(K.fx * 4, K.fy * 4, (K.cx + 0.5) * 4 - 0.5, (K.cy + 0.5) * 4 - 0.5, 1280, 960)
    with caplog.at_level("WARNING", logger="headcast.preprocess.rgbd"):
        fr = load_rgbd(write_frame(tmp_path, color, depth_mm, big), rotate=0)
    said = [r.getMessage() for r in caplog.records if r.name == "headcast.preprocess.rgbd"]
    np.testing.assert_allclose([fr.K.fx, fr.K.fy, fr.K.cx, fr.K.cy], [K.fx, K.fy, K.cx, K.cy])
    assert (fr.K.width, fr.K.height) == (320, 240) and said == ["intrinsics scaled from 1280x960 to 320x240"]


def test_depth_formats_agree(tmp_path, raw050):
    """uint16 mm PNG, float32 NPY and TIFF in metres (with NaN/inf holes), and a PLY cloud give one depth map."""
    color, depth_mm, K = raw050
    ref = load_rgbd(write_frame(tmp_path, color, depth_mm, K), rotate=0).depth
    metres = depth_mm.astype(np.float32) / 1000
    holes = metres.copy()
    holes[depth_mm == 0] = np.where(np.arange((depth_mm == 0).sum()) % 2, np.nan, np.inf)
    np.save(tmp_path / "d.npy", holes)
    cv2.imwrite(str(tmp_path / "d.tiff"), holes)
    for name in ("d.npy", "d.tiff"):
        fr = load_rgbd(tmp_path / "frame_color.png", tmp_path / name, tmp_path / "frame_intrinsics.json", rotate=0)
        np.testing.assert_allclose(fr.depth, ref, atol=1e-7)
    pts, uv = depth_to_points(metres, K)
    write_ply(tmp_path / "cloud.ply", pts, colors=color[uv[:, 1].astype(int), uv[:, 0].astype(int)])
    fr = load_rgbd(tmp_path / "frame_color.png", tmp_path / "cloud.ply", K, rotate=0)
    np.testing.assert_allclose(fr.depth, ref, atol=1e-6)


def test_exr_depth(tmp_path, raw050):
    color, depth_mm, K = raw050
    metres = depth_mm.astype(np.float32) / 1000
    try:
        import OpenEXR
    except ImportError:
        (tmp_path / "d.exr").write_bytes(b"\x76\x2f\x31\x01")
        with pytest.raises(HeadcastError, match="OpenEXR"):
            load_rgbd(write_frame(tmp_path, color, depth_mm, K), tmp_path / "d.exr", rotate=0)
        return
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Z": metres}) as f:
        f.write(str(tmp_path / "d.exr"))
    fr = load_rgbd(write_frame(tmp_path, color, depth_mm, K), tmp_path / "d.exr", rotate=0)
    np.testing.assert_array_equal(fr.depth, metres)


def test_bad_input_gives_one_line_errors(tmp_path, raw050):
    color, depth_mm, K = raw050

    def err(*args, **kw) -> str:
        with pytest.raises(HeadcastError) as e:
            load_rgbd(*args, rotate=0, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    def frame(name, depth=depth_mm, intr=K, depth_name="frame_depth_mm.png"):
        (tmp_path / name).mkdir()
        return write_frame(tmp_path / name, color, depth, intr, depth_name)

    size = frame("size", depth_mm[:, :300])
    assert "320x240" in err(size) and "300x240" in err(size)
    for i, (bad, what) in enumerate([({**K.__dict__, "fx": -5.0}, "fx"), ({**K.__dict__, "fy": 1e6}, "absurd"),
                                     ({**K.__dict__, "cx": 5000.0}, "principal point"), ({"fx": 300}, "not JSON")]):
        assert what in err(frame(f"k{i}", intr=bad))
    assert "no intrinsics" in err(frame("nok", intr=None))
    assert "240x320" in err(frame("transposed", intr=Intrinsics(K.fy, K.fx, K.cy, K.cx, 240, 320)))
    # depth in other units: metres stored in a uint16 PNG, millimetres stored as float
    msg = err(frame("units_png", (depth_mm // 1000).astype(np.uint16)))
    assert "other units" in msg and "--depth-scale 1" in msg
    mm_float = frame("units_npy", depth_mm.astype(np.float32), depth_name="frame_depth.npy")
    assert "--depth-scale 0.001" in err(mm_float)
    fr = load_rgbd(mm_float, depth_scale=0.001, rotate=0)  # the suggested scale works
    assert 0.2 < np.median(fr.depth[fr.depth > 0]) < 5
    assert "positive" in err(mm_float, depth_scale=-1.0)
    # unreadable, missing and empty files
    d = tmp_path / "units_npy"
    (d / "broken_depth_mm.png").write_bytes(b"not a png at all")
    assert "cannot read" in err(d / "frame_color.png", d / "broken_depth_mm.png")
    (d / "broken_color.png").write_bytes(b"\x89PNG but broken")
    assert "cannot read color image" in err(d / "broken_color.png", d / "frame_depth.npy")
    assert "does not exist" in err(tmp_path / "nothing_here")
    iio.imwrite(d / "zero_depth_mm.png", np.zeros_like(depth_mm))
    assert "no valid depth" in err(d / "frame_color.png", d / "zero_depth_mm.png")
    iio.imwrite(tmp_path / "x.png", color)
    assert "no depth map" in err(tmp_path / "x.png")
    with pytest.raises(HeadcastError, match="--rotate"):
        load_rgbd(size, rotate=45)


def test_no_face_error_text(tmp_path, raw050):
    color, depth_mm, K = raw050
    y, x = np.mgrid[0:240, 0:320]
    gradient = np.stack([x * 255 // 319, y * 255 // 239, np.full_like(x, 128)], -1).astype(np.uint8)
    base = write_frame(tmp_path, gradient, depth_mm, K)
    for method in ("mediapipe", "dlib"):
        with pytest.raises(HeadcastError) as e:
            load_rgbd(base, method=method)
        assert str(e.value) == f"no face found in {tmp_path / 'frame_color.png'}; tried rotations 0, 90, 180, 270"
    with pytest.raises(HeadcastError, match="no face found"):
        preprocess(load_rgbd(base, rotate=0))


# --- landmarks ----------------------------------------------------------------------------------

def test_rotated_selfie_found_upright():
    img = photo("rotated-selfie")
    for method in ("mediapipe", "dlib"):
        d, score = find_upright_rotation(img, method)
        assert d == 90, method
        lm = detect_landmarks(rotate_image(img, d), method).points
        assert lm[8, 1] > lm[27, 1] > lm[19, 1] and lm[36, 0] < lm[45, 0]  # chin below nose below brows


def test_small_face_turned_upright_by_the_far_model():
    """A face too small for BlazeFace's near model in every turn: the far model finds the upright turn."""
    from headcast.preprocess.landmarks import detect_faces

    img = photo("obama")
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas = np.full((1200, 1600, 3), 128, np.uint8)
    canvas[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    turned = rotate_image(canvas, 270)
    assert not any(detect_faces(rotate_image(turned, d), far=False) for d in (0, 90, 180, 270))
    assert find_upright_rotation(turned)[0] == 90


def test_two_faces_largest_with_warning_and_face_option(caplog):
    img = photo("two_people")
    for method in ("mediapipe", "dlib"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="headcast.preprocess"):
            chosen = detect_landmarks(img, method)
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert chosen.n_faces == 2 and len(said) == 1 and "2 faces" in said[0] and "--face" in said[0]
            faces = [detect_landmarks(img, method, face=i) for i in (0, 1)]
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(said) == 1  # an explicit face gives no warning
        assert faces[0].points[:, 0].mean() < faces[1].points[:, 0].mean()  # numbered left to right
        areas = [np.prod(f.bbox[2:] - f.bbox[:2]) for f in faces]
        assert chosen.face_index == int(np.argmax(areas))
        np.testing.assert_allclose(chosen.points, faces[chosen.face_index].points)
        other = faces[1 - chosen.face_index]
        assert np.abs(other.points - chosen.points).mean() > 100  # the other person
        with pytest.raises(HeadcastError, match="out of range"):
            detect_landmarks(img, method, face=2)


def test_mediapipe_mapping_agrees_with_dlib(frames):
    """The 478 -> 68 table against dlib on real faces: mean distance / eye-corner distance."""
    images = {name: photo(name) for name in ("obama", "biden", "JianzhuGuo")}
    images["selfie"] = rotate_image(photo("rotated-selfie"), 90)
    images.update({f"mannequin-{n}": frames[n].color for n in ("050", "065")})
    per_point = []
    for name, img in images.items():
        mp = detect_landmarks(img, "mediapipe")
        dl = detect_landmarks(img, "dlib")
        e = np.linalg.norm(mp.points - dl.points, axis=1) / inter_ocular(dl.points)
        assert e.mean() < 0.05, (name, e.mean())   # measured 0.023-0.036
        per_point.append(e)
        assert mp.mesh.shape == (478, 3) and dl.mesh is None
        np.testing.assert_allclose(mp.points, mediapipe_to_ibug68(mp.mesh)[:, :2])
    per_point = np.mean(per_point, axis=0)
    assert per_point[17:].max() < 0.08 and per_point.max() < 0.12, per_point.round(3)


def test_mapping_table():
    assert len(MEDIAPIPE_TO_IBUG68) == 68 and all(0 <= i < 468 for idx in MEDIAPIPE_TO_IBUG68 for i in idx)
    W = mediapipe_to_ibug68_matrix()
    np.testing.assert_allclose(W.sum(1), 1)
    mesh = np.random.default_rng(0).random((478, 3))
    np.testing.assert_allclose(W @ mesh, mediapipe_to_ibug68(mesh))


def test_hidden_landmarks_of_a_turned_head(observations):
    det = observations["030", "mediapipe"].detection
    assert not det.visible[11:17].any()   # the far side of the jaw, behind the nose and cheek
    assert det.visible[:9].all() and det.visible[17:].sum() >= 48
    for n in ("050", "065"):
        assert observations[n, "mediapipe"].detection.visible[17:].all()
    assert detect_landmarks(photo("obama")).visible.all()


# --- 3D landmarks and the face cloud ---------------------------------------------------------

@pytest.mark.parametrize("method", ["mediapipe", "dlib"])
def test_mannequin_preprocess(observations, method):
    for n in FRAMES:
        obs = observations[n, method]
        lm, lm3 = obs.landmarks2d, obs.landmarks3d
        assert lm.shape == (68, 2) and lm3.shape == (68, 3) and obs.valid.shape == (68,)
        assert lm[8, 1] > lm[30, 1] > np.mean(lm[17:27, 1]) and lm[36, 0] < lm[45, 0]  # upright
        assert obs.n_lifted >= 60, (n, method, obs.n_lifted)
        assert np.isnan(lm3[~obs.valid]).all() and np.isfinite(lm3[obs.valid]).all()
        z = lm3[obs.valid, 2]
        assert 0.2 < z.min() and z.max() < 0.4
        # lifted landmarks project back onto their pixels
        uv = obs.frame.K.fx * lm3[obs.valid, :2] / z[:, None] + [obs.frame.K.cx, obs.frame.K.cy]
        np.testing.assert_allclose(uv, lm[obs.valid], atol=1e-9)
        pts = obs.points
        assert 8000 < len(pts) < 30000 and obs.colors.shape == (len(pts), 3) and obs.colors.dtype == np.uint8
        assert 0.2 < pts[:, 2].min() and pts[:, 2].max() < 0.4
        assert z.min() - HULL_MARGIN - 1e-9 <= pts[:, 2].min() and pts[:, 2].max() <= z.max() + HULL_MARGIN + 1e-9
        # every face point is near the landmarks: inside their box widened by the hull margin, and within
        # 6 cm of the nearest one (the middle of the cheek of the three-quarter view is 4-5.5 cm away)
        lo, hi = np.nanmin(lm3, 0) - HULL_MARGIN, np.nanmax(lm3, 0) + HULL_MARGIN
        assert ((pts >= lo) & (pts <= hi)).all()
        d = np.linalg.norm(pts[:, None] - lm3[None, obs.valid], axis=2).min(1)
        assert d.max() < 0.06, d.max()
        c = obs.counts()
        assert c["face_points"] == len(pts) <= c["hull_points"] < c["depth_points"]


def test_forehead_extends_upwards(frames, observations):
    obs = observations["050", "mediapipe"]
    fh = preprocess(frames["050"], forehead=True)
    brow_v = obs.landmarks2d[17:27, 1].min()
    assert (obs.cloud.pixels[:, 1] < brow_v - 10).sum() < 0.01 * len(obs.points)
    assert (fh.cloud.pixels[:, 1] < brow_v - 10).sum() > 3000
    assert len(fh.points) > 1.3 * len(obs.points)
    paper = preprocess(frames["050"], hull_margin=0.0)  # the landmark hull alone keeps less of the face
    assert len(paper.points) < len(obs.points)


def test_lift_window_and_background_rejection():
    K = Intrinsics(300.0, 300.0, 50.0, 50.0, 101, 101)
    depth = np.zeros((101, 101), np.float32)
    depth[:, :60] = 0.30          # the face
    depth[:, 60:] = 2.00          # a wall behind it
    depth[70:, :] = 0.0           # no depth at the bottom
    pts = np.array([[20.0, 20], [59.4, 30], [61.0, 30], [30, 90]])
    lm = lift_landmarks(pts, depth, K, radius=2, inner=np.array([0]))
    assert lm.valid.tolist() == [True, True, True, False]
    np.testing.assert_allclose(lm.points[:3, 2], 0.30)   # the edge and the wall pixel both take the face depth
    assert lm.n_lifted == 3 and np.isnan(lm.points[3]).all()


def test_no_depth_around_the_face(frames):
    fr = frames["050"]
    depth = fr.depth.copy()
    depth[60:300, 20:220] = 0.0
    with pytest.raises(HeadcastError, match="no valid depth around the face"):
        preprocess(RGBDFrame(fr.color, depth, fr.K, fr.rotation, fr.color_path, fr.depth_path))


def test_overlay_png(tmp_path, observations):
    obs = observations["030", "mediapipe"]
    img = observation_overlay(obs)
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[0] >= 640
    path = save_png(tmp_path / "o.png", img)
    assert np.array_equal(iio.imread(path), img)


def test_detect_faces_left_to_right():
    faces = detect_faces(photo("two_people"))
    assert len(faces) == 2 and faces[0].bbox[0] < faces[1].bbox[0] and all(0.5 < f.score <= 1 for f in faces)


def test_point_subset_is_seeded(frames, observations):
    full = observations["065", "mediapipe"]
    a, b, c = (preprocess(frames["065"], max_points=3000, seed=s) for s in (1, 1, 2))
    assert len(a.points) == 3000 and np.array_equal(a.points, b.points) and not np.array_equal(a.points, c.points)
    rows = {tuple(p) for p in full.points}
    assert all(tuple(p) in rows for p in a.points)
