"""Which writer a line of a multiplexed log names (kubectl logs --prefix, docker compose logs)."""

from __future__ import annotations

import pytest

from agent.sources.origins import multiplexed, origin_of

LINE = "(APIServer pid=1) INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."


@pytest.mark.parametrize(
    ("line", "writer"),
    [
        (f"[pod/vllm-0/vllm] {LINE}", "vllm-0/vllm"),
        (f"[pod/vllm-7d9f8b6c5-x2k4p/lmcache-server] {LINE}", "vllm-7d9f8b6c5-x2k4p/lmcache-server"),
        (f"[pod/vllm.example-0/vllm] 2026-12-04T10:00:00.123456789Z {LINE}", "vllm.example-0/vllm"),
        (f"vllm-1  | {LINE}", "vllm-1"),
        (f"vllm_1 | {LINE}", "vllm_1"),  # Compose v1
        (f"16:18:29 web.1  | {LINE}", "web.1"),  # Foreman, honcho
        (f"0|vllm     | {LINE}", "0|vllm"),  # pm2: each instance its id
        (f"2025-12-14-16:18:29 1|vllm     | {LINE}", "1|vllm"),  # pm2 logs --timestamp
        (
            f"vllm.2.p0k3x2z9a8b7c6d5e4f3g2h1@gpu-node-1    | {LINE}",
            "vllm.2.p0k3x2z9a8b7c6d5e4f3g2h1@gpu-node-1",
        ),  # Swarm
        (f"\x1b[36mvllm-gpu0-1  | \x1b[0m{LINE}", "vllm-gpu0-1"),  # on a terminal, in the service's colour
        ("vllm-1  | ", "vllm-1"),  # a writer's empty line
        # stern: POD CONTAINER, with the namespace first when it follows several; coloured on a terminal;
        # with --timestamps; a traceback's indented line; the JSON of --output json and extjson.
        (f"vllm-7d9f8b6c5-x2k4p vllm {LINE}", "vllm-7d9f8b6c5-x2k4p/vllm"),
        (f"ml vllm.example-0 lmcache-server {LINE}", "ml/vllm.example-0/lmcache-server"),
        (f"\x1b[36mml\x1b[0m \x1b[36mvllm-0\x1b[0m \x1b[32mvllm\x1b[0m {LINE}", "ml/vllm-0/vllm"),
        (f"vllm-0 vllm 2026-12-04T10:00:00.123456789Z {LINE}", "vllm-0/vllm"),
        ('vllm-0 vllm   File "/usr/lib/python3.12/asyncio/runners.py", line 195, in run', "vllm-0/vllm"),
        ("vllm-0 vllm [2025-12-14 16:00:00,006] LMCache INFO: Reqid: chatcmpl-1, Total tokens 1", "vllm-0/vllm"),
        (
            '{"message":"x","nodeName":"gpu-1","namespace":"ml","podName":"vllm-0","containerName":"vllm"}',
            "ml/vllm-0/vllm",
        ),
        ('{"pod": "vllm-0", "container": "vllm", "message": "x"}', "vllm-0/vllm"),
        # A collector's records: Fluent Bit's Kubernetes metadata (a pod label named "pod" does not count).
        (
            '{"log":"INFO x","kubernetes":{"pod_name":"vllm-0","namespace_name":"ml","labels":{"pod":"x"},'
            '"container_name":"vllm"}}',
            "ml/vllm-0/vllm",
        ),
        # Cloud Logging's resource labels; Azure Monitor's row; a Loki query's labels; the OpenTelemetry
        # Collector's resource attributes (its ClickHouse table); Vector's metadata.
        ('{"textPayload":"x","resource":{"labels":{"pod_name":"vllm-1","namespace_name":"ml"}}}', "ml/vllm-1"),
        ('{"PodName":"vllm-2","PodNamespace":"ml","ContainerName":"vllm","LogMessage":"x"}', "ml/vllm-2/vllm"),
        ('{"labels":{"container":"vllm","namespace":"ml","pod":"vllm-3"},"line":"x"}', "ml/vllm-3/vllm"),
        ('{"Body":"x","ResourceAttributes":{"k8s.pod.name":"vllm-4","k8s.container.name":"vllm"}}', "vllm-4/vllm"),
        ('{"message":"x","kubernetes":{"pod_name":"vllm-5","pod_namespace":"ml"}}', "ml/vllm-5"),
    ],
)
def test_a_writer_s_prefix_names_it(line: str, writer: str) -> None:
    assert origin_of(line) == writer


@pytest.mark.parametrize(
    "line",
    [
        LINE,
        "[pod/Vllm_0/vllm] not a pod's name (upper case, underscore)",
        "[pod/vllm-0] no container",
        "INFO | a logging format's level before a bar",
        "warning   | the same, padded and in lower case",
        "| a | markdown | table |",
        "2026-12-04 10:00:00.123 | INFO     | loguru's format",
        "vllm-1 |no blank after the bar",
        "word " * 40 + "| a bar far into a sentence",
        '{"log":"INFO x\\n","stream":"stdout","time":"2025-12-14T16:00:00Z"}',  # Docker's record: no pod
        '{"log":"{\\"pod\\":\\"vllm-0\\"}"}',  # "pod" quoted inside the text
        '{"kubernetes":{"pod":{"name":"vllm-0"}}}',  # a pod object, not a name
        "vllm-0 vllm loading weights",  # stern's, but the message's first word could be a third name
        "12345 vllm INFO a logging format's process id and logger",
        "vllm.entrypoints INFO a logger's name",
        "Vllm-0 vllm INFO names are in lower case",
    ],
)
def test_other_lines_name_no_writer(line: str) -> None:
    assert origin_of(line) is None


def test_a_log_is_multiplexed_when_most_of_its_first_lines_name_a_writer() -> None:
    named = f"[pod/vllm-0/vllm] {LINE}"
    assert multiplexed(["Attaching to vllm-1", None, "", named, named])  # a tool's own line first; skipped ones
    assert not multiplexed([LINE, LINE, named])
    assert not multiplexed([None, ""])
    assert not multiplexed([LINE] * 150 + [named] * 100)  # the first hundred lines decide
