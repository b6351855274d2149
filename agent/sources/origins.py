"""Which writer a line of a log several containers wrote came from.

``kubectl logs -l app=vllm --prefix`` and ``docker compose logs`` interleave the
lines of many pods or services in one stream, each behind its writer's name:
``[pod/NAME/CONTAINER] `` (kubectl), ``NAME  | `` (compose: the name padded to
the longest one, in the service's colour on a terminal).  ``kvwatch replay``
reads each writer's lines as a server of its own, as it would read their files.
"""

from __future__ import annotations

import re

# kubectl's ``[pod/%s/%s] ``: a pod's and a container's names (DNS labels, and the pod's may hold dots).
_KUBECTL = re.compile(r"\[pod/([a-z0-9][a-z0-9.-]{0,252})/([a-z0-9][a-z0-9-]{0,62})\] ", re.ASCII)
# compose's ``%-Ns | ``, coloured or not: a service's container name (``vllm-1``; ``vllm_1`` before Compose v2).
_COMPOSE = re.compile(r"(?:\x1b\[[\d;]*m)?([A-Za-z0-9][\w.-]{0,127}) +\| (?:\x1b\[0m)?", re.ASCII)
# Words a logging format may put before `` | `` itself (``%(levelname)s | %(message)s``): no writer's names.
_LEVEL_WORDS = frozenset(("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"))


def origin_of(line: str) -> str | None:
    """The writer's name a multiplexing tool put before ``line`` (``POD/CONTAINER``, or compose's
    ``NAME``); None for a line without one."""
    if line[:5] == "[pod/":
        m = _KUBECTL.match(line)
        return None if m is None else f"{m.group(1)}/{m.group(2)}"
    if "| " not in line[:160]:
        return None
    m = _COMPOSE.match(line)
    if m is None or m.group(1).upper() in _LEVEL_WORDS:
        return None
    return m.group(1)
