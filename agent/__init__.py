"""kvwatch's agent: reading sources, keeping stats, serving them; the command line."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # ``__version__`` is looked up on first use: importlib.metadata (and the email parser it
    # brings) costs a short replay a good part of its start-up.
    if name != "__version__":
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("kvwatch")
    except metadata.PackageNotFoundError:  # running from a checkout without installation
        version = "0+unknown"
    globals()["__version__"] = version
    return version
