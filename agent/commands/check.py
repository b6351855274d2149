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
import shutil
import stat
import sys
from pathlib import Path

from agent.commands import EXIT_OK, EXIT_USAGE, add_config_option, load_config
from agent.config import NOTHING_TO_READ, Config, FollowConfig
from agent.sources import special_file, unlistable
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
    sys.stdout.writelines(f"{line}\n" for line in found_now(config))
    if config.reads_nothing:
        sys.stderr.write(f"kvwatch: warning: {config.path} {NOTHING_TO_READ}\n")
    problems = filesystem_problems(config)
    for problem in problems:
        sys.stderr.write(f"kvwatch: {problem}\n")
    return EXIT_USAGE if problems else EXIT_OK


# Files a glob picks named by `kvwatch check`; past these, how many more.
FILES_SHOWN = 8


def found_now(config: Config) -> list[str]:
    """What each followed glob, ``[[pods]]`` and ``[[containers]]`` table picks now, and each followed path
    that names no file yet (as comments): a typo shows before kvwatch runs."""
    from agent.sources import containers, pods  # (the directories are scanned only where a table asks)
    from agent.sources.tail import glob_picks

    lines = []
    for index, follow in enumerate(config.follows):
        for key, pattern in follow.placed_paths():
            place = f"# follow[{index}].{key}"
            if not glob.has_magic(pattern):
                if not os.path.lexists(pattern):
                    lines.append(f"{place} names no file now (it is read once one appears)")
                elif key != "lmcache_server_log":
                    lines += lmcache_server_logs_shown(place, [pattern], config.agent.max_line_length)
                continue
            picked = glob_picks(pattern)
            shown = ", ".join(picked[:FILES_SHOWN]) + (
                f" and {len(picked) - FILES_SHOWN} more" if picked[FILES_SHOWN:] else ""
            )
            lines.append(f"{place} picks {shown}" if picked else f"{place} picks no file now (it will as they come)")
            lines += lmcache_server_logs_shown(place, picked[:FILES_SHOWN], config.agent.max_line_length)
    for kind, tables, discover in (
        ("pods", config.pods, pods.discover),
        ("containers", config.containers, containers.discover),
    ):
        for index, table in enumerate(tables):
            found = discover(table)
            lines += [f"# {kind}[{index}] picks {name}: {', '.join(files)}" for name, files in found.items()]
            if not found:
                lines.append(f"# {kind}[{index}] picks nothing now (it will as they come)")
    return lines


def lmcache_server_logs_shown(place: str, paths: list[str], max_line: int) -> list[str]:
    """A comment for each of ``paths`` whose first lines show an LMCache multiprocess server's own log (the daemon
    tells it so and counts its HTTP server's lines as none of vLLM's)."""
    from agent.pipeline import head_is_lmcache_server_log  # (the parsers are loaded only where a follow asks)

    lines = []
    for path in paths:
        try:
            told = os.path.isfile(path) and head_is_lmcache_server_log(path, max_line)
        except OSError:
            continue  # (a file it cannot read is a problem of its own, named above)
        if told:
            lines.append(
                f"{place}: {path} is an LMCache server's own log, by its first lines: its HTTP server's lines count "
                "as none of vLLM's"
            )
    return lines


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
    for index, server in enumerate(config.servers):
        key, program = (f"server[{index}].python", server.python)
        if server.command is not None:
            key, program = (f"server[{index}].command", server.command[0])
        reason = cannot_run(program)
        if reason:
            problems.append(f"{config.path}: {key}: {reason}")
    for index, follow in enumerate(config.follows):
        if follow.journal:
            reason = cannot_read_journal(follow)
            if reason:
                key = "journal_unit" if follow.journal_unit else "journal_match"
                problems.append(f"{config.path}: follow[{index}].{key}: {reason}")
        for key, name in follow.placed_paths():
            reason = cannot_search(name) if glob.has_magic(name) else cannot_follow(Path(name))
            if reason:
                problems.append(f"{config.path}: follow[{index}].{key}: {reason}")
    searched = [(f"pods[{i}].log_dir", table.log_dir) for i, table in enumerate(config.pods)]
    searched += [(f"containers[{i}].root", table.root) for i, table in enumerate(config.containers)]
    for key, directory in searched:
        reason = cannot_search(os.path.join(directory, "*"))
        if reason:
            problems.append(f"{config.path}: {key}: {reason}")
    return problems


def cannot_run(program: str) -> str | None:
    """Why this user could not run ``program`` (a path, or a name looked up on PATH); None if it can."""
    if os.sep not in program:
        return None if shutil.which(program) else f"{program}: not found on PATH ({os.environ.get('PATH', '')})"
    path = Path(program)
    try:
        if not path.exists():
            return f"{program}: no such file (is the server's environment installed there?)"
    except PermissionError:
        return _denied(path)
    if path.is_dir() or not os.access(path, os.X_OK):
        return f"{program}: not an executable file"
    return None


def cannot_read_journal(follow: FollowConfig) -> str | None:
    """Why journalctl, run as this user, would follow none of the follow's journal records; None if it would."""
    from agent.sources import journal  # (journalctl is asked only where a journal is followed)

    reason = cannot_run(journal.program())
    if reason:
        return reason
    said = journal.cannot_read(follow)
    if said is None:
        return None
    return f"journalctl run as {_user()} shows none of the system journal ({said}): add it to systemd-journal"


def cannot_search(pattern: str) -> str | None:
    """Why this user's globbing could not find the files ``pattern`` matches (its directory before the
    first wildcard cannot be listed); None if it can, or if that directory is not there yet."""
    directory = unlistable(pattern)
    if directory is None:
        return None
    blocked = _blocked_ancestor(Path(directory))
    if blocked is not None:
        return f"cannot reach {directory} as {_user()}: permission denied on {blocked}: nothing in it would be found"
    return f"cannot list {directory} as {_user()}: permission denied: nothing in it would be found"


def cannot_follow(path: Path) -> str | None:
    """Why this user could not read the file ``path`` names; None if it can, or if it is not there yet."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None  # not there yet, or a link to a file not there yet: read once it is
    except PermissionError:
        return _denied(path)
    except OSError as exc:  # a loop of symbolic links; a file where a directory of its path should be
        return f"cannot look at {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return f'{path} is a directory (follow the files in it with a glob, e.g. "{path / "*.log"}")'
    if not stat.S_ISREG(mode):
        return f"{path} is {special_file(mode)}, not a regular file"
    if not os.access(path, os.R_OK):
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


def _blocked_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` this user may not enter, if any."""
    return next((directory for directory in reversed(path.parents) if not os.access(directory, os.X_OK)), None)


def _denied(path: Path) -> str:
    """``path`` is behind a directory this user may not enter: which one."""
    blocked = _blocked_ancestor(path)
    return f"cannot reach {path} as {_user()}: permission denied" + (f" on {blocked}" if blocked else "")


def cannot_write(path: Path, is_directory: bool) -> str | None:
    """Why this user could not create or write ``path`` (a file, or a directory to write in); None if it can."""
    try:
        return _cannot_write(path, is_directory)
    except PermissionError:
        return _denied(path)


def _cannot_write(path: Path, is_directory: bool) -> str | None:
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
