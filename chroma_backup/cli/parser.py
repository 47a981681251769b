"""The argument parser: one sub-parser per command module, usage errors as one line and exit 2."""

from __future__ import annotations

import argparse
from types import ModuleType

from chroma_backup.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {text!r}")
    return value


def bool_word(text: str) -> bool:
    word = text.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def server_options(p: argparse.ArgumentParser, prefix: str, what: str) -> None:
    """--[prefix]host/port/ssl: another Chroma server than the configured one."""
    p.add_argument(f"--{prefix}host", metavar="HOST", help=what)
    p.add_argument(f"--{prefix}port", type=port, metavar="PORT", help="port of that server (default CHROMADB_PORT)")
    p.add_argument(f"--{prefix}ssl", type=bool_word, metavar="BOOL", help="use https for that server")


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, with the command list in one aligned column (argparse measures the
    commands without the indent it prints them with, and wraps the longest)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=24, width=100)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(len(name) for name in action.choices)
            self._action_max_length = max(self._action_max_length, longest + self._current_indent + 4)


def build_parser(commands: list[ModuleType], prog: str = "main.py") -> Parser:
    """A parser with each command module's sub-parser (its ``NAME``, ``HELP`` and
    ``add_arguments``); the module's ``run`` is the sub-parser's ``func``."""
    parser = Parser(
        prog=prog,
        description="Versioned backups of ChromaDB collections in PostgreSQL. No COMMAND starts the daemon (run).",
        epilog=f"Run '{prog} COMMAND --help' for a command's options.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, title="commands")
    for module in commands:
        p = sub.add_parser(module.NAME, help=module.SUMMARY, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=module.run, needs_stores=getattr(module, "NEEDS_STORES", True))
    return parser
