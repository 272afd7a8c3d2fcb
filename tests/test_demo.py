"""`headcast demo` end to end: every stage writes its outputs from a synthetic subject."""

import json
import subprocess
import sys


def test_demo_runs_every_stage(tmp_path, headcast_home):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "headcast.cli", "demo", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    for rel in ("input/frame-000_color.png", "input/frame-000_depth_mm.png", "input/frame-000_gt.npz",
                "reconstruction/params.json", "reconstruction/mesh.obj", "reconstruction/fit_report.json",
                "reconstruction/albedo.png", "reconstruction/mesh_textured.obj", "animation/frames.jsonl",
                "animation/animation.mp4", "head.glb"):
        assert (out / rel).is_file(), rel
    rep = json.loads((out / "reconstruction" / "fit_report.json").read_text())
    assert rep["ground_truth_mm"]["surface"]["median"] < 1.0
    assert "vertex error median" in run.stderr and f"headcast view {out / 'head.glb'}" in run.stderr
    assert ".staging-" not in run.stderr and f"into {out / 'reconstruction'} in" in run.stderr  # the paths it will have
    assert (out / "head.glb").read_bytes()[:4] == b"glTF"


def test_demo_sweep_fits_one_head_to_the_views(tmp_path, headcast_home):
    """`demo --sweep 5`: five synthetic views fitted as one head (poses.json marks them registered), then
    textured from every view, animated and exported like the one-frame demo; a bad count is one line."""
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "headcast.cli", "demo", "--out", str(out), "--sweep", "5"],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    for rel in ("input/frame-004_color.png", "reconstruction/poses.json", "reconstruction/fused.ply",
                "reconstruction/albedo.png", "animation/animation.mp4", "head.glb"):
        assert (out / rel).is_file(), rel
    poses = json.loads((out / "reconstruction" / "poses.json").read_text())
    frames = poses["frames"] if isinstance(poses, dict) else poses
    assert len(frames) == 5 and all(f["head_to_camera"] is not None for f in frames)
    assert "views fitted as one head" in run.stderr and "registered points to the mesh" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "headcast.cli", "demo", "--out", str(tmp_path / "d2"), "--sweep", "1"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--sweep" in bad.stderr
    assert not (tmp_path / "d2").exists()
