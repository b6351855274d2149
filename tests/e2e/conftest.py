"""Each real-server test gets a temporary directory of its own, removed after it.

vLLM binds its ZeroMQ sockets under the temporary directory and leaves them
there when it is stopped: without this, every run of the suite left some dozens
of socket files in /tmp.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def own_temporary_directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # Short (under /tmp, not the test's own directory): a socket's path is at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="kvwatch-e2e-")
    monkeypatch.setenv("TMPDIR", directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
