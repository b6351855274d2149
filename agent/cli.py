"""The ``kvwatch`` command line: each command module adds its own subparser and handler.

Only the command being run is imported, so ``kvwatch check`` or ``--version``
does not load the parsers, prometheus_client or OpenTelemetry; ``--help``
and a mistyped command load them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import agent
from agent.commands import EXIT_OK, CommandError

# In the order ``kvwatch --help`` lists them.
COMMANDS = ("replay", "run", "top", "check", "canary", "bench", "dashboards")


class _Version(argparse.Action):
    """``--version``: the version looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args) -> None:
        print(f"kvwatch {agent.__version__}")
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` that one ("": none)."""
    parser = argparse.ArgumentParser(
        prog="kvwatch",
        description="Observe vLLM + LMCache servers: parse their logs into metrics.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name in COMMANDS:
        if only in (None, name):
            importlib.import_module(f"agent.commands.{name}").add_parser(commands)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs when it is plainly one (its first word); "" for ``--version``
    alone, which needs none; None when every command must be known (``--help``, a typo)."""
    if argv and argv[0] in COMMANDS:
        return argv[0]
    if list(argv) == ["--version"]:
        return ""
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_named(argv)).parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other filters do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
