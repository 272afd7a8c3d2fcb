"""The mouth interior: ICT's socket, gums, tongue and teeth and the FLAME proxy; rig, file, GLB, preview."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from headcast.core.params import HeadParams, pose_slice
from headcast.model.cavity import interior_of, lip_ring
from headcast.model.head_model import load_model, save_model
from headcast.model.layer import HeadLayer
from headcast.model.lbs import batch_rodrigues
from headcast.model.skinning import FixedShape
from test_export import khronos_validate


def _teeth(model):
    """Upper and lower teeth vertex ids of the model's interior (ICT: by skinning; proxy: by part)."""
    inner = interior_of(model)
    if "teeth" in inner.names:
        ids = inner.part_vertices("teeth")
        lower = inner.lbs_weights[ids, 2] > 0.5
        return ids[~lower], ids[lower]
    return inner.part_vertices("upper_teeth"), inner.part_vertices("lower_teeth")


def _posed(model, theta=None, psi=None):
    theta = np.zeros(15) if theta is None else theta
    psi = np.zeros(model.n_expr) if psi is None else psi
    layer = HeadLayer(model, dtype=torch.float64)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    with torch.no_grad():
        out = layer(t(np.zeros(model.n_shape)), t(psi), t(theta))
    inner = FixedShape(model, np.zeros(model.n_shape), interior_of(model), dtype=np.float64).vertices(theta, psi)[0]
    return inner[model.n_vertices:], out.joints[0].numpy()


def _check_rig(model):
    """Lower teeth turn rigidly with the jaw about its joint, upper teeth stay; a neck turn moves both rigidly."""
    upper, lower = _teeth(model)
    rest, joints = _posed(model)
    jaw = np.zeros(15)
    jaw[pose_slice("jaw")] = [0.3, 0.0, 0.0]
    opened, _ = _posed(model, jaw)
    R = batch_rodrigues(torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64))[0].numpy()
    expect = (rest[lower] - joints[2]) @ R.T + joints[2]
    assert np.abs(opened[lower] - expect).max() < 1e-6
    assert np.linalg.norm(opened[lower] - rest[lower], axis=1).min() > 1e-3  # they did move
    assert np.abs(opened[upper] - rest[upper]).max() < 1e-9
    neck = np.zeros(15)
    neck[pose_slice("neck")] = [0.0, 0.4, 0.0]
    turned, _ = _posed(model, neck)
    R = batch_rodrigues(torch.tensor([[0.0, 0.4, 0.0]], dtype=torch.float64))[0].numpy()
    for ids in (upper, lower):
        assert np.abs(turned[ids] - ((rest[ids] - joints[1]) @ R.T + joints[1])).max() < 1e-6


def test_ict_interior_parts_and_rig(ict_model):
    inner = ict_model.interior
    assert inner is not None and inner.names == ("socket", "gums_tongue", "teeth")
    assert 2000 < len(inner.faces) < 18520 / 2  # upstream's 18520 triangles, decimated for the preview
    assert ict_model.meta["version"].endswith("headcast-2")
    _check_rig(ict_model)
    # ICT's own expression shapes move the interior: jawOpen drops the lower teeth, not the upper ones
    upper, lower = _teeth(ict_model)
    psi = np.zeros(ict_model.n_expr)
    psi[ict_model.meta["expression_names"].index("jawOpen")] = 1.0
    rest, _ = _posed(ict_model)
    opened, _ = _posed(ict_model, psi=psi)
    assert np.median(rest[lower, 1] - opened[lower, 1]) > 0.02
    assert np.abs(opened[upper] - rest[upper]).max() < 5e-4
    # render-only: the fitted head's vertices and landmarks are not the interior's
    assert ict_model.n_vertices < 26719 - inner.n_vertices


def test_interior_survives_the_model_file(ict_model, tmp_path):
    save_model(ict_model, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz").interior
    assert back.names == ict_model.interior.names
    for k in ("v_template", "faces", "exprdirs", "lbs_weights", "colors", "part"):
        assert np.array_equal(getattr(back, k), getattr(ict_model.interior, k))
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "interior_colors"}
    with open(tmp_path / "bad.npz", "wb") as fh:
        np.savez(fh, **arrays)
    from headcast.core.errors import HeadcastError

    with pytest.raises(HeadcastError, match="lacks interior arrays: interior_colors"):
        load_model(tmp_path / "bad.npz")


def test_flame_fixture_gets_a_cavity_and_teeth_on_its_lip_ring(flame_model):
    assert flame_model.interior is None
    inner = interior_of(flame_model)
    assert inner.names == ("cavity", "upper_teeth", "lower_teeth")
    ring = lip_ring(flame_model)
    v = flame_model.v_template
    cav = inner.v_template[inner.part_vertices("cavity")]
    # the first ring sits just behind the lip ring, the rest deeper, all behind the lips' front
    assert np.abs(cav[: len(ring), 0] - v[ring, 0]).max() < 1e-6
    lips_z = flame_model.landmark_vertices()[48:68, 2].max()
    assert cav[:, 2].max() < lips_z and cav[:, 2].min() < v[ring, 2].min() - 0.03
    teeth = inner.v_template[np.concatenate(_teeth(flame_model))]
    assert teeth[:, 2].max() < v[ring, 2].max() and np.abs(teeth[:, 0]).max() < np.abs(v[ring, 0]).max()
    _check_rig(flame_model)


