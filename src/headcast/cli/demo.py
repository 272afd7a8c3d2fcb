"""``headcast demo``: the whole pipeline on a built-in synthetic subject."""

from __future__ import annotations

import argparse
from pathlib import Path

from headcast.cli import logs
from headcast.cli.parser import add_force, param_default


def add_parser(sub) -> None:
    sub.add_parser("demo", help="run the whole pipeline on a built-in synthetic subject", arguments=_arguments)


def _arguments(d: argparse.ArgumentParser) -> None:
    from headcast.demo import run_demo

    d.add_argument("--out", default="headcast-demo", help="output folder (default: ./%(default)s)")
    add_force(d)
    d.add_argument("--model", default=param_default(run_demo, "model_spec"), help="head model (default: %(default)s)")
    d.add_argument("--seed", type=int, default=param_default(run_demo, "seed"), help="subject seed (default: %(default)s)")
    d.add_argument("--video", help="drive the head with this video instead of the built-in motion")
    d.add_argument("--sweep", type=int, default=param_default(run_demo, "sweep"), metavar="N",
                   help="the sweep path: N synthetic views over +-60 degrees fitted as one head (default: one frame)")
    d.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from headcast.demo import run_demo

    # the stages' lines read "demo: ..."; the fit's per-iteration progress is left out
    with logs.scoped(hide=("headcast.fit",), prefix="demo: "):
        run_demo(Path(a.out), model_spec=a.model, seed=a.seed, video=Path(a.video) if a.video else None,
                 sweep=a.sweep, force=a.force)
