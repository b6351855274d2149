"""One module per kvwatch command: each adds its own subparser (``add_parser``) and owns its handler.

A handler returns the exit status, or raises :class:`CommandError`, which the
command line prints as ``kvwatch: <message>``.  What every command shares is
here: the exit statuses, the ``--config`` option, loading the configuration.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem, or could not finish
EXIT_USAGE = 2  # bad arguments, inputs or configuration, as argparse does


class CommandError(Exception):
    """A command cannot go on; ``status`` is its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def add_config_option(parser: argparse.ArgumentParser, help_: str | None = None, default: bool = True) -> None:
    """``--config``/``-c``; by default it names the system-wide configuration file."""
    from agent.config import DEFAULT_PATH

    parser.add_argument(
        "--config",
        "-c",
        default=DEFAULT_PATH if default else None,
        metavar="FILE",
        help=help_ or f"default {DEFAULT_PATH}",
    )


def load_config(path: str) -> Config:
    """The configuration at ``path``; a problem (file, key and reason) becomes a :class:`CommandError`."""
    from agent import config

    try:
        return config.load(path)
    except config.ConfigError as exc:
        raise CommandError(str(exc)) from None