def _mouth_pixels(model, with_interior: bool) -> tuple[np.ndarray, np.ndarray]:
    """The 9x9 pixel box at the open mouth's centre and the cheek's box in a 256^2 preview."""
    from headcast.animate.preview import HeadView
    from headcast.animate.subject import Subject
    from headcast.core.camera import project

    view = HeadView(Subject(HeadParams(np.zeros(model.n_shape), np.zeros(model.n_expr), np.zeros(15), 1.0,
                                       np.zeros(3), model.name), model, None), 256)
    psi = np.zeros((1, model.n_expr))
    psi[0, model.meta["expression_names"].index("jawOpen")] = 1.0
    v = view.vertices(np.zeros((1, 15)), psi)[0]
    if not with_interior:
        view.renderer.parts.release()
        view.renderer.parts = None
    img = view.render(v).astype(np.float64)
    lm = model.landmark_vertices(v[: model.n_vertices])
    mouth = project(lm[[62, 66]].mean(0)[None], view.K)[0].round().astype(int)
    cheek = project(lm[[2, 31]].mean(0)[None], view.K)[0].round().astype(int)
    box = lambda p: img[p[1] - 4:p[1] + 5, p[0] - 4:p[0] + 5].reshape(-1, 3)  # noqa: E731
    view.release()
    return box(mouth), box(cheek)


def test_preview_shows_a_dark_cavity_in_the_open_mouth(ict_model):
    mouth, cheek = _mouth_pixels(ict_model, True)
    bare, _ = _mouth_pixels(ict_model, False)
    assert mouth.mean() < 0.5 * cheek.mean()  # dark, not skin
    assert mouth[:, 0].mean() > mouth[:, 2].mean()  # reddish (cavity, tongue), not the grey background
    assert np.abs(mouth - bare).mean() > 10  # the interior is what the mouth shows


def test_glb_has_interior_primitives_and_validates(ict_model, tmp_path):
    from headcast.export.gltf import GlbHead, build_glb
    from headcast.io.gltf import read_glb

    path = Path(tmp_path / "head.glb")
    path.write_bytes(build_glb(GlbHead(ict_model, np.zeros(ict_model.n_shape))))
    doc, _ = read_glb(path)
    prims = doc["meshes"][0]["primitives"]
    assert [doc["materials"][p["material"]]["name"] for p in prims[1:]] == [
        "interior_socket", "interior_gums_tongue", "interior_teeth"]
    assert all(len(p["targets"]) == ict_model.n_expr for p in prims) and all("COLOR_0" in p["attributes"] for p in prims[1:])
    issues = khronos_validate(path)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_synth_frames_show_the_interior_in_an_open_mouth(ict_model):
    from headcast.synth import default_intrinsics, random_subject, render_rgbd
    from headcast.synth.render import HEAD, MOUTH

    subj = random_subject(ict_model, 0, expression={"jawOpen": 0.9}, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0,
                          distance=0.4)
    f = render_rgbd(ict_model, subj, default_intrinsics(320, 240), profile="none", background=False)
    mouth, head = f.labels == MOUTH, f.labels == HEAD
    assert mouth.sum() > 30  # teeth and cavity, ray-cast like the head (colour and depth)
    assert (f.depth[mouth] > 0).all() and f.depth[mouth].mean() > f.depth[head & f.face_mask].min()
    assert f.color[mouth].mean() < 0.8 * f.color[head].mean()  # the cavity is darker than the skin


def test_flame_glb_carries_the_proxy_and_validates(flame_model, tmp_path):
    from headcast.export.gltf import GlbHead, build_glb
    from headcast.io.gltf import read_glb

    path = tmp_path / "flame.glb"
    path.write_bytes(build_glb(GlbHead(flame_model, np.zeros(flame_model.n_shape))))
    doc, _ = read_glb(path)
    names = [doc["materials"][p["material"]]["name"] for p in doc["meshes"][0]["primitives"][1:]]
    assert names == ["interior_cavity", "interior_upper_teeth", "interior_lower_teeth"]
    issues = khronos_validate(path)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_gaze_follows_the_iris_points_on_a_real_clip(ict_model):
    """On a real driver (d6: big eye movements), the tracked left-eye yaw and pitch rise with the detected
    iris centre's offset from the eye corners' centre to the image right (the subject's left, +x) and
    down (a positive rotation about x turns the gaze down)."""
    from headcast.animate.pipeline import detect_video, track

    det = detect_video(shared_path("samples", "video", "d6.mp4"), 100)
    trk = track(ict_model, det.observations, det.info.fps)
    rel, eye = [], []
    for o, f in zip(det.observations, trk.frames):
        if o is None or o.pupils is None:
            continue
        width = np.linalg.norm(o.landmarks[45] - o.landmarks[42])
        rel.append((o.pupils[0] - o.landmarks[42:48].mean(0)) / width)
        eye.append(f.theta[pose_slice("left_eye")])
    rel, eye = np.array(rel), np.array(eye)
    assert np.corrcoef(rel[:, 0], eye[:, 1])[0, 1] > 0.5  # image right <-> yaw towards +x
    assert np.corrcoef(rel[:, 1], eye[:, 0])[0, 1] > 0.3  # image down <-> rotation about +x
