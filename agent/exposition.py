"""How metrics declared by :class:`agent.families.Spec` are rendered: prometheus-client families at scrape time,
and the exposition a scrape asks for.

Kept apart from the declarations so that only what serves or writes metrics (``kvwatch run``, ``top``, a
replay's ``--format prometheus``) loads the client library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache, partial
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.samples import Sample as RenderedSample
from prometheus_client.utils import floatToGoString

try:  # escaping schemes: prometheus_client 0.23 and later
    from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
except ImportError:  # before them, names are written as they are
    ALLOWUTF8 = UNDERSCORES = ""

from agent.families import HistogramValue, Spec


def _new_family(spec: Spec) -> Metric:
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


class LabelSet(dict):
    """A series' labels as its samples carry them (read-only once made), and the text :func:`written`
    shows them as, once it has: the same object from one scrape to the next (see :class:`_LabelSets`)."""

    __slots__ = ("buckets", "shown")

    def bucket(self, le: str) -> LabelSet:
        """The labels of a histogram's bucket ``le`` of this series, made once as this set is."""
        buckets = self.buckets
        if buckets is None:
            buckets = self.buckets = {}
        found = buckets.get(le)
        if found is None:
            found = buckets[le] = _new_label_set(self, le=le)
        return found


def _new_label_set(*pairs: Any, **more: str) -> LabelSet:
    made = LabelSet(*pairs, **more)
    made.shown = made.buckets = None
    return made


class _LabelSets:
    """The label sets of the last scrape, each made once: at 32 servers a scrape shows about 1,400 (and
    1,500 more of histograms' buckets) in 8,000 samples, and making each sample's dict and its text anew
    cost a fifth of the scrape.  A set the last scrape did not show is dropped (a server gone, a status no
    longer seen): what is kept is what the exposition shows, about 30 KiB a server.  Scrapes may render at
    once (two formats, the status page): each step is one dict operation, and a race makes a set anew,
    never a wrong one."""

    def __init__(self) -> None:
        self._current: dict[tuple, LabelSet] = {}
        self._previous: dict[tuple, LabelSet] = {}

    def get(self, names: tuple[str, ...], values: tuple[str, ...]) -> LabelSet:
        key = (names, values)
        found = self._current.get(key)
        if found is None:
            found = self._previous.get(key)
            if found is None:
                found = _new_label_set(zip(names, values, strict=True))
            self._current[key] = found
        return found

    def rotate(self) -> None:
        """After a scrape: what it did not ask for goes."""
        self._previous, self._current = self._current, {}


_label_sets = _LabelSets()


def families(specs: Iterable[Spec], sources: Iterable[tuple[list[str], Any]]) -> Iterator[Metric]:
    """The families of ``specs`` that have samples in ``sources``: pairs of the label values every
    series of a source starts with (``[server]``, or none) and the object its specs read.

    Samples are made as the families' ``add_metric`` makes them, except that the series of one
    set of labels (a counter's total and created, a histogram's sum, count and created) share one
    :class:`LabelSet`, kept from one scrape to the next, and :func:`written` writes each such set once."""
    sources = [(tuple(prefix), source) for prefix, source in sources]
    label_set = _label_sets.get
    for spec in specs:
        family = None
        kind, label_names = spec.type, spec.labels
        for prefix, source in sources:
            # Since when the source counts (unix time), if it says: its counters' created timestamp.
            created = getattr(source, "created", None) if kind != "gauge" else None
            for labels, value in spec.samples(source, label_names[len(prefix) :]):
                if family is None:
                    family = _new_family(spec)
                    name, samples = family.name, family.samples  # a counter's without "_total"
                    shown, created_name = (name + "_total" if kind == "counter" else name), name + "_created"
                names = label_set(label_names, prefix + tuple(labels))
                if kind == "histogram":
                    _add_histogram(samples, name, names, value, created)
                    continue
                samples.append(RenderedSample(shown, names, value))
                if created is not None:
                    samples.append(RenderedSample(created_name, names, created))
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
    samples: list[RenderedSample], name: str, names: LabelSet, histogram: HistogramValue, created: float | None
) -> None:
    bounds = [repr(float(bound)) for bound in histogram.bounds] + ["+Inf"]
    cumulative = histogram.cumulative()
    # Exemplars are shown in the OpenMetrics exposition only; Grafana links the trace id to the trace.
    exemplars = histogram.exemplars or [None] * len(bounds)
    bucket = name + "_bucket"
    for le, count, mark in zip(bounds, cumulative, exemplars, strict=True):
        exemplar = None if mark is None else Exemplar({"trace_id": mark[0]}, mark[1], mark[2])
        samples.append(RenderedSample(bucket, names.bucket(le), count, None, exemplar))
    samples.append(RenderedSample(name + "_count", names, cumulative[-1]))
    samples.append(RenderedSample(name + "_sum", names, histogram.sum))
    if created is not None:
        samples.append(RenderedSample(name + "_created", names, created))


