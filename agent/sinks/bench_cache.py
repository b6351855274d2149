"""What the cache did while a benchmark ran: deltas of a running kvwatch's numbers over the run.

``kvwatch bench`` reads the kvwatch that follows the benchmarked server before
the run, every second during it (for peaks) and after it, and records, per
server, the LMCache lookups and tokens looked up and hit in that window, their
hit ratio, vLLM's prefix-cache and external hit rates at the end, preemptions,
and the KV-cache usage peak.  A reading that fails leaves the run without them.
The reading after the run waits for the run's last lines to be read: a busy
server's log is read in batches up to a quarter of a second apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.sinks.status import ServerStatus, Snapshot
from agent.sources.pacing import MAX_FLOWING_PAUSE

SAMPLE_SECONDS = 1.0
# Between the run's end and the last reading: twice the longest pause between two reads of a busy log,
# so the lines the server wrote while the benchmark ended are in the window.
SETTLE_SECONDS = 2 * MAX_FLOWING_PAUSE


def deltas(before: ServerStatus, after: ServerStatus, kv_peak: float | None) -> dict[str, float | None]:
    """The cache numbers of one server over the run (the window between two readings)."""
    looked_up = after.lmcache_lookup_tokens - before.lmcache_lookup_tokens
    hit = after.lmcache_hit_tokens - before.lmcache_hit_tokens
    return {
        "lmcache_lookups": after.lmcache_lookups - before.lmcache_lookups,
        "lmcache_lookup_tokens": looked_up,
        "lmcache_hit_tokens": hit,
        "lmcache_hit_ratio": round(hit / looked_up, 4) if looked_up > 0 else None,
        "prefix_cache_hit_rate": after.prefix_cache_hit_ratio,
        "external_prefix_cache_hit_rate": after.external_prefix_cache_hit_ratio,
        "preemptions": after.preemptions - before.preemptions,
        "kv_cache_usage_peak": kv_peak,
    }


class CacheWindow:
    """Readings of a running kvwatch around a run: ``start()`` before it, ``stop()`` after it."""

    def __init__(self, read: Callable[[], Snapshot], server: str | None = None) -> None:
        self.read = read
        self.server = server
        self.before: Snapshot | None = None
        self.peaks: dict[str, float] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reading(self) -> Snapshot | None:
        try:
            return self.read()
        except Exception as exc:  # the run goes on without cache numbers; the reason is kept
            self.error = str(exc)
            return None

    def _note_peaks(self, snapshot: Snapshot) -> None:
        for name, status in snapshot.servers.items():
            if status.kv_cache_usage is not None:
                self.peaks[name] = max(self.peaks.get(name, 0.0), status.kv_cache_usage)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            snapshot = self._reading()
            if snapshot is not None:
                self._note_peaks(snapshot)

    def start(self) -> None:
        self.before = self._reading()
        if self.before is not None:
            self._note_peaks(self.before)
            self._thread = threading.Thread(target=self._sample, name="kvwatch-bench-cache", daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, dict]:
        """Per server, the cache numbers of the window ({} when kvwatch could not be read)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.before is None:
            return {}
        time.sleep(SETTLE_SECONDS)
        after = self._reading()
        if after is None:
            return {}
        self._note_peaks(after)
        names = [self.server] if self.server is not None else list(after.servers)
        return {
            name: deltas(self.before.servers[name], after.servers[name], self.peaks.get(name))
            for name in names
            if name in self.before.servers and name in after.servers
        }
