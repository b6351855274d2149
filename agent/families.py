"""How kvwatch declares a metric: one :class:`Spec` per name, beside the code that counts it.

A spec carries the metric's name, type, labels and help, and how to read its
samples from the object that counts it (the stats of a source, a supervised
server, the tailer ...).  :func:`agent.exposition.families` turns specs and those
objects into prometheus-client metric families at scrape time, so nothing is built
per line.  Declaring loads no client library: a command that renders no metrics
(a replay's summary) never loads it.

The specs of every component are gathered in :mod:`agent.catalogue`, which the
docs and the dashboards are checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# A sample: the values of the labels after those every series of a source starts
# with (``server``, say), and the value (a number, or a histogram).
Sample = tuple[tuple[str, ...], Any]
Samples = Callable[[Any, tuple[str, ...]], Iterable[Sample]]


class HistogramValue(Protocol):
    """What a histogram sample holds (:class:`agent.sinks.stats.Histogram`)."""

    bounds: tuple[float, ...]
    sum: float
    exemplars: list | None

    def cumulative(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: name, type (counter, gauge, histogram), labels, help, and where its samples come from."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    samples: Samples
    doc: str = ""  # the docs' fuller meaning, when the help says less (Markdown)
    native: str = ""  # the vLLM or LMCache metric (or log text) it relates to, for the docs (Markdown)


def _spec(type_: str, name: str, help_: str, samples: Samples, labels: str, per_server: bool, **docs: str) -> Spec:
    names = (("server",) if per_server else ()) + tuple(labels.split())
    return Spec(name, type_, names, help_, samples, **docs)


def counter(name: str, help_: str, samples: Samples, labels: str = "", per_server: bool = True, **docs: str) -> Spec:
    """A counter; ``doc`` and ``native`` (keywords) fill its row of the metrics reference."""
    return _spec("counter", name, help_, samples, labels, per_server, **docs)


def gauge(name: str, help_: str, samples: Samples, labels: str = "", per_server: bool = True, **docs: str) -> Spec:
    return _spec("gauge", name, help_, samples, labels, per_server, **docs)


def histogram(name: str, help_: str, samples: Samples, labels: str = "", per_server: bool = True, **docs: str) -> Spec:
    return _spec("histogram", name, help_, samples, labels, per_server, **docs)


# -- where samples come from -------------------------------------------------------------


def value_of(attribute: str) -> Samples:
    """A number of the source (a counter always; a gauge once it is not None)."""

    def samples(source: Any, labels: tuple[str, ...]) -> Iterable[Sample]:
        value = getattr(source, attribute)
        return [((), value)] if value is not None else []

    return samples


def keyed(attribute: str) -> Samples:
    """A dict of the source: its key (or key tuple) gives the labels' values."""

    def samples(source: Any, labels: tuple[str, ...]) -> Iterable[Sample]:
        return [(key if isinstance(key, tuple) else (key,), v) for key, v in sorted(getattr(source, attribute).items())]

    return samples


def flag(test: Callable[[Any], bool | None]) -> Samples:
    """1 or 0 as ``test`` says; no sample while it says None (nothing known yet)."""

    def samples(source: Any, labels: tuple[str, ...]) -> Iterable[Sample]:
        value = test(source)
        return [] if value is None else [((), 1 if value else 0)]

    return samples


def computed(value: Callable[[Any], Any]) -> Samples:
    """The value a function of the source returns, when it is not None."""

    def samples(source: Any, labels: tuple[str, ...]) -> Iterable[Sample]:
        result = value(source)
        return [] if result is None else [((), result)]

    return samples
