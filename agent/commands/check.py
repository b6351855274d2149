"""``kvwatch check``: validate a configuration and show what each server will be started with."""

from __future__ import annotations

import argparse
import sys

from agent.commands import EXIT_OK, add_config_option, load_config


def add_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="validate a configuration and show what each server will be started with",
        description="Validate the configuration; print it resolved, with each server's exact command line and "
        "environment (secrets named, never shown).  Exit 2 on any problem.",
    )
    add_config_option(check)
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from agent.config import render

    sys.stdout.write(render(load_config(args.config)))
    return EXIT_OK
