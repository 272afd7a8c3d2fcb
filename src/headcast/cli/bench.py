"""``headcast bench reconstruct | texture | animate | stream | render | mouth | speed | sweep | batch | views |
expression``: the benchmarks' front end.

A bench's output is its own progress lines (and the model's set-up), not the stages' it runs; the
results go to stdout as markdown (and JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from headcast.cli import logs
from headcast.cli.parser import field_default, param_default

logger = logging.getLogger(__name__)
SHOWN = ("headcast.bench", "headcast.cli", "headcast.model")  # whose progress lines a bench shows


def add_parser(sub) -> None:
    sub.add_parser("bench", help="benchmarks (figures go to bench/RESULTS.md)", arguments=_benches)


def _benches(pb: argparse.ArgumentParser) -> None:
    bsub = pb.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    bsub.add_parser("reconstruct", help="reconstruction error against synthetic ground truth, per method",
                    arguments=_reconstruct_arguments)
    bsub.add_parser("texture", help="albedo and lighting error on synthetic subjects; Loss4 on real frames",
                    arguments=_texture_arguments)
    bsub.add_parser("animate", help="tracking speed and accuracy on videos", arguments=_animate_arguments)
    bsub.add_parser("stream", help="bytes per frame, vertex error, live latency and fps", arguments=_stream_arguments)
    bsub.add_parser("render", help="preview renderer (OpenGL/EGL) against the ray caster", arguments=_render_arguments)
    bsub.add_parser("speed", help="whole commands timed: alone and two at once, --help, animate fps, demo",
                    arguments=_speed_arguments)
    bsub.add_parser("sweep", help="whole-head error of a sweep against one frame; the real TrueDepth sweep",
                    arguments=_sweep_arguments)
    bsub.add_parser("batch", help="headcast batch (1 and 2 workers) against a loop of single commands",
                    arguments=_batch_arguments)
    bsub.add_parser("views", help="held-out views of the real TrueDepth sweep: textured, fitted-light render "
                    "against the photo (L1, SSIM by angle)", arguments=_views_arguments)
    bsub.add_parser("expression", help="expression transfer from synthetic drivers of other identities "
                    "(mouth-corner and lip errors in mm)", arguments=_expression_arguments)
    bsub.add_parser("mouth", help="self-reenactment of a synthetic talking subject: PSNR/SSIM of the face and "
                    "the open mouth", arguments=_mouth_arguments)


def _sweep_arguments(bs: argparse.ArgumentParser) -> None:
    from headcast.bench.sweep import run_sweep_bench

    default = lambda name: param_default(run_sweep_bench, name)  # noqa: E731
    bs.add_argument("--n", type=int, default=default("n"), help="synthetic subjects (default %(default)s)")
    bs.add_argument("--views", type=int, default=default("views"), help="views per sweep (default %(default)s)")
    bs.add_argument("--yaw-range", type=float, default=default("yaw_range"),
                    help="views over +-this many degrees (default %(default)s)")
    bs.add_argument("--bump-mm", type=float, default=default("bump_mm"),
                    help="a bump beyond the model in the ground truth, mm (default %(default)s)")
    bs.add_argument("--max-frames", type=int, default=default("max_frames"),
                    help="frames each sweep fit uses (default %(default)s)")
    bs.add_argument("--seed", type=int, default=default("seed"), help="first subject seed (default %(default)s)")
    bs.add_argument("--expression-change", type=float, default=0.0,
                    help="> 0: instead, --expression shared against per-frame on sweeps whose subject changes "
                         "expression by up to this share of the range per view (0..1; no real sweep, no bump)")
    bs.add_argument("--no-real", action="store_true", help="skip the real TrueDepth sweep")
    bs.add_argument("--out", help="folder for the summary JSON and markdown")
    bs.add_argument("--samples", help="the real samples folder (default ../shared/samples)")
    bs.add_argument("--figures", help="folder for the real sweep's views picture (e.g. bench/figures)")
    bs.set_defaults(func=run_sweep)


def run_sweep(a: argparse.Namespace) -> None:
    from headcast.bench.sweep import run_sweep_bench
    from headcast.bench.sweep_expression import run_expression_bench
    from headcast.io.validate import check_number

    check_number(a.expression_change, "--expression-change", 0, 1)
    _check_out(a, "sweep_expression" if a.expression_change > 0 else "sweep")
    if a.expression_change > 0:
        with logs.scoped(show=SHOWN):
            run_expression_bench(n=a.n, views=a.views, yaw_range=a.yaw_range, change=a.expression_change,
                                 seed=a.seed, max_frames=a.max_frames, out=Path(a.out) if a.out else None)
        return
    with logs.scoped(show=SHOWN):
        run_sweep_bench(n=a.n, views=a.views, yaw_range=a.yaw_range, bump_mm=a.bump_mm, max_frames=a.max_frames,
                        seed=a.seed, real=not a.no_real, samples=Path(a.samples) if a.samples else None,
                        figures=Path(a.figures) if a.figures else None, out=Path(a.out) if a.out else None)


def _check_out(a: argparse.Namespace, name: str) -> None:
    """Refuse ``--out`` before the bench runs when its NAME.json / NAME.md are not an earlier result."""
    from headcast.bench import check_replaceable

    if a.out:
        check_replaceable(Path(a.out), name)


def _reconstruct_arguments(br: argparse.ArgumentParser) -> None:
    from headcast.bench.reconstruct import run_reconstruct_bench
    from headcast.fit.rgbd_fit import METHODS

    default = lambda name: param_default(run_reconstruct_bench, name)  # noqa: E731
    br.add_argument("--n", type=int, default=default("n"), help="subjects (default %(default)s)")
    br.add_argument("--noise", default=default("noise"),
                    help="depth profiles, comma-separated (default %(default)s)")
    br.add_argument("--methods", default=",".join(METHODS), help="methods, comma-separated")
    br.add_argument("--model", default=default("model_spec"), help="head model (default %(default)s)")
    br.add_argument("--seed", type=int, default=default("seed"), help="first subject seed (default %(default)s)")
    br.add_argument("--fit-seed", type=int, default=default("fit_seed"),
                    help="the fit's face-point subsampling seed (default %(default)s)")
    br.add_argument("--out", help="folder for per-subject results and the summary JSON")
    br.add_argument("--samples", help="the real samples folder (default ../shared/samples)")
    br.add_argument("--figures", help="folder for one overlay figure per real frame (e.g. bench/figures)")
    br.set_defaults(func=run_reconstruct)


def run_reconstruct(a: argparse.Namespace) -> None:
    from headcast.bench.reconstruct import run_reconstruct_bench

    _check_out(a, "reconstruct")
    with logs.scoped(show=SHOWN):
        run_reconstruct_bench(n=a.n, noise=a.noise, model_spec=a.model, methods=a.methods.split(","), seed=a.seed,
                              fit_seed=a.fit_seed,
                              out=Path(a.out) if a.out else None, samples=Path(a.samples) if a.samples else None,
                              figures=Path(a.figures) if a.figures else None)


def _texture_arguments(bt: argparse.ArgumentParser) -> None:
    from headcast.bench.texture import run_texture_bench

    default = lambda name: param_default(run_texture_bench, name)  # noqa: E731
    bt.add_argument("--n", type=int, default=default("n"), help="synthetic subjects (default %(default)s)")
    bt.add_argument("--seed", type=int, default=default("seed"), help="first subject seed (default %(default)s)")
    bt.add_argument("--geometry", default=default("geometry"), help="gt (true mesh), fit (reconstructed), or both")
    bt.add_argument("--model", default=default("model_spec"), help="head model (default %(default)s)")
    bt.add_argument("--size", type=int, default=default("size"), help="albedo map side (default %(default)s)")
    bt.add_argument("--albedo-model", help="an albedo model file to test that path")
    bt.add_argument("--no-real", action="store_true", help="skip the real TrueDepth frames")
    bt.add_argument("--figures", help="folder for the real-frame figure")
    bt.add_argument("--out", help="folder for the JSON and markdown summary")
    bt.set_defaults(func=run_texture)


def run_texture(a: argparse.Namespace) -> None:
    from headcast.bench.texture import run_texture_bench

    _check_out(a, "texture")
    with logs.scoped(show=SHOWN):
        run_texture_bench(n=a.n, seed=a.seed, geometry=a.geometry, model_spec=a.model, size=a.size,
                          albedo_model=a.albedo_model, real=not a.no_real,
                          figures=Path(a.figures) if a.figures else None, out=Path(a.out) if a.out else None)


def _animate_arguments(ba: argparse.ArgumentParser) -> None:
    from headcast.animate.fit import TrackConfig

    ba.add_argument("videos", nargs="*", help="videos (default ../shared/samples/video/*.mp4)")
    ba.add_argument("--no-builtin", action="store_true", help="skip the built-in rendered motion")
    ba.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    ba.add_argument("--threshold", type=float, default=field_default(TrackConfig, "threshold"),
                    help="Loss5 threshold (default %(default)s)")
    ba.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ba.set_defaults(func=run_animate)


def run_animate(a: argparse.Namespace) -> None:
    from headcast.bench.animate import markdown, run_animate_bench

    with logs.scoped(show=SHOWN):
        res = run_animate_bench(a.videos or None, threshold=a.threshold, builtin=not a.no_builtin,
                                max_frames=a.max_frames)
    _show(res, markdown(res), a.json)


def _stream_arguments(bs: argparse.ArgumentParser) -> None:
    from headcast.bench.stream import run_stream_bench

    bs.add_argument("--recon", required=True, help="the reconstruction folder to animate")
    bs.add_argument("--work", required=True, help="working folder (tracked animations, streams)")
    bs.add_argument("--model", default=param_default(run_stream_bench, "model_spec"),
                    help="head model (default %(default)s)")
    bs.add_argument("--no-live", action="store_true", help="skip the live loopback runs")
    bs.set_defaults(func=run_stream)


def run_stream(a: argparse.Namespace) -> None:
    from headcast.bench.stream import run_stream_bench, summary_markdown

    with logs.scoped(show=SHOWN):
        res = run_stream_bench(Path(a.recon), Path(a.work), model_spec=a.model, live=not a.no_live)
    print(summary_markdown(res))


def _render_arguments(br2: argparse.ArgumentParser) -> None:
    from headcast.bench.render import run

    default = lambda name: param_default(run, name)  # noqa: E731
    br2.add_argument("--size", type=int, default=default("size"), help="image side in pixels (default %(default)s)")
    br2.add_argument("--frames", type=int, default=default("frames"), help="frames timed (default %(default)s)")
    br2.add_argument("--texture", type=int, default=default("tex"), help="texture side in texels (default %(default)s)")
    br2.add_argument("--model", default=default("model"), help="head model (default %(default)s)")
    br2.add_argument("--json", action="store_true", help="print the figures as JSON too")
    br2.set_defaults(func=run_render)


def run_render(a: argparse.Namespace) -> None:
    from headcast.bench.render import markdown, run

    with logs.scoped(show=SHOWN):
        res = run(a.size, a.frames, a.texture, a.model)
    _show(res, markdown(res), a.json)


def _speed_arguments(bs: argparse.ArgumentParser) -> None:
    from headcast.bench.speed import run_speed_bench

    default = lambda name: param_default(run_speed_bench, name)  # noqa: E731
    bs.add_argument("--work", required=True, help="working folder (synthetic frame, reconstructions, animations)")
    bs.add_argument("--video", help="the clip to animate (default ../shared/samples/video/wojtek.mp4)")
    bs.add_argument("--frames", type=int, default=default("frames"), help="frames of the clip animated (default %(default)s)")
    bs.add_argument("--parts", default=default("parts"), help="which timings, comma-separated (default %(default)s)")
    bs.add_argument("--model", default=default("model_spec"), help="head model (default %(default)s)")
    bs.add_argument("--json", action="store_true", help="print the figures as JSON too")
    bs.set_defaults(func=run_speed)


def run_speed(a: argparse.Namespace) -> None:
    from headcast.bench.speed import markdown, run_speed_bench
    from headcast.cli import parser

    paths = parser.command_paths(parser.main_parser) if parser.main_parser is not None else [[]]
    with logs.scoped(show=SHOWN):
        res = run_speed_bench(Path(a.work), paths, video=Path(a.video) if a.video else None, frames=a.frames,
                              parts=a.parts, model_spec=a.model)
    _show(res, markdown(res), a.json)


def _batch_arguments(bb: argparse.ArgumentParser) -> None:
    from headcast.bench.batch import run_batch_bench

    default = lambda name: param_default(run_batch_bench, name)  # noqa: E731
    bb.add_argument("--work", required=True, help="a new or empty working folder (the jobs' outputs)")
    bb.add_argument("--kinds", default=",".join(default("kinds")), help="animate, reconstruct (default %(default)s)")
    bb.add_argument("--workers", default=",".join(map(str, default("workers"))),
                    help="worker counts to run, comma-separated (default %(default)s)")
    bb.add_argument("--repeat", type=int, default=default("repeat"),
                    help="each shared video / TrueDepth frame this many times (default %(default)s)")
    bb.add_argument("--max-frames", type=int, default=default("max_frames"),
                    help="animate: the first N frames of each video, 0 the whole videos (default %(default)s)")
    bb.add_argument("--method", default=default("method"), help="reconstruct method (default %(default)s)")
    bb.add_argument("--video", action="store_true", help="animate: also write the preview videos")
    bb.add_argument("--no-loop", action="store_true", help="skip the loop of single commands")
    bb.add_argument("--rounds", type=int, default=default("rounds"),
                    help="run the batch rows this many times, alternating their order, and give the median "
                         "ratios (default %(default)s)")
    bb.add_argument("--out", help="folder for batch.json and batch.md")
    bb.add_argument("--json", action="store_true", help="print the figures as JSON too")
    bb.set_defaults(func=run_batch)


def run_batch(a: argparse.Namespace) -> None:
    from headcast.bench import write_results
    from headcast.bench.batch import markdown, run_batch_bench

    _check_out(a, "batch")
    with logs.scoped(show=SHOWN):
        res = run_batch_bench(Path(a.work), kinds=tuple(a.kinds.split(",")),
                              workers=tuple(int(w) for w in a.workers.split(",")), repeat=a.repeat,
                              max_frames=a.max_frames, method=a.method, video=a.video, loop=not a.no_loop,
                              rounds=a.rounds)
    if a.out:
        write_results(Path(a.out), "batch", res, markdown(res))
    _show(res, markdown(res), a.json)


def _views_arguments(bv: argparse.ArgumentParser) -> None:
    from headcast.bench.views import run_views_bench

    default = lambda name: param_default(run_views_bench, name)  # noqa: E731
    bv.add_argument("--frames", nargs="*", help="sweep frames to compare (default: every frame in the sweep)")
    bv.add_argument("--source", default=default("source"),
                    help="the frame the head is built from, or 'sweep' for the whole sweep (default %(default)s)")
    bv.add_argument("--work", required=True, help="folder for the reconstruction and the picture (reused when present)")
    bv.add_argument("--texture-size", type=int, default=default("size"), help="albedo side in texels (default %(default)s)")
    bv.add_argument("--figures", help="folder for the views picture instead of --work (e.g. bench/figures)")
    bv.add_argument("--json", action="store_true", help="print the figures as JSON too")
    bv.set_defaults(func=run_views)


def run_views(a: argparse.Namespace) -> None:
    from headcast.bench.views import markdown, run_views_bench

    with logs.scoped(show=SHOWN):
        res = run_views_bench(Path(a.work), a.source, a.frames or None, a.texture_size,
                              figures=Path(a.figures) if a.figures else None)
    _show(res, markdown(res), a.json)


def _expression_arguments(be: argparse.ArgumentParser) -> None:
    from headcast.bench.expression import run_expression_bench

    default = lambda name: param_default(run_expression_bench, name)  # noqa: E731
    be.add_argument("--drivers", type=int, default=default("drivers"), help="synthetic drivers, 1..50 (default %(default)s)")
    be.add_argument("--spread", type=float, default=default("spread"),
                    help="identity spread in standard deviations (default %(default)s)")
    be.add_argument("--max-frames", type=int, help="only the first N frames of each driver")
    be.add_argument("--json", action="store_true", help="print the figures as JSON too")
    be.set_defaults(func=run_expression)


def run_expression(a: argparse.Namespace) -> None:
    from headcast.bench.expression import markdown, run_expression_bench

    with logs.scoped(show=SHOWN):
        res = run_expression_bench(a.drivers, spread=a.spread, max_frames=a.max_frames)
    _show(res, markdown(res), a.json)


def _mouth_arguments(bm: argparse.ArgumentParser) -> None:
    from headcast.bench.mouth import run_mouth_bench

    default = lambda name: param_default(run_mouth_bench, name)  # noqa: E731
    bm.add_argument("--model", default=default("model"), help="head model (default %(default)s)")
    bm.add_argument("--seed", type=int, default=default("seed"), help="subject seed (default %(default)s)")
    bm.add_argument("--size", type=int, default=default("size"), help="video side in pixels (default %(default)s)")
    bm.add_argument("--duration", type=float, default=default("duration"),
                    help="seconds of the built-in motion (default %(default)s)")
    bm.add_argument("--figures", help="folder for the strip of mouth-open frames (e.g. bench/figures)")
    bm.add_argument("--json", action="store_true", help="print the figures as JSON too")
    bm.set_defaults(func=run_mouth)


def run_mouth(a: argparse.Namespace) -> None:
    from headcast.bench.mouth import markdown, run_mouth_bench

    with logs.scoped(show=SHOWN):
        res = run_mouth_bench(a.model, a.seed, a.size, a.duration, Path(a.figures) if a.figures else None)
    _show(res, markdown(res), a.json)


def _show(res: dict, markdown: str, as_json: bool) -> None:
    """A bench's figures on stdout: as JSON first with ``--json`` (what JSON cannot hold as its text), then the
    markdown."""
    if as_json:
        print(json.dumps(res, indent=2, default=str))
    print(markdown)
