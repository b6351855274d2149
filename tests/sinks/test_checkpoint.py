"""A server's stats saved as JSON and restored: every series the same, damage never fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent.exposition import exposition
from agent.sinks.checkpoint import restore_stats, stats_record
from agent.sinks.prometheus import registry_for
from agent.sinks.stats import HIT_RATIO_BUCKETS, Histogram, ServerStats
from parsers import Clock
from tests.support.lines import PREEMPTION_LOG, SAMPLES, feed


def _fed() -> ServerStats:
    stats = ServerStats("s", Clock(UTC, datetime(2026, 11, 25, tzinfo=UTC)))
    for sample in sorted(SAMPLES.glob("*.log")):
        feed(stats, sample.read_text(encoding="utf-8").splitlines())
    return stats


def _openmetrics(stats: ServerStats) -> str:
    return exposition(registry_for(lambda: [stats]), "application/openmetrics-text; version=1.0.0")[0].decode()


def test_a_restored_record_shows_every_series_as_before() -> None:
    stats = _fed()
    assert stats.lookups and stats.engines and stats.http, "the samples should exercise the stats"
    record = json.loads(json.dumps(stats_record(stats)))  # through the file's text
    restored = ServerStats("s")
    assert restore_stats(restored, record) == []
    assert _openmetrics(restored) == _openmetrics(stats)


def test_counting_goes_on_in_the_restored_stats() -> None:
    lines = (SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log").read_text(encoding="utf-8").splitlines()
    half = len(lines) // 2
    whole = feed(ServerStats("s"), lines)
    first = feed(ServerStats("s"), lines[:half])
    resumed = ServerStats("s")
    restore_stats(resumed, json.loads(json.dumps(stats_record(first))))
    feed(resumed, lines[half:])
    resumed.created = whole.created
    assert _openmetrics(resumed) == _openmetrics(whole)


def test_a_damaged_record_leaves_fresh_numbers_and_says_which() -> None:
    stats = _fed()
    record = stats_record(stats)
    record["fields"]["lookups"] = {"object": "os.system", "state": {}}  # never rebuilt
    record["fields"]["http"] = "not a dict"
    del record["fields"]["finished"]
    other = Histogram((1.0, 2.0))
    record["fields"]["hit_ratio"] = stats_record(ServerStats("x", hit_ratio=other))["fields"]["hit_ratio"]
    restored = ServerStats("s")
    left = restore_stats(restored, record)
    assert sorted(left) == ["finished", "hit_ratio", "http", "lookups"]
    assert restored.lookups == 0 and restored.finished == 0 and restored.http == {}
    assert restored.hit_ratio.bounds == HIT_RATIO_BUCKETS
    assert restored.hit_tokens == stats.hit_tokens
    assert restore_stats(ServerStats("s"), {"format": 99}) != []
    assert restore_stats(ServerStats("s"), "junk") != []


def test_a_span_of_log_time_saved_as_datetimes_comes_back_as_seconds() -> None:
    stats = _fed()
    assert stats.first_time is not None and stats.last_time is not None
    record = json.loads(json.dumps(stats_record(stats)))
    for name in ("first_time", "last_time"):  # as kvwatch saved them when they were datetimes
        record["fields"][name] = {"datetime": datetime.fromtimestamp(getattr(stats, name), UTC).isoformat()}
    restored = ServerStats("s", Clock(UTC, datetime(2026, 11, 25, tzinfo=UTC)))
    assert restore_stats(restored, record) == []
    assert (restored.first_time, restored.last_time) == (stats.first_time, stats.last_time)
    restored.note_time("2030-01-01 00:00:00,000")  # and counting goes on with them
    assert restored.last_time == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_a_record_saved_before_an_engine_number_existed_brings_back_the_others() -> None:
    """An upgraded kvwatch restores what the older one saved: an engine's numbers added since start fresh."""
    stats = _fed()
    record = json.loads(json.dumps(stats_record(stats)))
    for _label, engine in record["fields"]["engines"]["engines"]:
        for added in ("iteration_seconds", "cumulative_preemptions", "dummy_iterations"):
            del engine["state"][added]
    restored = ServerStats("s")
    assert restore_stats(restored, record) == []
    assert _openmetrics(restored) == _openmetrics(stats)


def test_a_record_saved_before_a_key_every_stats_has_brings_it_back_at_zero() -> None:
    """An upgraded kvwatch exports what it always exports (every error kind) after an older one's record."""
    stats = _fed()
    stats.errors["oom"] = 2
    record = json.loads(json.dumps(stats_record(stats)))
    saved = record["fields"]["errors"]["dict"]
    record["fields"]["errors"]["dict"] = [pair for pair in saved if pair[0] != "config_error"]  # as saved before it
    restored = ServerStats("s")
    assert restore_stats(restored, record) == []
    assert restored.errors["config_error"] == 0 and restored.errors["oom"] == 2
    assert _openmetrics(restored) == _openmetrics(stats)


def test_a_start_of_the_lmcache_server_saved_between_its_two_lines_counts_once() -> None:
    from tests.sinks.test_stats import START_COUNT, START_LOG

    for cut in range(1, len(START_LOG)):
        resumed = ServerStats("s")
        assert (
            restore_stats(resumed, json.loads(json.dumps(stats_record(feed(ServerStats("s"), START_LOG[:cut]))))) == []
        )
        feed(resumed, START_LOG[cut:])
        assert resumed.lmcache_server_starts == START_COUNT, cut


def test_a_resume_after_the_restart_counts_the_load_logged_before_it() -> None:
    """A preempted request's resume-load line saved with the numbers; its resume read after kvwatch restarted."""
    before, after = PREEMPTION_LOG[:-1], PREEMPTION_LOG[-1:]
    whole = feed(ServerStats("s"), PREEMPTION_LOG)
    resumed = ServerStats("s")
    assert restore_stats(resumed, json.loads(json.dumps(stats_record(feed(ServerStats("s"), before))))) == []
    feed(resumed, after)
    resumed.created = whole.created
    assert whole.resume_loads.loads == 2
    assert _openmetrics(resumed) == _openmetrics(whole)
