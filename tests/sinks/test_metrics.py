"""The Prometheus exposition: names, labels, Prometheus' own lint, and the metrics reference in the docs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalogue import AGENT_CATALOGUE, CATALOGUE, SPECS, TRACE_CATALOGUE
from agent.exposition import exposition as render_exposition
from agent.exposition import written
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


# What scrapers ask for: Prometheus (OpenMetrics first), an Accept with the escaping named (Prometheus 3
# with UTF-8 names allowed), and none (curl: the text format 0.0.4).
ACCEPTS = (
    OPENMETRICS,
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=0.0.4",
    "",
)


def as_prometheus_client_writes_it(registry, accept: str) -> bytes:
    """The exposition as the library's own encoder writes it (the text format without ``_created``)."""
    from prometheus_client.exposition import choose_encoder

    from agent.exposition import without_created

    encoder, content_type = choose_encoder(accept)
    metrics = list(registry.collect())
    if not content_type.startswith("application/openmetrics-text"):
        metrics = list(without_created(metrics))

    class Collected:
        def collect(self):
            return metrics

    return encoder(Collected())


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_exposition_is_written_byte_for_byte_as_prometheus_client_writes_it(accept: str) -> None:
    """kvwatch writes its exposition itself (the library's encoder takes 2 to 8 times as long); every series
    of every fixture line, with exemplars, comes out as the library would write it."""
    stats = feed(fresh("demo"), all_fixture_lines())
    stats.hit_ratio.mark(0.25, "0af7651916cd43dd8448eb211c80319c", 1764460800.125)
    registry = registry_for(lambda: [stats])
    metrics = list(registry.collect())
    openmetrics = accept.startswith("application/openmetrics-text")
    body, content_type = render_exposition(registry, accept)
    assert content_type.startswith("application/openmetrics-text") == openmetrics
    assert written(metrics, openmetrics) == body  # the faster way was taken
    assert body == as_prometheus_client_writes_it(registry, accept)
    assert b"kvwatch_lmcache_hit_tokens_total{" in body and (b"_created{" in body) == openmetrics
    assert (b'# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.25 1764460800.125' in body) == openmetrics


LABEL_VALUES = st.text(alphabet=st.sampled_from('ab_\\"\n{}=,é#😀 '), max_size=6)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 1, 999_999, 1_000_000, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 999_999.9999999999, 1e6, 1e16, 1.7966344091514518e09, 1e-7, 5e-324]),
)


