"""How metrics declared by :class:`agent.families.Spec` are rendered: prometheus-client families at scrape time,
and the exposition a scrape asks for.

Kept apart from the declarations so that only what serves or writes metrics (``kvwatch run``, ``top``, a
replay's ``--format prometheus``) loads the client library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.samples import Sample as RenderedSample

try:  # escaping schemes: prometheus_client 0.23 and later
    from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
except ImportError:  # before them, no escaping to speed up
    ALLOWUTF8 = UNDERSCORES = ""

from agent.families import HistogramValue, Spec


def _new_family(spec: Spec) -> Metric:
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def families(specs: Iterable[Spec], sources: Iterable[tuple[list[str], Any]]) -> Iterator[Metric]:
    """The families of ``specs`` that have samples in ``sources``: pairs of the label values every
    series of a source starts with (``[server]``, or none) and the object its specs read."""
    sources = list(sources)
    for spec in specs:
        family = None
        for prefix, source in sources:
            # Since when the source counts (unix time), if it says: its counters' created timestamp.
            created = getattr(source, "created", None) if spec.type != "gauge" else None
            for labels, value in spec.samples(source, spec.labels[len(prefix) :]):
                if family is None:
                    family = _new_family(spec)
                if spec.type == "histogram":
                    _add_histogram(family, prefix + list(labels), value, created)
                elif created is not None:
                    family.add_metric(prefix + list(labels), value, created=created)
                else:
                    family.add_metric(prefix + list(labels), value)
        if family is not None:
            yield family


def merged(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """The families of every group, those of one name joined: each component renders its own
    (one server's, one journal's), the exposition wants each name once."""
    by_name: dict[str, Metric] = {}
    for group in groups:
        for family in group:
            known = by_name.get(family.name)
            if known is None:
                by_name[family.name] = family
            else:
                known.samples.extend(family.samples)
    return list(by_name.values())


def _add_histogram(
    family: HistogramMetricFamily, labels: list[str], histogram: HistogramValue, created: float | None
) -> None:
    cumulative = histogram.cumulative()
    bounds = [repr(float(bound)) for bound in histogram.bounds] + ["+Inf"]
    exemplars = histogram.exemplars
    if exemplars is None:
        buckets = list(zip(bounds, cumulative, strict=True))
    else:
        # Shown in the OpenMetrics exposition only; Grafana links the trace id to the trace.
        buckets = [
            (le, count) if mark is None else (le, count, Exemplar({"trace_id": mark[0]}, mark[1], mark[2]))
            for le, count, mark in zip(bounds, cumulative, exemplars, strict=True)
        ]
    family.add_metric(labels, buckets, histogram.sum)
    if created is not None:
        names = dict(zip(family._labelnames, labels, strict=True))
        family.samples.append(RenderedSample(f"{family.name}_created", names, created))


def without_created(metrics: Iterable[Metric]) -> Iterator[Metric]:
    """The families without their ``_created`` samples: the Prometheus text format (0.0.4) would show
    each as a series of its own; only OpenMetrics gives them their meaning."""
    for metric in metrics:
        if metric.type in ("counter", "histogram"):
            kept = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            if len(kept) != len(metric.samples):
                metric.samples = kept
        yield metric


class _TextView:
    """A registry as the Prometheus text format shows it: no ``_created`` series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return without_created(self.registry.collect())


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The exposition a client's ``Accept`` header asks for: OpenMetrics (with created
    timestamps and exemplars) or the Prometheus text format.  Returns (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    if content_type.startswith("application/openmetrics-text"):
        return _openmetrics(encoder, registry), content_type
    return encoder(_TextView(registry)), content_type


# Names in the legacy character set of label names: the strictest, so that no escaping scheme changes them.
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _openmetrics(encoder: Callable[[Any], bytes], registry: CollectorRegistry) -> bytes:
    """OpenMetrics as ``encoder`` writes it, sooner.

    prometheus_client 0.23 and later write each series' name escaped for the default
    "underscores" scheme one character at a time (about 20 µs a series: 80 ms a scrape
    at 32 servers, where Prometheus asks for OpenMetrics).  A name made of letters,
    digits and underscores only comes out of that escaping unchanged, and the
    "allow-utf-8" scheme writes such names through ``str.replace``: the same bytes.  So
    when every name and label name is such (kvwatch's all are), the families are written
    that way; otherwise exactly as asked."""
    if not UNDERSCORES or not isinstance(encoder, partial) or encoder.keywords.get("escaping") != UNDERSCORES:
        return encoder(registry)
    metrics = list(registry.collect())
    collected = _Collected(metrics)
    if not _plain_names(metrics):
        return encoder(collected)
    return encoder(collected, escaping=ALLOWUTF8)


def _plain_names(metrics: list[Metric]) -> bool:
    """True when every family, series and label name is made of letters, digits and underscores."""
    names: set[str] = set()
    for metric in metrics:
        names.add(metric.name)
        for sample in metric.samples:
            names.add(sample.name)
            names.update(sample.labels)
            if sample.exemplar is not None:
                names.update(sample.exemplar.labels)
    return all(_PLAIN_NAME.fullmatch(name) for name in names)


class _Collected:
    """Families already collected, as an encoder takes them (a registry is read once per scrape)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


class RenderedAtScrape(Collector):
    """A prometheus-client collector over a function that renders families when scraped."""

    def __init__(self, render: Callable[[], Iterable[Metric]]) -> None:
        self._render = render

    def describe(self) -> list[Metric]:
        return []  # families depend on what was seen; nothing to check in advance

    def collect(self) -> Iterator[Metric]:
        return iter(list(self._render()))
