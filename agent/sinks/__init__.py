"""Where events go: the numbers per server and their Prometheus view, traces, the replay outputs, the HTTP endpoint."""

# The catalogue declares the counts its metrics keep from events alone; importing it
# with the package registers them before any stats are made.
from agent.sinks import prometheus as _catalogue  # noqa: F401
