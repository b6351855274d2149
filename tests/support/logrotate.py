"""The real logrotate, for the tests of rotated logs (``make test`` installs it when missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# logrotate is in /usr/sbin, which a user's PATH may leave out.
LOGROTATE = shutil.which("logrotate", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")

needs_logrotate = pytest.mark.skipif(LOGROTATE is None, reason="logrotate is missing (make test installs it)")


def logrotate(log: Path, options: str, state: Path) -> None:
    """Rotate ``log`` now (``-f``) with the directives in ``options`` (one a line), keeping 10 copies."""
    assert LOGROTATE is not None
    body = "".join(f"    {line.strip()}\n" for line in options.strip().splitlines())
    conf = state.with_name(state.name + ".conf")
    conf.write_text(f"{log} {{\n    rotate 10\n{body}}}\n")
    subprocess.run([LOGROTATE, "-f", "-s", str(state), str(conf)], check=True, timeout=60)
