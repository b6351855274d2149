"""The Prometheus exposition: names, labels, Prometheus' own lint, and the metrics reference in the docs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.catalogue import AGENT_CATALOGUE, CATALOGUE, SPECS, TRACE_CATALOGUE
from agent.exposition import _plain_names
from agent.exposition import exposition as render_exposition
from agent.sinks.prometheus import registry_for
from tests.support.harness import REPO
from tests.support.lines import all_fixture_lines, feed, fresh, line_cases

METRICS_DOC = Path(__file__).parents[2] / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def exposition() -> str:
    stats = feed(fresh("demo"), all_fixture_lines())
    stats.lines = 1000
    stats.skipped = {"invalid_utf8": 1}
    return render_exposition(registry_for(lambda: [stats]))[0].decode()


def families(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_every_catalogued_metric_is_exported_with_its_type(exposition: str) -> None:
    exported = families(exposition)
    for spec in CATALOGUE:
        assert exported.get(spec.name) == spec.type, spec.name


def test_names_labels_and_values(exposition: str) -> None:
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0]
        assert name.startswith("kvwatch_"), line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.split("}", 1)[0]))
        assert labels.get("server") == "demo", line
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        spec = SPECS.get(base) or SPECS.get(base + "_total") or SPECS.get(name)
        assert spec is not None, line
        assert set(labels) - {"le"} == set(spec.labels), line
        # Request ids, prompts and paths outside the known routes never become labels.
        assert not any(v.startswith(("chatcmpl-", "cmpl-")) for v in labels.values()), line


def test_stats_series_carry_the_engine() -> None:
    # The stats lines alone: in the whole corpus a later start line finds every engine idle.
    stats = feed(fresh("demo"), [c["line"] for c in line_cases("vllm_stats")])
    exposition = render_exposition(registry_for(lambda: [stats]))[0].decode()
    assert 'kvwatch_vllm_requests_waiting{engine="1",server="demo"} 7.0' in exposition
    assert 'kvwatch_vllm_kv_cache_usage_ratio{engine="all",server="demo"} 0.612' in exposition


def test_errors_are_always_present_for_alerting(exposition: str) -> None:
    empty = render_exposition(registry_for(lambda: [fresh("idle")]))[0].decode()
    for error in ("oom", "engine_dead", "cuda_error", "kv_cache_too_small", "config_error", "other"):
        assert f'kvwatch_vllm_errors_total{{error="{error}",server="idle"}} 0.0' in empty


def test_promtool_accepts_the_exposition(exposition: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test` installs it)")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_metrics_reference_matches_the_catalogue() -> None:
    text = METRICS_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(kvwatch_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", text, re.M)
    documented = {name: (kind, labels.strip()) for name, kind, labels in rows}
    expected = {
        s.name: (s.type, ", ".join(f"`{label}`" for label in s.labels))
        for s in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE
    }
    assert documented == expected


def test_each_metric_is_declared_once() -> None:
    names = [s.name for s in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_the_metrics_reference_is_written_from_the_code() -> None:
    result = subprocess.run([sys.executable, "-m", "agent.catalogue", "--check"], cwd=REPO, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


OPENMETRICS = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"  # as Prometheus asks


def test_openmetrics_is_written_byte_for_byte_as_prometheus_client_writes_it() -> None:
    """kvwatch has its OpenMetrics written with names left unescaped (much faster in prometheus_client 0.23+);
    for kvwatch's names that must change nothing."""
    stats = feed(fresh("demo"), all_fixture_lines())
    registry = registry_for(lambda: [stats])
    body, content_type = render_exposition(registry, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert body == openmetrics_as_written_by_prometheus_client(registry)
    assert b"kvwatch_lmcache_hit_tokens_total{" in body and b"_created{" in body
    assert _plain_names(list(registry.collect()))  # so it is written the faster way


def test_openmetrics_with_a_name_an_escaping_would_change_is_written_as_asked() -> None:
    """A colon is allowed in a metric name, but prometheus_client's "underscores" escaping of a series
    turns it into an underscore: such a name takes the library's own way, whatever it writes."""
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry

    class Odd:
        def collect(self):
            family = GaugeMetricFamily("kvwatch:recorded_ratio", "A recording rule's name.", labels=["server"])
            family.add_metric(["demo"], 0.5)
            yield family

    registry = CollectorRegistry()
    registry.register(Odd())
    body, _ = render_exposition(registry, OPENMETRICS)
    assert body == openmetrics_as_written_by_prometheus_client(registry)


def openmetrics_as_written_by_prometheus_client(registry) -> bytes:
    from prometheus_client.exposition import choose_encoder

    encoder, _ = choose_encoder(OPENMETRICS)
    return encoder(registry)
