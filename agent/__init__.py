"""kvwatch's agent: reading sources, keeping stats, serving them; the command line."""

from __future__ import annotations

# The one place the version is written: pyproject.toml reads it from here when a wheel is built.  A
# constant rather than importlib.metadata's lookup, which (with the zip, CSV and email modules it
# loads) cost the daemon 0.8 MiB of memory and a few milliseconds of start-up for one string.
__version__ = "0.1.0"
