"""Files kvwatch keeps in its state directory (read positions, server records): replaced whole.

A file is written beside its final name and renamed over it, so a kill at any
moment leaves either the old content or the new, never a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; raises ``OSError``."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
