"""Parsers built on first use, the stage defaults the options show, and the shared ``--force``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from typing import Any, Callable


class CommandParser(argparse.ArgumentParser):
    """A command's parser whose options are added when it is first used, by ``arguments(parser)``.

    The options' defaults come from the stages that own them, so adding them imports those stages;
    ``headcast --help`` and every other command then import only what they need.
    """

    def __init__(self, *args, arguments: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def build(self) -> CommandParser:
        """Add the options now (once)."""
        if self._arguments is not None:
            add, self._arguments = self._arguments, None
            add(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.build()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.build()
        return super().format_usage()

    def format_help(self) -> str:
        self.build()
        return super().format_help()

    def error(self, message: str):
        """A usage error as one line on stderr (exit status 2), pointing at the command's --help."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def print_help(self, file=None) -> None:
        text = self.format_help()
        if help_cache is not None:
            help_cache.store(text)
        self._print_message(text, sys.stdout if file is None else file)


help_cache: HelpCache | None = None  # set by the command line's main() for its own argv
main_parser: argparse.ArgumentParser | None = None  # the parser main() built (for commands that list commands)


def build_all(parser: argparse.ArgumentParser) -> None:
    """Add every command's options, down the whole tree of sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if isinstance(sub, CommandParser):
                    sub.build()
                build_all(sub)


def command_paths(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Every command path under ``parser`` (``[]`` for itself, ``["bench", "speed"]``, ...), options built."""
    build_all(parser)
    out = [[]]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [[name] + p for p in command_paths(sub)]
    return out


def add_force(parser: argparse.ArgumentParser, file: bool = False) -> None:
    """``--force``: what it replaces, said the same way by every command that writes (docs/guarantees.md)."""
    what = ("replace an existing output file (headcast's own earlier output); other files are never touched"
            if file else "replace headcast's own earlier output; other files are never touched")
    parser.add_argument("--force", action="store_true", help=what)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (its owner's value, never a copy)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default_factory() if f.default is dataclasses.MISSING else f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def param_default(func: Callable, name: str) -> Any:
    """The default of ``func``'s parameter ``name`` (for stages whose defaults are their signature's)."""
    default = inspect.signature(func).parameters[name].default
    if default is inspect.Parameter.empty:
        raise KeyError(f"{func.__qualname__}'s parameter {name!r} has no default")
    return default


class HelpCache:
    """Help texts of commands, kept on disk so ``headcast CMD --help`` need not import the stages whose
    defaults the text shows. An entry is valid for one source tree (the sizes and modification times of
    headcast's modules), one version and one terminal width; anything else rebuilds the text."""

    def __init__(self, argv: list[str]):
        flags = ("-h", "--help")
        cut = argv.index("--") if "--" in argv else len(argv)
        self.key = None
        if any(f in argv[:cut] for f in flags):
            where = min(argv.index(f) for f in flags if f in argv[:cut])
            path = [t for t in argv[:where] if not t.startswith("-")]
            self.key = " ".join(path) if path else None

    def lookup(self) -> str | None:
        """The cached help text for this command line, or None."""
        if self.key is None:
            return None
        entry = self._load().get(self.key)
        return entry["text"] if entry and entry.get("stamp") == self._stamp() else None

    def store(self, text: str) -> None:
        """Keep ``text`` as this command line's help (silently skipped where the cache cannot be written)."""
        if self.key is None:
            return
        import json
        import os

        data = self._load()
        data[self.key] = {"stamp": self._stamp(), "text": text}
        try:
            path = self._path()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError:
            pass

    @staticmethod
    def _path():
        from headcast.core.paths import home

        return home() / "help-cache.json"

    def _load(self) -> dict:
        import json

        try:
            data = json.loads(self._path().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _stamp() -> str:
        import hashlib
        import shutil
        from pathlib import Path

        import headcast

        h = hashlib.sha256(f"{headcast.__version__} {shutil.get_terminal_size().columns}".encode())
        for p in sorted(Path(headcast.__file__).parent.rglob("*.py")):
            st = p.stat()
            h.update(f"{p} {st.st_size} {st.st_mtime_ns}\n".encode())
        return h.hexdigest()
