"""Parsers built on first use, the stage defaults the options show, and the shared ``--force``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
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


def build_all(parser: argparse.ArgumentParser) -> None:
    """Add every command's options, down the whole tree of sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if isinstance(sub, CommandParser):
                    sub.build()
                build_all(sub)


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
