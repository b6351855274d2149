"""``kvwatch check``: validate a configuration and show what each server will be started with.

Beyond the file itself it looks at what a start needs from the filesystem: the
directories of the servers' raw logs and the state directory must exist or be
creatable, and be writable, by the user running the check (run it as the
service's user: ``sudo -u kvwatch kvwatch check``).  Otherwise a server would
fail only when kvwatch starts it.  A followed file (a path without a glob)
that is there must be a regular file this user can read, and a log (not a
compressed copy of one).
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import sys
from pathlib import Path

from agent.commands import EXIT_OK, EXIT_USAGE, add_config_option, load_config
from agent.config import Config
from agent.sources import special_file
from agent.sources.lines import PACKED_OPENING, packed_format


def add_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="validate a configuration and show what each server will be started with",
        description="Validate the configuration; print it resolved, with each server's exact command line and "
        "environment (secrets named, never shown); check that the servers' log directories and the state "
        "directory can be written by this user.  Exit 2 on any problem.",
    )
    add_config_option(check)
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from agent.config import render

    config = load_config(args.config)
    sys.stdout.write(render(config))
    problems = filesystem_problems(config)
    for problem in problems:
        sys.stderr.write(f"kvwatch: {problem}\n")
    return EXIT_USAGE if problems else EXIT_OK


def filesystem_problems(config: Config) -> list[str]:
    """One line (file, key, reason) per place kvwatch will need to write and cannot."""
    places = [("agent.state_dir", config.agent.state_dir, True)]
    for index, server in enumerate(config.servers):
        key = "agent.log_dir" if server.log_file.parent == config.agent.log_dir else f"server[{index}].log_file"
        places.append((key, server.log_file, False))
    problems = []
    for key, path, is_directory in dict.fromkeys(places):
        reason = cannot_write(path, is_directory)
        if reason:
            problems.append(f"{config.path}: {key}: {reason}")
    for index, follow in enumerate(config.follows):
        for number, name in enumerate(follow.paths):
            reason = None if glob.has_magic(name) else cannot_follow(Path(name))
            if reason:
                problems.append(f"{config.path}: follow[{index}].paths[{number}]: {reason}")
    return problems


def cannot_follow(path: Path) -> str | None:
    """Why this user could not read the file ``path`` names; None if it can, or if it is not there yet."""
    if path.is_dir():
        return f'{path} is a directory (follow the files in it with a glob, e.g. "{path / "*.log"}")'
    if path.exists() and not path.is_file():
        return f"{path} is {special_file(path.stat().st_mode)}, not a regular file"
    if path.exists() and not os.access(path, os.R_OK):
        return f"cannot read {path} as {_user()}: permission denied"
    packed = _packed(path)
    if packed is not None:
        return f"{path} is {packed} data, a copy no one writes to: follow its log, and `kvwatch replay` this one"
    return None


def _packed(path: Path) -> str | None:
    """The compression of the regular file ``path`` names, if it is compressed."""
    try:
        with open(path, "rb") as handle:
            return packed_format(handle.read(PACKED_OPENING))
    except OSError:
        return None


def cannot_write(path: Path, is_directory: bool) -> str | None:
    """Why this user could not create or write ``path`` (a file, or a directory to write in); None if it can."""
    if not is_directory and path.exists():
        if path.is_dir():
            return f"{path} is a directory"
        return None if os.access(path, os.W_OK) else f"cannot write {path} as {_user()}: permission denied"
    directory = path if is_directory else path.parent
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create {directory}: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == directory:
            return f"cannot write in {directory} as {_user()}: permission denied"
        return f"cannot create {directory} as {_user()}: permission denied on {existing}"
    return None


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
