"""``headcast bench reconstruct | texture | animate | stream | render | mouth``: the benchmarks' front end.

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
    bsub.add_parser("mouth", help="self-reenactment of a synthetic talking subject: PSNR/SSIM of the face and "
                    "the open mouth", arguments=_mouth_arguments)


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
    br.add_argument("--out", help="folder for per-subject results and the summary JSON")
    br.add_argument("--samples", help="the real samples folder (default ../shared/samples)")
    br.add_argument("--figures", help="folder for one overlay figure per real frame (e.g. bench/figures)")
    br.set_defaults(func=run_reconstruct)


def run_reconstruct(a: argparse.Namespace) -> None:
    from headcast.bench.reconstruct import run_reconstruct_bench

    with logs.scoped(show=SHOWN):
        run_reconstruct_bench(n=a.n, noise=a.noise, model_spec=a.model, methods=a.methods.split(","), seed=a.seed,
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
    if a.json:
        print(json.dumps(res, indent=2, default=str))
    print(markdown(res))


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
    if a.json:
        print(json.dumps(res, indent=2))
    print(markdown(res))


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
    if a.json:
        print(json.dumps(res, indent=2))
    print(markdown(res))
