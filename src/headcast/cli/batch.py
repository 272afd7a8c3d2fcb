"""``headcast batch reconstruct | animate | texture``: many inputs at once on Ray (docs/scale.md).

Each batch command takes the single command's own options (copied from its parser, so the defaults are
the same stages' defaults) and passes them to every job. Exit status 1 when any job failed (they are
listed), 2 for a bad batch (options, --out, no inputs).
"""

from __future__ import annotations

import argparse
import logging

from headcast.cli.parser import add_force

logger = logging.getLogger(__name__)
NOT_PASSED = {"help", "out", "force", "inputs", "color", "depth", "intrinsics", "recon_dir",
              "video"}  # per job or the batch's


def add_parser(sub) -> None:
    sub.add_parser("batch", help="run reconstruct, animate or texture over many inputs on Ray (local or a cluster)",
                   arguments=_kinds)


def _kinds(pb: argparse.ArgumentParser) -> None:
    bsub = pb.add_subparsers(dest="batch_kind", required=True, metavar="KIND")
    bsub.add_parser("reconstruct", help="a reconstruction per frame prefix: OUT/<name>/", arguments=_reconstruct)
    bsub.add_parser("animate", help="an animation of one head per video: OUT/<name>/", arguments=_animate)
    bsub.add_parser("texture", help="texture each reconstruction folder (in place, as 'headcast texture')",
                    arguments=_texture)


def _reconstruct(p: argparse.ArgumentParser) -> None:
    from headcast.cli.capture import _reconstruct_arguments

    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="frame prefixes (frame-050 for frame-050_color.png ...), folders of them, @list.txt")
    p.add_argument("--sweep", action="store_true",
                   help="each folder is one job: one head from its frames (as 'headcast reconstruct FOLDER')")
    _common(p, "reconstruct", _reconstruct_arguments)


def _animate(p: argparse.ArgumentParser) -> None:
    from headcast.cli.animate import _animate_arguments

    p.add_argument("recon_dir", help="the reconstruction folder every video drives")
    p.add_argument("inputs", nargs="+", metavar="VIDEO", help="videos, folders of videos, @list.txt")
    _common(p, "animate", _animate_arguments)


def _texture(p: argparse.ArgumentParser) -> None:
    from headcast.cli.capture import _texture_arguments

    p.add_argument("inputs", nargs="+", metavar="RECON_DIR",
                   help="reconstruction folders, folders of them, @list.txt")
    _common(p, "texture", _texture_arguments)


def _common(p: argparse.ArgumentParser, kind: str, single) -> None:
    """The batch's own options, then the single command's (from its parser, minus its inputs and --out)."""
    from headcast.batch.worker import OPTIONS

    p.add_argument("--out", required=True, help=("batch folder: OUT/<name>/ per job and OUT/summary.csv"
                   if kind != "texture" else "batch folder for summary.csv (the textures go into the input folders)")
                   + "; new, empty or an earlier batch's (its .headcast.json of kind batch: a rerun resumes it)")
    add_force(p)
    p.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                                     "(default: an embedded local Ray, stopped at the end)")
    p.add_argument("--workers", type=int, help="workers (default: the CPUs; on a cluster also a cap)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (default %(default)s)")
    p.add_argument("--retries", type=int, default=2,
                   help="times a job is retried when its worker dies (default %(default)s)")
    scratch = argparse.ArgumentParser(add_help=False)
    single(scratch)
    passed = []
    for action in scratch._actions:
        if action.dest not in NOT_PASSED:
            p._add_action(action)
            passed.append(action.dest)
    unknown = set(passed) - set(OPTIONS[kind])
    assert not unknown, f"batch {kind} does not pass {sorted(unknown)} to its jobs"  # keeps worker.OPTIONS in step
    p.set_defaults(func=run_batch, batch_options=tuple(passed) + (("sweep",) if kind == "reconstruct" else ()))


def run_batch(a: argparse.Namespace) -> int:
    from headcast.batch import run

    options = {k: getattr(a, k) for k in a.batch_options}
    rows = run(a.batch_kind, a.inputs, a.out, recon_dir=getattr(a, "recon_dir", None), options=options,
               address=a.address, workers=a.workers, threads=a.threads, force=a.force, retries=a.retries)
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    logger.info(f"headcast: batch {a.batch_kind}: {count['ok']} ok, {count['skipped']} skipped, "
                f"{count['failed']} failed; summary in {a.out}/summary.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    if not failed:
        return 0
    for r in failed:
        logger.error(f"job {r['name']} ({r['input']}) failed: {r['error']}")
    return 1
