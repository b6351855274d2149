"""Where events go: the numbers per server and their Prometheus view, traces, the replay outputs, the HTTP endpoint."""
