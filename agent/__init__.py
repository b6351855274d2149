"""kvwatch's agent: reading sources, keeping stats, serving them; the command line."""

from importlib import metadata

try:
    __version__ = metadata.version("kvwatch")
except metadata.PackageNotFoundError:  # running from a checkout without installation
    __version__ = "0+unknown"
