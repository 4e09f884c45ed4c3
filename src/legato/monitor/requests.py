"""Request figures per service from the edge's access log: rate, 5xx share, latency percentiles.

Latencies arrive as whole milliseconds (HAProxy's `%Ta`), so a count per millisecond value is a
lossless record of every sample: percentiles over it are exact (they equal numpy's on the raw
samples), and memory grows with the number of distinct values, not with the number of requests.
Figures are kept per second for the last five minutes, plus running totals since start for
Prometheus.

Records are added by the access-log reader thread and read by the event loop, so every access
goes through one lock, held for a few microseconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SECONDS_KEPT = 300
# Upper bounds (ms) of the Prometheus latency histogram; +Inf is implied.
HISTOGRAM_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def percentiles(counts: Mapping[int, int], qs: Sequence[float]) -> list[float | None]:
    """The q-th percentiles (0 to 100) of the samples in `counts` (value -> how many times),
    as `numpy.percentile` computes them by default: linear interpolation between the two
    order statistics around rank q/100 * (n - 1). None for no samples."""
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {q}")
    total = sum(counts.values())
    if total == 0:
        return [None for _ in qs]
    values = sorted(counts)
    ends = []  # the index one past each value's last occurrence in the sorted samples
    running = 0
    for value in values:
        running += counts[value]
        ends.append(running)

    def nth(index: int) -> int:
        low, high = 0, len(ends) - 1
        while low < high:  # the first value whose occurrences reach past `index`
            middle = (low + high) // 2
            if ends[middle] > index:
                high = middle
            else:
                low = middle + 1
        return values[low]

    found: list[float | None] = []
    for q in qs:
        rank = q / 100 * (total - 1)
        below = math.floor(rank)
        fraction = rank - below
        low_value = nth(below)
        if fraction == 0:
            found.append(float(low_value))
            continue
        high_value = nth(below + 1)
        # numpy's lerp: exact at both ends, from the nearer end in between.
        diff = high_value - low_value
        found.append(low_value + diff * fraction if fraction < 0.5
                     else high_value - diff * (1 - fraction))
    return found


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


@dataclass
class _Second:
    second: int
    requests: int = 0
    errors: int = 0  # 5xx answers
    latencies: Counter[int] = field(default_factory=Counter)


@dataclass
class _Series:
    seconds: deque[_Second] = field(default_factory=deque)
    by_class: Counter[str] = field(default_factory=Counter)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(HISTOGRAM_BOUNDS_MS) + 1))
    latency_sum_ms: int = 0
    last_request_at: float | None = None


@dataclass(frozen=True)
class Window:
    """What a service answered over a span of time."""

    seconds: float
    requests: int
    errors: int
    latencies: Mapping[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """The 5xx share of the answers (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0

    def percentiles(self, *qs: float) -> list[float | None]:
        return percentiles(self.latencies, qs)

    @property
    def p95_ms(self) -> float | None:
        return self.percentiles(95)[0]

    @property
    def mean_ms(self) -> float | None:
        count = sum(self.latencies.values())
        return sum(v * n for v, n in self.latencies.items()) / count if count else None


@dataclass(frozen=True)
class Totals:
    """Running totals of one service since start (Prometheus counters and histogram)."""

    by_class: Mapping[str, int]
    histogram: tuple[int, ...]  # cumulative counts per HISTOGRAM_BOUNDS_MS, then +Inf
    latency_sum_ms: int

    @property
    def requests(self) -> int:
        return sum(self.by_class.values())


class RequestMetrics:
    """Per-service request figures; `record_many` from any thread, reads from any thread."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self.started_at = clock()

    def record_many(self, records: Iterable[tuple[str, int, int]], at: float | None = None) -> int:
        """Add (service, status, latency_ms) records that arrived at `at`; how many."""
        now = self._clock() if at is None else at
        second = int(now)
        count = 0
        with self._lock:
            for service, status, latency_ms in records:
                series = self._series.get(service)
                if series is None:
                    series = self._series[service] = _Series()
                buckets = series.seconds
                if not buckets or buckets[-1].second < second:
                    buckets.append(_Second(second))
                    while buckets[0].second <= second - SECONDS_KEPT:
                        buckets.popleft()
                bucket = buckets[-1] if buckets[-1].second == second else _find(buckets, second)
                bucket.requests += 1
                klass = status_class(status)
                if klass == "5xx":
                    bucket.errors += 1
                series.by_class[klass] += 1
                if latency_ms >= 0:
                    bucket.latencies[latency_ms] += 1
                    series.histogram[_bucket_index(latency_ms)] += 1
                    series.latency_sum_ms += latency_ms
                series.last_request_at = max(series.last_request_at or 0.0, now)
                count += 1
        return count

    def record(self, service: str, status: int, latency_ms: int, at: float | None = None) -> None:
        self.record_many([(service, status, latency_ms)], at)

    def window(self, service: str, seconds: float, now: float | None = None) -> Window:
        """The last `seconds` up to `now`, or the time since start when that is shorter (its
        first, partial second included: nothing was recorded before it)."""
        now = self._clock() if now is None else now
        start = now - seconds
        if start <= self.started_at:
            return self.between(service, math.floor(self.started_at), now,
                                span=max(1.0, now - self.started_at))
        return self.between(service, start, now, span=seconds)

    def between(self, service: str, start: float, end: float, *,
                span: float | None = None) -> Window:
        """The seconds s with start <= s < end (whole seconds of arrival)."""
        first, last = math.ceil(start), math.ceil(end)
        latencies: Counter[int] = Counter()
        requests = errors = 0
        with self._lock:
            series = self._series.get(service)
            for bucket in series.seconds if series else ():
                if first <= bucket.second < last:
                    requests += bucket.requests
                    errors += bucket.errors
                    latencies.update(bucket.latencies)
        return Window(span if span is not None else end - start, requests, errors, latencies)

    def last_request_at(self, service: str) -> float | None:
        with self._lock:
            series = self._series.get(service)
            return series.last_request_at if series else None

    def totals(self) -> dict[str, Totals]:
        with self._lock:
            found = {}
            for service, series in self._series.items():
                cumulative, running = [], 0
                for count in series.histogram:
                    running += count
                    cumulative.append(running)
                found[service] = Totals(dict(series.by_class), tuple(cumulative),
                                        series.latency_sum_ms)
            return found

    def forget(self, service: str) -> None:
        with self._lock:
            self._series.pop(service, None)


def _find(buckets: deque[_Second], second: int) -> _Second:
    """The bucket of a second earlier than the newest (a record that arrived late)."""
    for bucket in reversed(buckets):
        if bucket.second == second:
            return bucket
        if bucket.second < second:
            break
    # Not there: a second between existing ones. Rare (clock steps); keep order.
    index = next(i for i, b in enumerate(buckets) if b.second > second)
    bucket = _Second(second)
    buckets.insert(index, bucket)
    return bucket


def _bucket_index(latency_ms: int) -> int:
    for index, bound in enumerate(HISTOGRAM_BOUNDS_MS):
        if latency_ms <= bound:
            return index
    return len(HISTOGRAM_BOUNDS_MS)
