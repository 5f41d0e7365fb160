"""Inference statistics per model version, from fixed-bucket latency histograms (memory does not grow with traffic).

Buckets are log-spaced (``BUCKETS_PER_DECADE`` per factor of ten, from 10 µs to 100 s); a percentile is the geometric
middle of the bucket that holds it, so its relative error is below half a bucket width (about 6 % with 20 per decade).

* :meth:`InferenceStats.record` — one inference (seconds, ok).
* :meth:`InferenceStats.snapshot` — cumulative figures of one version (a :class:`Snapshot`).
* ``snapshot_b - snapshot_a`` — the figures between two snapshots (how telemetry reports each interval).
* :meth:`InferenceStats.window` — the figures of the last ``seconds`` (time slots of ``slot_seconds``), for
  probation checks such as "error rate and p95 over the last minute".
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

MIN_SECONDS = 1e-5
DECADES = 7
BUCKETS_PER_DECADE = 20
# upper bounds of the buckets; the last bucket (index len(BOUNDS)) holds everything slower
BOUNDS: tuple[float, ...] = tuple(MIN_SECONDS * 10 ** (i / BUCKETS_PER_DECADE)
                                  for i in range(1, DECADES * BUCKETS_PER_DECADE + 1))
NBUCKETS = len(BOUNDS) + 1


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BOUNDS, seconds)


def bucket_value(index: int) -> float:
    """Representative latency (seconds) of a bucket: the geometric middle of its bounds."""
    if index <= 0:
        return MIN_SECONDS
    if index >= len(BOUNDS):
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[index - 1] * BOUNDS[index])


@dataclass
class Histogram:
    """Sparse counts per bucket plus count/errors/sum."""

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    errors: int = 0
    total_seconds: float = 0.0

    def add(self, seconds: float, ok: bool = True) -> None:
        self.count += 1
        if not ok:
            self.errors += 1
            return
        b = bucket_of(seconds)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.total_seconds += seconds

    def merge(self, other: "Histogram") -> None:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.count += other.count
        self.errors += other.errors
        self.total_seconds += other.total_seconds

    def copy(self) -> "Histogram":
        return Histogram(dict(self.counts), self.count, self.errors, self.total_seconds)

    def __sub__(self, other: "Histogram") -> "Histogram":
        counts = {b: n - other.counts.get(b, 0) for b, n in self.counts.items()}
        return Histogram({b: n for b, n in counts.items() if n > 0}, self.count - other.count,
                         self.errors - other.errors, self.total_seconds - other.total_seconds)

    def quantile(self, q: float) -> float | None:
        """Latency in seconds below which a fraction ``q`` of successful inferences fall (None when empty)."""
        n = sum(self.counts.values())
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return bucket_value(b)
        return bucket_value(max(self.counts))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)


@dataclass
class Snapshot:
    """Figures of one model version over some span; subtract two cumulative snapshots to get the span between."""

    version: str
    hist: Histogram
    at: float = field(default_factory=time.time)

    @property
    def count(self) -> int:
        return self.hist.count

    @property
    def errors(self) -> int:
        return self.hist.errors

    @property
    def error_rate(self) -> float:
        return self.hist.errors / self.hist.count if self.hist.count else 0.0

    def percentile(self, p: float) -> float | None:
        """Latency in milliseconds at percentile ``p`` (0-100)."""
        return _ms(self.hist.quantile(p / 100.0))

    @property
    def p50_ms(self) -> float | None:
        return self.percentile(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile(99)

    @property
    def mean_ms(self) -> float | None:
        ok = self.hist.count - self.hist.errors
        return _ms(self.hist.total_seconds / ok) if ok else None

    def __sub__(self, other: "Snapshot") -> "Snapshot":
        return Snapshot(self.version, self.hist - other.hist, self.at)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "errors": self.errors, "error_rate": round(self.error_rate, 6),
                "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "mean_ms": self.mean_ms}


class _VersionStats:
    def __init__(self, slot_seconds: float, max_slots: int):
        self.total = Histogram()
        self.slots: deque[tuple[int, Histogram]] = deque(maxlen=max_slots)
        self.slot_seconds = slot_seconds

    def add(self, seconds: float, ok: bool, now: float) -> None:
        slot = int(now // self.slot_seconds)
        if not self.slots or self.slots[-1][0] != slot:
            self.slots.append((slot, Histogram()))
        current = self.slots[-1][1]
        total = self.total
        total.count += 1
        current.count += 1
        if not ok:
            total.errors += 1
            current.errors += 1
            return
        b = bisect.bisect_left(BOUNDS, seconds)
        total.counts[b] = total.counts.get(b, 0) + 1
        current.counts[b] = current.counts.get(b, 0) + 1
        total.total_seconds += seconds
        current.total_seconds += seconds


class InferenceStats:
    """Thread-safe per-version inference statistics.

    ``record`` is on every request's path, so it only appends to a bounded queue (``deque.append`` is atomic); the
    queue is folded into the histograms under the lock by every reader, and by ``record`` itself every
    ``FLUSH_AT`` entries, so memory stays bounded. ``window`` covers up to ``max_window`` seconds with a resolution
    of ``slot_seconds``. The clock is ``time.perf_counter`` unless given (callers may pass the time they already
    read as ``now``).
    """

    FLUSH_AT = 1024

    def __init__(self, slot_seconds: float = 5.0, max_window: float = 3600.0,
                 clock: Callable[[], float] = time.perf_counter):
        self._lock = threading.Lock()
        self._versions: dict[str, _VersionStats] = {}
        self._pending: deque[tuple[str, float, bool, float]] = deque()
        self.slot_seconds = slot_seconds
        self._max_slots = max(1, int(math.ceil(max_window / slot_seconds)) + 1)
        self._clock = clock

    def record(self, version: str, seconds: float, ok: bool = True, now: float | None = None) -> None:
        pending = self._pending
        pending.append((version, seconds, ok, self._clock() if now is None else now))
        if len(pending) >= self.FLUSH_AT:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Move queued records into the histograms (caller holds the lock)."""
        pending, versions = self._pending, self._versions
        while pending:
            try:
                version, seconds, ok, now = pending.popleft()
            except IndexError:  # pragma: no cover - emptied by another folder
                break
            vs = versions.get(version)
            if vs is None:
                vs = versions[version] = _VersionStats(self.slot_seconds, self._max_slots)
            vs.add(seconds, ok, now)

    def versions(self) -> list[str]:
        with self._lock:
            self._fold()
            return list(self._versions)

    def snapshot(self, version: str) -> Snapshot:
        """Cumulative figures of ``version`` since the agent started (empty when it never ran)."""
        with self._lock:
            self._fold()
            vs = self._versions.get(version)
            return Snapshot(version, vs.total.copy() if vs else Histogram(), self._clock())

    def snapshots(self) -> dict[str, Snapshot]:
        with self._lock:
            self._fold()
            now = self._clock()
            return {v: Snapshot(v, vs.total.copy(), now) for v, vs in self._versions.items()}

    def window(self, version: str, seconds: float) -> Snapshot:
        """Figures of ``version`` over the last ``seconds`` (whole slots; at most ``max_window``)."""
        hist = Histogram()
        with self._lock:
            self._fold()
            now = self._clock()
            first = int((now - seconds) // self.slot_seconds)
            vs = self._versions.get(version)
            if vs is not None:
                for slot, h in vs.slots:
                    if slot >= first:
                        hist.merge(h)
        return Snapshot(version, hist, now)


def interval_report(current: dict[str, Snapshot], previous: dict[str, Snapshot]) -> dict[str, dict[str, Any]]:
    """Per-version figures between two sets of cumulative snapshots; versions without traffic are left out."""
    out = {}
    for version, snap in current.items():
        before = previous.get(version)
        delta = snap - before if before is not None else snap
        if delta.count:
            out[version] = delta.to_dict()
    return out
