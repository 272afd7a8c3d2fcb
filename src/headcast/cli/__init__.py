"""The ``headcast`` command: a thin front end over the pipeline stages, one module per command group
(each with its parsers beside its handlers).

User errors end with one line on stderr and exit status 2; ``--debug`` shows tracebacks. SIGINT, SIGTERM
and SIGHUP end a command with exit status 130 after removing its staged outputs. Progress
lines go through :mod:`logging` to stderr: INFO by default, warnings only with ``-q``, debug detail
with ``-v``. A command's results (JSON, tables) go to stdout.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from typing import Iterator

from headcast.core import memory, threads

threads.apply()  # thread counts into the environment before any library that reads them is loaded

from headcast import __version__  # noqa: E402
from headcast.cli import animate, batch, bench, capture, demo, logs, model, parser, stream  # noqa: E402
from headcast.cli.parser import CommandParser, build_all  # noqa: E402
from headcast.core.errors import HeadcastError  # noqa: E402
from headcast.io.outputs import HELD_SIGNALS, Terminated, install_signal_handlers  # noqa: E402

GROUPS = (model, capture, animate, batch, bench, stream, demo)  # the commands, in the order --help lists them
SUBCOMMANDS = ("model_command", "bench_command", "batch_kind")  # where the groups' sub-commands are parsed to
logger = logging.getLogger(__name__)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``lazy`` leaves each command's options to be added when it is used."""
    p = CommandParser(prog="headcast", description=(
        "An animatable 3D head from one RGB-D photo, driven by any video, on a CPU."))
    p.add_argument("--version", action="version", version=f"headcast {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors (and debug lines, native library logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for group in GROUPS:
        group.add_parser(sub)
    if not lazy:
        build_all(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    program = argv is None  # the process is this command (not a caller in Python)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser.help_cache = parser.HelpCache(argv)
    cached = parser.help_cache.lookup()
    if cached is not None:  # the options' defaults come from the stages; their text is kept to spare imports
        sys.stdout.write(cached)
        sys.exit(0)  # as argparse's --help does
    parser.main_parser = build_parser(lazy=True)
    a, extra = parser.main_parser.parse_known_args(argv)
    if extra:  # named with the command they were given to, not the whole program
        command = " ".join(x for x in (a.command, *(getattr(a, d, None) for d in SUBCOMMANDS)) if x)
        parser.main_parser.exit(2, f"headcast {command}: error: unrecognized arguments: {' '.join(extra)} "
                                   f"(see 'headcast {command} --help')\n")
    if program:
        gc.freeze()  # the modules' objects, loaded by now, are never garbage: the collector stops walking them
        memory.keep_freed_blocks()
    with _signals_unwind(), logs.to_stderr(logs.level(a.verbose, a.quiet, a.debug), native=a.debug):
        logger.debug(threads.apply().describe())
        status = _run(a)
    if program:
        _exit_now(status)
    return status


def _exit_now(status: int) -> None:
    """End the process with ``status`` once the command is done: the exit handlers run (logging, temporary
    folders, Ray), the standard streams are flushed, and the interpreter's teardown of every loaded module
    (about 0.1 s of CPU after a reconstruction) is skipped. Not while another non-daemon thread still runs."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        return
    atexit._run_exitfuncs()
    for out in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            out.flush()
    os._exit(status)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` while the command runs (so staged outputs are removed);
    the previous handlers come back afterwards (main() also runs inside other programs, e.g. tests)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    old = {s: signal.getsignal(s) for s in HELD_SIGNALS}
    install_signal_handlers()
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _run(a: argparse.Namespace) -> int:
    try:
        status = a.func(a)  # None, or a command's own exit status (batch: 1 when a job failed)
    except HeadcastError as e:
        if a.debug:
            raise
        logger.error(f"headcast: error: {e}")
        return 2
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        _drop_stdout()
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C, or Terminated (SIGTERM, SIGHUP)
        logger.error(f"headcast: {e}" if isinstance(e, Terminated) else "headcast: interrupted")
        return 130
    except Exception as e:  # a bug: one line unless --debug
        if a.debug:
            raise
        logger.error(f"headcast: internal error: {e.__class__.__name__}: {e} (run with --debug for the traceback)")
        return 1
    return status or 0


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured in tests)
        pass
