"""Every metric kvwatch exports, gathered from the files that declare them.

Nothing here is used at run time: the docs' metrics reference and the
dashboards are checked against these lists, so a metric added in its
component's file cannot be left out of either.
"""

from __future__ import annotations

from agent.commands import bench, canary, run
from agent.families import Spec
from agent.sinks import otlp, prometheus, traces
from agent.sources import journal, tail
from agent.supervise import gpus, server

# From the log: the same in `kvwatch run` and `kvwatch replay`.
CATALOGUE: tuple[Spec, ...] = prometheus.CATALOGUE
# Only the running agent has these (supervision, tailing, the host).
AGENT_CATALOGUE: tuple[Spec, ...] = (
    *run.BUILD_SPECS,
    *run.INFO_SPECS,
    *server.SPECS,
    *tail.RAW_LOG_SPECS,
    *gpus.SPECS,
    *tail.PATH_SPECS,
    *journal.SPECS,
    *canary.SPECS,
    *bench.SPECS,
)
# Present while tracing is on (run, or replay --traces).
TRACE_CATALOGUE: tuple[Spec, ...] = (*traces.SPECS, *otlp.SPECS)

SPECS: dict[str, Spec] = {spec.name: spec for spec in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE}
