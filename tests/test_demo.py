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
    assert (out / "head.glb").read_bytes()[:4] == b"glTF"
