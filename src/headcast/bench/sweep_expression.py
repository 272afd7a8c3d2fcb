"""Sweep benchmark, expressions: ``--expression shared`` against ``per-frame`` on synthetic sweeps whose subject
changes expression between views (``headcast bench sweep --expression-change X``).

Each subject turns its head over +-``yaw_range`` degrees in ``views`` views (TrueDepth noise), each view adding
a random expression of weights up to ``change`` of the range (:func:`headcast.synth.sweep.view_expressions`).
Both modes fit the same frames. Figures per mode, over the frames the fit used:
- expression error on the model's own scale: RMS over the components of the frame's fitted psi (the shared
  psi in shared mode) minus the view's true psi;
- the same in millimetres: RMS over the face-region vertices of the expression basis times that difference
  (the displacement the wrong expression puts on the face, identity aside);
- whole head of the output (first) frame against its ground truth, without and with the detail layer
  (:func:`headcast.bench.sweep.head_errors`): median / mean / p95 mm; seconds of the fit.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headcast.bench import finish, machine
from headcast.bench.sweep import head_errors
from headcast.fit.sweep import EXPRESSIONS, SweepConfig, reconstruct_sweep
from headcast.model.head_model import HeadModel
from headcast.model.layer import HeadLayer
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.synth import read_sample
from headcast.synth.sweep import synth_sweep

logger = logging.getLogger(__name__)


def expression_errors(model: HeadModel, fitted: dict[int, np.ndarray], truth: list[np.ndarray]) -> dict:
    """Per frame index of ``fitted`` (psi (E,) by frame): RMS psi error and face displacement error (mm)
    against ``truth`` (each view's psi (E,)); their means over the frames."""
    dirs = model.exprdirs[model.masks["face"]].astype(np.float64)  # (F, 3, E)
    psi = {i: float(np.sqrt(np.mean((p - truth[i]) ** 2))) for i, p in fitted.items()}
    mm = {i: float(np.sqrt(((dirs @ (p - truth[i])) ** 2).sum(1).mean())) * 1000 for i, p in fitted.items()}
    return {"psi_rms": psi, "face_mm": mm, "psi_rms_mean": float(np.mean(list(psi.values()))),
            "face_mm_mean": float(np.mean(list(mm.values())))}


def run_subject(model: HeadModel, seed: int, views: int, yaw_range: float, change: float, size: tuple[int, int],
                max_frames: int, work: Path) -> dict:
    """One synthetic subject changing expression, fitted in both modes."""
    frames = work / f"subject-{seed}"
    synth_sweep(model, frames, n=views, seed=seed, yaw_range_deg=yaw_range, width=size[0], height=size[1],
                expression_change=change)
    gts = [read_sample(frames, f"frame-{k:03d}")["gt"] for k in range(views)]
    out = {"seed": seed}
    for mode in EXPRESSIONS:
        t0 = time.perf_counter()
        rec, sw = reconstruct_sweep([frames], model, work / f"{mode}-{seed}",
                                    sweep=SweepConfig(max_frames=max_frames, expression=mode))
        secs = time.perf_counter() - t0
        fitted = sw.expressions or {i: rec.params.psi for i in sw.used}
        truth = gts[sw.first]["vertices"]
        plain = rec.params.vertices(HeadLayer(model, dtype=torch.float64))
        out[mode] = {"expression": expression_errors(model, fitted, [g["psi"] for g in gts]),
                     "head": head_errors(model, plain, truth)["gt_to_fitted"],
                     "head_detail": head_errors(model, rec.vertices, truth)["gt_to_fitted"], "seconds": secs,
                     "spread_rms": rec.report.get("expression", {}).get("spread_rms")}
        logger.info(f"  subject {seed} {mode}: expression error {out[mode]['expression']['psi_rms_mean']:.3f} "
                    f"({out[mode]['expression']['face_mm_mean']:.2f} mm on the face), whole head mean "
                    f"{out[mode]['head']['mean']:.3f} mm, {secs:.0f} s")
    return out


def run_expression_bench(n: int = 3, views: int = 7, yaw_range: float = 60.0, change: float = 0.5,
                         size: tuple[int, int] = (320, 240), model_spec: str = DEFAULT_MODEL, seed: int = 2100,
                         max_frames: int = SweepConfig.max_frames, out: Path | None = None) -> dict:
    """Run the benchmark (module docstring); log a markdown summary; return (and write to ``out``) the figures."""
    model = resolve_model(model_spec)
    result = {"model": model.name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "views": views,
              "yaw_range_deg": yaw_range, "expression_change": change, "size": list(size), "subjects": []}
    with tempfile.TemporaryDirectory(prefix="headcast-bench-sweepexpr-") as tmp:
        for s in range(seed, seed + n):
            result["subjects"].append(run_subject(model, s, views, yaw_range, change, size, max_frames, Path(tmp)))
    rs = result["subjects"]
    mean = lambda f: float(np.mean([f(r) for r in rs]))  # noqa: E731
    result["summary"] = {mode: {"psi_rms": mean(lambda r: r[mode]["expression"]["psi_rms_mean"]),
                                "face_mm": mean(lambda r: r[mode]["expression"]["face_mm_mean"]),
                                **{f"{k}_{s}": mean(lambda r: r[mode][k][s]) for k in ("head", "head_detail")
                                   for s in ("median", "mean", "p95")},
                                "seconds": mean(lambda r: r[mode]["seconds"])} for mode in EXPRESSIONS}
    return finish(out, "sweep_expression", result, summary_markdown(result))


def summary_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"Model `{result['model']}`; {len(result['subjects'])} synthetic subjects changing expression "
             f"(--expression-change {result['expression_change']:g}), {result['views']} views over "
             f"+-{result['yaw_range_deg']:g} deg, {result['size'][0]}x{result['size'][1]}; {result['machine']}; "
             f"{result['date']}. Means over the subjects.", "",
             "| --expression | psi error (RMS) | face displacement error (mm) | whole head median / mean / p95 (mm) "
             "| + detail (mm) | fit seconds |", "|---|---|---|---|---|---|"]
    for mode in EXPRESSIONS:
        m = s[mode]
        lines.append(f"| {mode} | {m['psi_rms']:.4f} | {m['face_mm']:.2f} | {m['head_median']:.3f} / "
                     f"{m['head_mean']:.3f} / {m['head_p95']:.3f} | {m['head_detail_median']:.3f} / "
                     f"{m['head_detail_mean']:.3f} / {m['head_detail_p95']:.3f} | {m['seconds']:.0f} |")
    return "\n".join(lines)
