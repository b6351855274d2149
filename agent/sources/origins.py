"""Which writer a line of a log several containers wrote came from.

``kubectl logs -l app=vllm --prefix`` and ``docker compose logs`` interleave the
lines of many pods or services in one stream, each behind its writer's name:
``[pod/NAME/CONTAINER] `` (kubectl), ``NAME  | `` (compose: the name padded to
the longest one, in the service's colour on a terminal); stern prints
``POD CONTAINER `` (``NAMESPACE POD CONTAINER `` when it follows several
namespaces), each name in its pod's colour on a terminal.  A log collector's
records name their pod in fields: Fluent Bit's and Fluentd's Kubernetes
metadata and Cloud Logging's resource labels (``pod_name``,
``namespace_name``, ``container_name``), Vector's (``pod_namespace``), Azure
Monitor's rows (``PodName``, ``PodNamespace``, ``ContainerName``), the
OpenTelemetry Collector's resource attributes (``k8s.pod.name`` ...) and a
Loki query's labels (``pod``, ``namespace``, ``container``) and stern's JSON
output (``podName``, ``containerName``, ``namespace``).  ``kvwatch
replay`` reads each writer's lines as a server of its own, as it would read
their files.
"""

from __future__ import annotations

import re

from agent.config import PodsConfig
from parsers.envelope import tool_prefix


def _field(keys: str) -> re.Pattern[str]:
    """A JSON string field under one of ``keys`` whose value is a Kubernetes name."""
    return re.compile(rf'"(?:{keys})" ?: ?"([a-z0-9][a-z0-9.-]{{0,252}})"', re.ASCII)


# Each name's keys, the collectors' own before a query's bare label (a pod may carry a label ``pod`` too).
_POD = (_field(r"pod_name|PodName|podName|k8s\.pod\.name"), _field("pod"))
_NAMESPACE = (_field(r"namespace_name|pod_namespace|PodNamespace|k8s\.namespace\.name"), _field("namespace"))
_CONTAINER = (_field(r"container_name|ContainerName|containerName|k8s\.container\.name"), _field("container"))


# Lines looked at to tell a multiplexed log: enough to pass over a tool's own first lines (``docker compose
# up``'s ``Attaching to vllm-1``, kubectl's ``error: ...``).
_SAMPLE = 100


def multiplexed(lines: list[str | None]) -> bool:
    """Whether a log's first ``lines`` are those of several writers: most of the first ones name theirs."""
    sample = [line for line in lines[: _SAMPLE * 2] if line][:_SAMPLE]
    named = sum(1 for line in sample if origin_of(line) is not None)
    return named > 0 and 2 * named > len(sample)


def origin_of(line: str) -> str | None:
    """The writer a multiplexing tool put before ``line`` (``POD/CONTAINER``, compose's ``NAME``, stern's
    ``NAMESPACE/POD/CONTAINER`` where it names the namespace), or a collector's record names
    (``NAMESPACE/POD/CONTAINER`` as far as it gives them, the label a ``[[pods]]`` table gives); None for a
    line that names none."""
    if line[:1] == "{":
        return _record_origin(line)
    found = tool_prefix(line)
    if found is None:
        return None
    names = found[1]
    if len(names) == 3:  # stern's namespace, pod and container
        return PodsConfig.name.format(namespace=names[0], pod=names[1], container=names[2])
    return "/".join(names)


def _record_origin(line: str) -> str | None:
    pod = _found(_POD, line)
    if pod is None:
        return None
    namespace, container = _found(_NAMESPACE, line), _found(_CONTAINER, line)
    if namespace and container:
        return PodsConfig.name.format(namespace=namespace, pod=pod, container=container)
    return "/".join(name for name in (namespace, pod, container) if name)  # as much of that label as it gives


def _found(fields: tuple[re.Pattern[str], ...], line: str) -> str | None:
    for field in fields:
        m = field.search(line)
        if m is not None:
            return m.group(1)
    return None