@given(
    series=st.lists(st.tuples(LABEL_VALUES, LABEL_VALUES, NUMBERS), max_size=6),
    bucket_counts=st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=4),
    created=st.one_of(st.none(), NUMBERS.filter(lambda n: not isinstance(n, bool))),
    timestamp=st.one_of(st.none(), st.floats(min_value=0, max_value=2e9)),
    exemplar_value=NUMBERS.filter(lambda n: not isinstance(n, bool)),
    help_text=st.text(alphabet=st.sampled_from('ab \\"\n'), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_random_values_are_written_as_prometheus_client_writes_them(
    series, bucket_counts, created, timestamp, exemplar_value, help_text
) -> None:
    """Label values to escape, numbers at every edge of the shorter ways of writing them (integers past
    2**53, a million, infinities, NaN, negative zero), timestamps, exemplars: both formats equal."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import CollectorRegistry
    from prometheus_client.samples import Exemplar

    class Random:
        def collect(self):
            counter = CounterMetricFamily("kvwatch_random", help_text, labels=["server", "kind"])
            gauge = GaugeMetricFamily("kvwatch_random_level", help_text, labels=["server", "kind"])
            for server, kind, value in series:
                counter.add_metric([server, kind], value, created=created, timestamp=timestamp)
                gauge.add_metric([server, kind], value, timestamp=timestamp)
            histogram = HistogramMetricFamily("kvwatch_random_seconds", help_text, labels=["server"])
            cumulative = [sum(bucket_counts[: i + 1]) for i in range(len(bucket_counts))]
            exemplar = Exemplar({"trace_id": 'ab"c'}, exemplar_value, timestamp)
            buckets = [(repr(0.5 * (i + 1)), count) for i, count in enumerate(cumulative[:-1])]
            histogram.add_metric(["a\nb"], [*buckets, ("+Inf", cumulative[-1], exemplar)], exemplar_value)
            yield from (counter, gauge, histogram)

    registry = CollectorRegistry()
    registry.register(Random())
    for accept in ACCEPTS:
        openmetrics = accept.startswith("application/openmetrics-text")
        body = written(list(registry.collect()), openmetrics)
        assert body is not None
        assert body == as_prometheus_client_writes_it(registry, accept)


@given(
    scrapes=st.lists(
        st.dictionaries(st.tuples(LABEL_VALUES, LABEL_VALUES), st.integers(min_value=0, max_value=10**6), max_size=5),
        min_size=1,
        max_size=4,
    ),
    observed=st.lists(st.floats(min_value=0, max_value=2), max_size=5),
)
@settings(max_examples=200, deadline=None)
def test_label_sets_kept_from_one_scrape_to_the_next_are_written_as_prometheus_client_writes_them(
    scrapes, observed
) -> None:
    """The label sets of kvwatch's own series (and of their histograms' buckets) are made once and kept while
    scrapes show them: through series that come, stay and go from one scrape to the next, with values to
    escape, every scrape in every format is what the library writes of the same series made its own way, and
    a set the last scrape did not show is not kept."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import CollectorRegistry

    from agent.exposition import RenderedAtScrape, _label_sets, families
    from agent.families import counter, histogram, keyed
    from agent.sinks.stats import Histogram

    server = "a\\b"

    class Source:
        def __init__(self) -> None:
            self.by_pair: dict = {}
            self.latency = Histogram((0.5, 1.0))

    class Expected:
        def collect(self):
            kept = CounterMetricFamily("kvwatch_kept", "Kept label sets.", labels=["server", "model", "kind"])
            for pair, value in sorted(source.by_pair.items()):
                kept.add_metric([server, *pair], value)
            seconds = HistogramMetricFamily("kvwatch_kept_seconds", "Kept buckets.", labels=["server"])
            cumulative = source.latency.cumulative()
            buckets = [("0.5", cumulative[0]), ("1.0", cumulative[1]), ("+Inf", cumulative[2])]
            seconds.add_metric([server], buckets, source.latency.sum)
            yield from (kept, seconds) if kept.samples else (seconds,)  # (kvwatch writes no empty family)

    specs = (
        counter("kvwatch_kept", "Kept label sets.", keyed("by_pair"), labels="model kind"),
        histogram("kvwatch_kept_seconds", "Kept buckets.", lambda source, _labels: [((), source.latency)]),
    )
    source = Source()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RenderedAtScrape(lambda: families(specs, [([server], source)])))
    expected = CollectorRegistry(auto_describe=False)
    expected.register(Expected())
    for value in observed:
        source.latency.observe(value)
    for by_pair in scrapes:
        source.by_pair = by_pair
        for accept in ACCEPTS:
            assert render_exposition(registry, accept)[0] == as_prometheus_client_writes_it(expected, accept)
        shown = {values for _names, values in _label_sets._previous}
        assert shown == {(server, *pair) for pair in by_pair} | {(server,)}


class Odd:
    """Families kvwatch writes none of: the library writes them (and the exposition they are in) its own way."""

    def __init__(self, family) -> None:
        self.family = family

    def collect(self):
        yield self.family


def odd_families():
    from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily

    # A colon is allowed in a metric name, but the "underscores" escaping of a series turns it into an underscore.
    colon = GaugeMetricFamily("kvwatch:recorded_ratio", "A recording rule's name.", labels=["server"])
    colon.add_metric(["demo"], 0.5)
    dotted_label = GaugeMetricFamily("kvwatch_level", "A label name an escaping changes.", labels=["gpu.index"])
    dotted_label.add_metric(["0"], 1)
    info = InfoMetricFamily("kvwatch_odd", "An info family.", value={"version": "1"})
    summary = SummaryMetricFamily("kvwatch_odd_seconds", "A summary.", count_value=2, sum_value=0.5)
    return [colon, dotted_label, info, summary]


@pytest.mark.parametrize("family", odd_families(), ids=lambda family: family.name)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_a_family_written_otherwise_leaves_the_exposition_to_prometheus_client(family, accept: str) -> None:
    from prometheus_client.registry import CollectorRegistry

    stats = feed(fresh("demo"), all_fixture_lines()[:200])
    registry = CollectorRegistry()
    registry.register(registry_for(lambda: [stats]))
    registry.register(Odd(family))
    openmetrics = accept.startswith("application/openmetrics-text")
    assert written(list(registry.collect()), openmetrics) is None
    assert render_exposition(registry, accept)[0] == as_prometheus_client_writes_it(registry, accept)
