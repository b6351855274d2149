"""What a log file's name says: the marks a rotation and a compressor add to it.

The tailer uses them to pass over rotated copies a glob also matches, ``kvwatch replay`` to label a
rotated copy with the server of the file it was rotated from.
"""

from __future__ import annotations

import re

# A compressor's suffix: such a file is never written to, so never read live.
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip")

# What a rotation adds to a log's name: a count after a dot (``app.log.1``: logrotate, Python's
# RotatingFileHandler), or a date, possibly with a time or a count (``app.log-20261202``: logrotate's
# ``dateext``, the default on RHEL and Fedora; ``app.log.2026-12-02_14-00-00``: Python's
# TimedRotatingFileHandler; ``-2026120214``, ``-20261202-1733097600`` as a ``dateformat`` says).
ROTATION_COUNT = re.compile(r"\d{1,6}")
ROTATION_DATE = re.compile(r"\d{4}[-_.]?\d\d[-_.]?\d\d(?:[-_.T:]?\d{1,10}){0,4}")
