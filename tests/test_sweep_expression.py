"""Per-frame expressions of a sweep (``--expression per-frame``): recovered when the face moves between views,
harmless when it does not; written to poses.json; bad options refused in one line."""

import numpy as np
import pytest
import torch

from headcast.bench.sweep import head_errors
from headcast.bench.sweep_expression import expression_errors
from headcast.cli import main
from headcast.fit.sweep import SweepConfig, reconstruct_sweep
from headcast.io.recon import read_params, read_poses
from headcast.model.layer import HeadLayer
from headcast.synth import read_sample
from headcast.synth.sweep import synth_sweep

VIEWS, YAW, SIZE = 4, 40.0, (320, 240)


def _fits(model, frames, out, views):
    """Both modes on the sweep ``frames``: {mode: (params, vertices, per-frame psi by frame, sweep)}, and the
    ground truth of every view."""
    gts = [read_sample(frames, f"frame-{k:03d}")["gt"] for k in range(views)]
    res = {}
    for mode in ("shared", "per-frame"):
        rec, sw = reconstruct_sweep([frames], model, out / mode,
                                    sweep=SweepConfig(max_frames=views, detail="none", expression=mode))
        verts = rec.params.vertices(HeadLayer(model, dtype=torch.float64))
        res[mode] = (rec, verts, sw.expressions or {i: rec.params.psi for i in sw.used}, sw)
    return res, gts


@pytest.fixture(scope="module")
def changing(ict_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepexpr")
    synth_sweep(ict_model, d / "frames", n=VIEWS, seed=7, yaw_range_deg=YAW, width=SIZE[0], height=SIZE[1],
                expression_change=0.5)
    return _fits(ict_model, d / "frames", d, VIEWS) + (d,)


def test_view_expressions_change_and_are_in_the_ground_truth(ict_model, changing):
    _, gts, _ = changing
    psis = np.stack([g["psi"] for g in gts])
    assert np.abs(psis - psis[0]).max() > 0.2  # the face really moves between views
    assert psis.min() >= 0 and psis.max() <= 1  # within ICT's range


def test_per_frame_recovers_changing_expressions(ict_model, changing):
    res, gts, _ = changing
    truth = [g["psi"] for g in gts]
    err = {m: expression_errors(ict_model, res[m][2], truth) for m in res}
    assert err["per-frame"]["psi_rms_mean"] < err["shared"]["psi_rms_mean"]
    assert err["per-frame"]["face_mm_mean"] < 0.8 * err["shared"]["face_mm_mean"]
    first = res["shared"][3].first
    head = {m: head_errors(ict_model, res[m][1], gts[first]["vertices"])["gt_to_fitted"] for m in res}
    assert head["per-frame"]["mean"] < head["shared"]["mean"]


def test_per_frame_written_to_poses_and_params(ict_model, changing):
    res, _, d = changing
    rec, _, exprs, sw = res["per-frame"]
    poses = read_poses(d / "per-frame")
    for i, f in enumerate(poses):
        assert (f["expression"] is None) == (i not in exprs)
        if f["expression"] is not None:
            assert f["expression"].shape == (ict_model.n_expr,) and np.allclose(f["expression"], exprs[i], atol=1e-6)
    assert np.allclose(read_params(d / "per-frame").psi, exprs[sw.first], atol=1e-6)  # the output frame's
    rep = rec.report["expression"]
    assert rep["mode"] == "per-frame" and rep["frames"] == len(exprs) and rep["spread_rms"] > 0
    assert all(f["expression"] is None for f in read_poses(d / "shared"))


def test_per_frame_on_a_still_subject_costs_little(ict_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepstill")
    synth_sweep(ict_model, d / "frames", n=VIEWS, seed=7, yaw_range_deg=YAW, width=SIZE[0], height=SIZE[1])
    res, gts = _fits(ict_model, d / "frames", d, VIEWS)
    first = res["shared"][3].first
    head = {m: head_errors(ict_model, res[m][1], gts[first]["vertices"])["gt_to_fitted"] for m in res}
    assert head["per-frame"]["mean"] < head["shared"]["mean"] + 0.03  # mm
    assert head["per-frame"]["p95"] < head["shared"]["p95"] + 0.1


def test_bad_expression_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), "--expression", "wobbly"])
    assert e.value.code == 2 and "invalid choice: 'wobbly'" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "frame-000"), "--out", str(tmp_path / "o"),
                 "--expression", "per-frame"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is for a sweep" in err[0] and not (tmp_path / "o").exists()
    assert main(["synth", "--sweep", "3", "--expression-change", "2", "--out", str(tmp_path / "s")]) == 2
    assert "--expression-change" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_read_poses_refuses_a_bad_expression(tmp_path):
    import json

    from headcast.core.errors import HeadcastError

    frame = {"index": 0, "name": "f", "head_to_camera": np.eye(4).tolist(), "expression": [0.1, "a"]}
    (tmp_path / "poses.json").write_text(json.dumps({"frames": [frame]}))
    with pytest.raises(HeadcastError, match="frame 0 expression"):
        read_poses(tmp_path)
    frame["expression"] = [0.1, 0.2]
    (tmp_path / "poses.json").write_text(json.dumps({"frames": [frame]}))
    assert np.allclose(read_poses(tmp_path)[0]["expression"], [0.1, 0.2])


def test_batch_passes_expression_to_sweep_jobs(tmp_path):
    from headcast.batch.worker import check_options
    from headcast.cli import build_parser
    from headcast.core.errors import HeadcastError

    a = build_parser().parse_args(["batch", "reconstruct", "x", "--out", str(tmp_path), "--sweep",
                                   "--expression", "per-frame"])
    assert a.expression == "per-frame" and "expression" in a.batch_options
    check_options("reconstruct", {k: getattr(a, k) for k in a.batch_options})
    with pytest.raises(HeadcastError, match="for --sweep jobs"):
        check_options("reconstruct", {"expression": "per-frame", "sweep": False})
