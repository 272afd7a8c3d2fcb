"""The command line's one log channel: a stderr handler on the ``headcast`` logger.

Lines are the messages as they are: the stages' (``landmarks: ...``) and the command's own
(``headcast: wrote ...``). A warning that does not say where it is from is shown as
``headcast: warning: ...`` (an error as ``headcast: error: ...``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

ROOT = "headcast"
_current: logging.Handler | None = None  # the handler main() installed, for scoped()


def level(verbose: bool = False, quiet: bool = False, debug: bool = False) -> int:
    """INFO by default, WARNING with ``-q``, DEBUG with ``-v`` or ``--debug``."""
    if verbose or debug:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


class LineFormatter(logging.Formatter):
    """One line per record: the message, with ``prefix`` and the warning/error label where it has none."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        msg = record.message
        if self.prefix and not msg.startswith((self.prefix, "headcast:")):
            msg = self.prefix + msg
        if record.levelno >= logging.WARNING and not msg.startswith("headcast:"):
            msg = f"headcast: {'warning' if record.levelno < logging.ERROR else 'error'}: {msg}"
        return msg


class Scope(logging.Filter):
    """Lets INFO and DEBUG lines through only from loggers under ``show`` (when given) and not under
    ``hide``; warnings and errors always pass."""

    def __init__(self, show: tuple[str, ...] = (), hide: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.show, self.hide = show, hide

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        under = lambda names: any(record.name == n or record.name.startswith(n + ".") for n in names)  # noqa: E731
        return not under(self.hide) and (not self.show or under(self.show))


@contextlib.contextmanager
def to_stderr(at: int, native: bool = False) -> Iterator[logging.Handler]:
    """For the block, write the ``headcast`` loggers' records at level ``at`` and above to stderr; with
    ``native`` MediaPipe's native log lines are shown too (``headcast.preprocess.native``)."""
    global _current
    root = logging.getLogger(ROOT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    old_level, old_current = root.level, _current
    root.addHandler(handler)
    root.setLevel(at)
    _current = handler
    try:
        with _native_logs(native):
            yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        _current = old_current


@contextlib.contextmanager
def _native_logs(shown: bool) -> Iterator[None]:
    if not shown:
        yield
        return
    from headcast.preprocess.native import NATIVE_LOGS_ENV

    old = os.environ.get(NATIVE_LOGS_ENV)
    os.environ[NATIVE_LOGS_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(NATIVE_LOGS_ENV, None)
        else:
            os.environ[NATIVE_LOGS_ENV] = old


@contextlib.contextmanager
def scoped(show: tuple[str, ...] = (), hide: tuple[str, ...] = (), prefix: str = "") -> Iterator[None]:
    """For the block, show progress lines only from the loggers under ``show`` (when given) and not under
    ``hide`` (a command choosing what its output holds), and put ``prefix`` before lines that start neither
    with it nor with ``headcast:``. Filtering is off at DEBUG level (``-v``, ``--debug``: everything shows).
    A no-op outside :func:`to_stderr`."""
    handler = _current
    if handler is None:
        yield
        return
    scope = Scope(show, hide)
    if logging.getLogger(ROOT).getEffectiveLevel() > logging.DEBUG:
        handler.addFilter(scope)
    fmt = handler.formatter
    old_prefix = getattr(fmt, "prefix", "")
    if isinstance(fmt, LineFormatter) and prefix:
        fmt.prefix = prefix
    try:
        yield
    finally:
        handler.removeFilter(scope)
        if isinstance(fmt, LineFormatter):
            fmt.prefix = old_prefix