def without_created(metrics: Iterable[Metric]) -> Iterator[Metric]:
    """The families without their ``_created`` samples: the Prometheus text format (0.0.4) would show
    each as a series of its own; only OpenMetrics gives them their meaning."""
    for metric in metrics:
        if metric.type in ("counter", "histogram"):
            kept = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            if len(kept) != len(metric.samples):
                metric.samples = kept
        yield metric


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The exposition a client's ``Accept`` header asks for: OpenMetrics (with created
    timestamps and exemplars) or the Prometheus text format.  Returns (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    metrics = list(registry.collect())
    _label_sets.rotate()
    openmetrics = _written_format(encoder)
    body = None if openmetrics is None else written(metrics, openmetrics)
    if body is not None:
        return body, content_type
    if content_type.startswith("application/openmetrics-text"):
        return encoder(_Collected(metrics)), content_type
    return encoder(_Collected(list(without_created(metrics)))), content_type


def _written_format(encoder: Callable[..., bytes]) -> bool | None:
    """Whether :func:`written` writes what ``encoder`` would (True: OpenMetrics 1.0, False: the
    text format 0.0.4), or None when only the encoder does (another version or escaping scheme)."""
    function, keywords = (encoder.func, encoder.keywords) if isinstance(encoder, partial) else (encoder, {})
    if keywords.get("escaping", UNDERSCORES) not in (UNDERSCORES, ALLOWUTF8):
        return None
    if function is generate_text:
        return False
    if function is generate_openmetrics and keywords.get("version", "1.0.0") == "1.0.0":
        return True
    return None


# Names in the legacy character set: the strictest, so that no escaping scheme asked for changes them.
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_WRITTEN_TYPES = frozenset(("counter", "gauge", "histogram"))
_MOVED_IN_TEXT = ("_created", "_gsum", "_gcount")  # samples the text format would show as families of their own
_EXACT_INT = 2**53  # below it an integer's float prints as the integer and ".0"


def written(metrics: list[Metric], openmetrics: bool) -> bytes | None:
    """The families as prometheus-client's encoder writes them, byte for byte, in under half its time.

    The encoder spends about 5 µs a sample (escaping each name one call at a time, a regular
    expression a label name): 25 ms of a scrape at 32 servers.  Names made of letters, digits and
    underscores come out of every escaping scheme it is asked for unchanged, so this writes them as
    they are, and label values and numbers as the encoder does.  None when a family is of a kind
    written only by the encoder (another type, a native histogram, a name outside that set, an
    exemplar where the encoder refuses one): the caller then asks the encoder.  A test holds the two
    equal on every fixture and on random values."""
    writer = _Writer(openmetrics)
    for metric in metrics:
        if not writer.family(metric):
            return None
    if openmetrics:
        writer.out.append("# EOF\n")
    return "".join(writer.out).encode("utf-8")


class _Writer:
    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.out: list[str] = []
        self.plain: set[str] = set()  # names seen to need no escaping
        # id of a labels dict that is no LabelSet (another collector's) -> its text, for this scrape's series sharing it
        self.labels_text: dict[int, str | None] = {}

    def family(self, metric: Metric) -> bool:
        name, kind, plain = metric.name, metric.type, self.plain
        if kind not in _WRITTEN_TYPES or not _is_plain(name, plain):
            return False
        self._header(metric)
        out, labels_text, openmetrics = self.out, self.labels_text, self.openmetrics
        moved = () if openmetrics else tuple(name + suffix for suffix in _MOVED_IN_TEXT)
        skip_created = not openmetrics and kind != "gauge"  # only OpenMetrics gives them their meaning
        for sample in metric.samples:
            sample_name, labels = sample.name, sample.labels
            if skip_created and sample_name.endswith("_created"):
                continue
            if (sample_name not in plain and not _is_plain(sample_name, plain)) or sample_name in moved:
                return False
            if len(sample) > 5 and sample[5] is not None:
                return False  # a native histogram
            if type(labels) is LabelSet:
                shown = labels.shown
                if shown is None:
                    shown = labels.shown = _labels_text(labels, plain)
            else:
                shown = labels_text.get(id(labels))
                if shown is None:
                    shown = labels_text[id(labels)] = _labels_text(labels, plain)
            if shown is None:
                return False
            if openmetrics:
                tail = self._openmetrics_tail(metric, sample)
                if tail is None:
                    return False
                out.append(f"{sample_name}{shown} {tail}\n")
            elif sample.timestamp is None:
                out.append(f"{sample_name}{shown} {_number(sample.value)}\n")
            else:
                out.append(f"{sample_name}{shown} {_number(sample.value)} {int(float(sample.timestamp) * 1000):d}\n")
        return True

    def _header(self, metric: Metric) -> None:
        name, kind = metric.name, metric.type
        help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if self.openmetrics:
            help_text = help_text.replace('"', r"\"")
            self.out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            if metric.unit:
                self.out.append(f"# UNIT {name} {metric.unit}\n")
        else:
            shown = name + "_total" if kind == "counter" else name
            self.out.append(f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n")

    def _openmetrics_tail(self, metric: Metric, sample: RenderedSample) -> str | None:
        """The value, timestamp and exemplar; None for an exemplar the encoder refuses or would
        write otherwise."""
        tail = "" if sample.value is None else _number(sample.value)
        if sample.timestamp is not None:
            tail += f" {sample.timestamp}"
        exemplar = sample.exemplar
        if exemplar:
            labels = _labels_text(exemplar.labels, self.plain)
            if labels is None or not _takes_exemplar(metric.type, metric.name, sample.name):
                return None
            tail += f" # {labels or '{}'} {floatToGoString(exemplar.value)}"
            if exemplar.timestamp is not None:
                tail += f" {exemplar.timestamp}"
        return tail


def _is_plain(name: str, plain: set[str]) -> bool:
    if name in plain:
        return True
    if _PLAIN_NAME.fullmatch(name) is None:
        return False
    plain.add(name)
    return True


def _labels_text(labels: dict[str, str], plain: set[str]) -> str | None:
    """The labels as a sample shows them (sorted by name, as the encoder sorts them), or None for a
    label name the encoder would escape."""
    if not labels:
        return ""
    pairs = []
    for key, value in sorted(labels.items()):
        if key not in plain and not _is_plain(key, plain):
            return None
        if "\\" in value or "\n" in value or '"' in value:
            value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        pairs.append(f'{key}="{value}"')
    return "{" + ",".join(pairs) + "}"


def _number(value: float) -> str:
    """As ``floatToGoString`` writes it; an integer or a float below a million (no exponent) without its calls."""
    kind = type(value)
    if kind is int and -_EXACT_INT < value < 1_000_000:
        return f"{value}.0"
    if kind is float and -math.inf < value < 1_000_000.0:
        return repr(value)
    return _large_number(value)


@lru_cache(maxsize=256)
def _large_number(value: float) -> str:
    # Mostly the created timestamps, one per source and repeated on each of its series.
    return floatToGoString(value)


def _takes_exemplar(kind: str, name: str, sample_name: str) -> bool:
    if kind == "counter":
        return sample_name.endswith("_total")
    return kind == "histogram" and (sample_name.endswith("_bucket") or sample_name == name)


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
